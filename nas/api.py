"""The Python API: what every `nas` command does, as functions taking frozen configs.

    import nas
    summary = nas.search(nas.SearchConfig(trials=20))
    table = nas.front("mnasnet-cifar10")                     # a pandas DataFrame
    results = nas.retrain(nas.Selection(study="mnasnet-cifar10", front=True, top=1), nas.Recipe(epochs=30))

The CLI parses flags into these configs, calls one function and prints; nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from nas.config import ConfigError, DeviceConfig, SearchConfig
from search_spaces import INPUT_SHAPE
from search_spaces.files import COMPARE_JSON, STUDY_DB, code_version
from trainers.full import Recipe

__all__ = [
    "Recipe",
    "SearchConfig",
    "Selection",
    "calibrate",
    "compare",
    "export",
    "front",
    "latency_fit",
    "open_study",
    "proxy_check",
    "report",
    "retrain",
    "search",
]


def search(config: SearchConfig, *, on_trial=None, on_start=None):
    """Run `config.trials` more trials of the (new or resumed) study; a `SearchSummary` (its front
    in `.info`). Interrupted by Ctrl-C or SIGTERM, the running trial is failed with a reason and
    retried by the next run."""
    from nas.searching import run_search

    return run_search(config, on_trial=on_trial, on_start=on_start)


def open_study(study: str | None = None, *, storage: str | None = None, runs_dir: str = "runs"):
    """(SearchConfig naming it, optuna.Study) of an existing study; creates nothing."""
    from nas.storage import load_existing_study

    config = SearchConfig(study_name=study, storage=storage, runs_dir=runs_dir)
    if config.storage is None and not os.path.exists(os.path.join(config.run_dir, STUDY_DB)):
        raise ConfigError(f"study {config.study_name!r} does not exist: no {os.path.join(config.run_dir, STUDY_DB)}")
    return config, load_existing_study(study_name=config.study_name, storage_url=config.storage_url)


def front(study: str | None = None, *, storage: str | None = None, runs_dir: str = "runs"):
    """The study's Pareto front as a pandas DataFrame, sorted by latency (reward under the study's
    current target and exponents)."""
    import pandas as pd

    from results.pareto import front_rows, pareto_info

    _, opened = open_study(study, storage=storage, runs_dir=runs_dir)
    return pd.DataFrame(front_rows(pareto_info(opened)))


def report(study: str | None = None, *, storage: str | None = None, runs_dir: str = "runs", out: str | None = None) -> dict:
    """Write report.html, front.csv and front.json (and plot compare.json's models if there is
    one); their paths."""
    from results.compare import load as load_comparison
    from results.pareto import pareto_info
    from results.report import write_report

    config, opened = open_study(study, storage=storage, runs_dir=runs_dir)
    out_dir = out or config.run_dir
    try:
        return write_report(pareto_info(opened), out_dir, comparison=load_comparison(comparison_path(config)))
    except OSError as error:
        raise ConfigError(f"cannot write the report to {out_dir!r}: {error.strerror}") from None


def comparison_path(config: SearchConfig) -> str:
    return os.path.join(config.run_dir, COMPARE_JSON)


def calibrate(
    device_config: DeviceConfig | None = None,
    *,
    input_size: int = INPUT_SHAPE[0],
    names: list[str] | None = None,
    runs_dir: str = "runs",
    on_row=None,
) -> tuple[list, dict, str]:
    """Measure the reference architectures on the device of `device_config` (default the host) at
    `input_size` (>= 128: the papers' own strides, 1000 classes); (rows, fingerprint, path of the
    calibration store in `runs_dir`)."""
    import tempfile

    from nas import calibration
    from nas.worker import WORKER_LOG
    from search_spaces import SpecError, reference, validate

    names = list(names) if names else calibration.known_names()
    for name in names:
        if name not in calibration.known_names():
            raise ConfigError(f"reference {name!r} is unknown; known: {', '.join(calibration.known_names())}")
    if not 8 <= input_size <= 1024:
        raise ConfigError(f"input-size={input_size} must be in 8..1024")
    layout = calibration.layout_for(input_size)
    misfits = {}  # references this size cannot take: said in the table, not measured (checked before any conversion)
    for name in names:
        try:
            validate(reference(name, layout=layout), input_size)
        except SpecError as error:
            hint = " (MobileViT's paper measures at 256x256)" if name.startswith("mobilevit") else ""
            misfits[name] = f"does not fit {input_size}x{input_size}: {error}{hint}"
    if len(misfits) == len(names):
        raise ConfigError(f"no reference fits input-size={input_size}: " + "; ".join(f"{n} {e}" for n, e in misfits.items()))
    device, fingerprint = (device_config or DeviceConfig()).open()
    with tempfile.TemporaryDirectory() as workdir:
        rows = calibration.calibrate(
            device=device,
            input_hw=input_size,
            num_classes=1000 if layout == "imagenet" else 10,
            names=names,
            misfits=misfits,
            workdir=workdir,
            log_path=os.path.join(runs_dir, WORKER_LOG),
            on_row=on_row,
        )
    return rows, fingerprint, calibration.save(runs_dir, fingerprint, input_size, rows)


@dataclass(frozen=True)
class Selection:
    """Which models: trials or the front of a study, architecture strings or reference names; and
    the data they train on. The dataset is the study's (a different one is refused) or, for strings
    alone, `dataset` (default cifar10)."""

    study: str | None = field(default=None, metadata={"help": "the study to take models from", "aliases": ("--study-name",)})
    storage: str | None = field(default=None, metadata={"help": "its storage", "default_text": "sqlite:///runs/<study>/study.db"})
    runs_dir: str = field(default="runs", metadata={"help": "directory holding one folder per study and the retrained models"})
    trials: tuple[int, ...] = field(
        default=(), metadata={"help": "a trial number of --study (repeat for several)", "flag": "--trial", "append": True}
    )
    front: bool = field(default=False, metadata={"help": "every member of --study's Pareto front (best reward first)"})
    top: int | None = field(default=None, metadata={"help": "with --front: only the K best by reward"})
    archs: tuple[str, ...] = field(
        default=(),
        metadata={"help": "an architecture string or a reference name (repeat for several)", "flag": "--arch", "append": True},
    )
    dataset: str | None = field(
        default=None, metadata={"help": "cifar10 or cifar100", "default_text": "the study's; cifar10 for --arch alone"}
    )
    data_dir: str | None = field(default=None, metadata={"help": "folder holding the official CIFAR folders"})
    out: str | None = field(
        default=None,
        metadata={"help": "working folder of one model", "default_text": "runs/retrained/<dataset>/<recipe_id>/<arch_id>/"},
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "trials", tuple(self.trials))
        object.__setattr__(self, "archs", tuple(self.archs))
        if self.top is not None and self.top < 1:
            raise ConfigError(f"top={self.top} must be at least 1")
        if self.dataset is not None and self.dataset not in ("cifar10", "cifar100"):
            raise ConfigError(f"dataset={self.dataset!r} is not one of cifar10, cifar100")

    @property
    def uses_study(self) -> bool:
        # a named study is always the anchor (its data set, its compare.json), even when only
        # references or strings are compared beside it
        return bool(self.trials or self.front or self.study)


def resolve(selection: Selection, recipe: Recipe):
    """(chosen models, dataset name, study or None): the data set follows the study's provenance."""
    from nas.choice import choose
    from results.record import StudySettings

    study, dataset = None, selection.dataset or "cifar10"
    if selection.uses_study:
        config, study = open_study(selection.study, storage=selection.storage, runs_dir=selection.runs_dir)
        settings = StudySettings.of(study)
        if settings.space == "nb201":
            raise ConfigError(
                f"study {config.study_name!r} searched NAS-Bench-201 cells from tables: there is nothing to retrain"
            )
        dataset = settings.dataset or "cifar10"
        if selection.dataset is not None and selection.dataset != dataset:
            raise ConfigError(
                f"study {config.study_name!r} searched on {dataset}, not dataset={selection.dataset!r}: "
                "its proxy accuracies say nothing about another data set (leave --dataset out)"
            )
    chosen = choose(
        study=study,
        trials=selection.trials,
        front=selection.front,
        top=selection.top,
        archs=selection.archs,
        runs_dir=selection.runs_dir,
        dataset=dataset,
        recipe=recipe,
        out=selection.out,
    )
    return chosen, dataset, study


def load_dataset(name: str, data_dir: str | None):
    from trainers.cifar import DataError, check_cifar, load_cifar

    try:
        check_cifar(name, data_dir=data_dir)
        return load_cifar(name, data_dir=data_dir)
    except DataError as error:
        raise ConfigError(str(error)) from None


def retrain(
    selection: Selection,
    recipe: Recipe | None = None,
    *,
    on_model: Callable | None = None,
    on_epoch: Callable | None = None,
) -> list:
    """Retrain every chosen model with `recipe` (resuming, or reusing a finished run); a list of
    (Chosen, RetrainResult)."""
    recipe = recipe or Recipe()
    from nas.choice import save_provenance
    from trainers.full import load_result
    from trainers.full import retrain as train

    chosen, dataset_name, _ = resolve(selection, recipe)
    dataset = load_dataset(dataset_name, selection.data_dir)
    done = []
    for k, item in enumerate(chosen, start=1):
        save_provenance(item)
        if on_model:
            on_model(k, len(chosen), item)
        try:
            result = load_result(item.workdir) or train(
                item.spec, dataset, recipe=recipe, workdir=item.workdir, on_epoch=on_epoch
            )
        except ValueError as error:
            raise ConfigError(str(error)) from None
        done.append((item, result))
    return done


def export(
    selection: Selection, recipe: Recipe | None = None, *, device_config: DeviceConfig | None = None, formats=None
) -> list:
    """Export every chosen, retrained model (.keras, TFLite fp32/fp16/int8, each checked on the test
    split, timed on the device of `device_config`, default the host) with its model card; the cards."""
    recipe = recipe or Recipe()
    from results.export import FORMATS, export_retrained
    from trainers.full import load_result

    chosen, dataset_name, _ = resolve(selection, recipe)
    for item in chosen:
        result = load_result(item.workdir)
        if result is None:
            raise ConfigError(f"{item.workdir} holds no finished retraining of {item.spec.arch_id}: run nas retrain first")
        if result.dataset != dataset_name:
            raise ConfigError(f"{item.workdir} was retrained on {result.dataset}, not {dataset_name}")
    device, _ = (device_config or DeviceConfig()).open()
    dataset = load_dataset(dataset_name, selection.data_dir)
    return [
        (item, export_retrained(item.workdir, dataset=dataset, device=device, formats=tuple(formats or FORMATS)))
        for item in chosen
    ]


def compare(
    selection: Selection,
    recipe: Recipe | None = None,
    *,
    references: tuple[str, ...] | None = None,
    device_config: DeviceConfig | None = None,
    on_model: Callable | None = None,
    on_epoch: Callable | None = None,
) -> tuple[list, str]:
    """Retrain the chosen models and the references under `recipe`, export and score them in fp32
    and int8, time them side by side with the earlier models of this recipe still on disk, and
    merge the records into compare.json; (every record of the file, its path)."""
    recipe = recipe or Recipe()
    from dataclasses import replace

    from nas import comparison as comparing
    from results.compare import load_document, merge, records_of, save

    if selection.study and not (selection.trials or selection.front or references):
        # only references named explicitly join a study's comparison alone; the defaults never do
        raise ConfigError("say what to take from the study: --trial N or --front [--top K], or --references NAMES")
    references = comparing.DEFAULT_REFERENCES if references is None else tuple(references)
    with_refs = replace(selection, archs=(*selection.archs, *references))
    chosen, dataset_name, study = resolve(with_refs, recipe)
    config = SearchConfig(study_name=study.study_name if study else "compare", runs_dir=selection.runs_dir)
    path = comparison_path(config)
    try:
        document = load_document(path)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    earlier = records_of(document)
    chosen += comparing.earlier_models(
        earlier, recipe_id=recipe.recipe_id, dataset=dataset_name, exclude={item.spec.arch_id for item in chosen}
    )
    device, fingerprint = (device_config or DeviceConfig()).open()
    dataset = load_dataset(dataset_name, selection.data_dir)
    try:
        records = comparing.compare(chosen, dataset=dataset, recipe=recipe, device=device, on_model=on_model, on_epoch=on_epoch)
    except ValueError as error:  # a folder holding another run, or one another process trains
        raise ConfigError(str(error)) from None
    merged = merge(earlier, records)
    save(
        path,
        merged,
        recipes=document["recipes"] | {recipe.recipe_id: recipe.record() | {"description": recipe.describe()}},
        fingerprints=document["fingerprints"] | {fingerprint["id"]: fingerprint},
        runs=[
            *document["runs"],
            {"timed": records[0].timed, "code": code_version(), "recipe_id": recipe.recipe_id, "models": len(records)},
        ],
    )
    return merged, path


def proxy_check(plan, *, on_result=None, on_epoch=None):
    """Run (or resume) the check `nas.proxy_check.plan` made; (result path, records)."""
    from nas import proxy_check as checking
    from trainers.cifar import DataError, check_cifar

    try:
        check_cifar(plan.config.dataset, data_dir=plan.config.data_dir)
    except DataError as error:
        raise ConfigError(str(error)) from None
    return checking.run_check(
        plan.config,
        count=plan.count,
        proxy=plan.proxy,
        long=plan.long,
        references=plan.references,
        study=plan.study,
        trials=plan.trials,
        path=plan.path,
        proxies_only=plan.proxies_only,
        on_result=on_result,
        on_epoch=on_epoch,
    )


def latency_fit(config: SearchConfig, *, samples: int = 0, on_start=None, on_sample=None):
    """Measure `samples` random architectures of the space, then fit the latency model to every
    measurement of this device in the cache and save it; (report, path of the saved model)."""
    from nas import latency_fit as fitting

    if samples < 0:
        raise ConfigError(f"samples={samples} must be >= 0")
    device, fingerprint = config.device_config.open()
    if on_start:
        on_start(fingerprint)
    if samples:
        fitting.measure_samples(config, device, fingerprint, samples, seed=config.seed, on_sample=on_sample)
    report = fitting.fit(config, fingerprint)
    return report, fitting.save_model(config, report.model)
