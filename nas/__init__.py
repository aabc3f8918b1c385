"""nas: multi-objective hardware-aware architecture search (MnasNet's space, real CIFAR training,
real LiteRT latency, Optuna Pareto studies).

The Python API (`nas.api`) does what the commands do:

    import nas
    nas.search(nas.SearchConfig(trials=20))                   # run or resume a search
    nas.front("mnasnet-cifar10")                              # its Pareto front, a DataFrame
    nas.retrain(nas.Selection(study="mnasnet-cifar10", front=True, top=1), nas.Recipe(epochs=30))
    nas.export(...), nas.compare(...), nas.report(...), nas.calibrate(...)
    nas.export(nas.Selection(archs=("mnasnet-small",)), device_config=nas.DeviceConfig(device="adb"))  # timed on a phone
"""

from nas.api import Recipe, SearchConfig, Selection, calibrate, compare, export, front, open_study, report, retrain, search
from nas.config import ConfigError, DeviceConfig

__all__ = [
    "ConfigError",
    "DeviceConfig",
    "Recipe",
    "SearchConfig",
    "Selection",
    "calibrate",
    "compare",
    "export",
    "front",
    "open_study",
    "report",
    "retrain",
    "search",
]
