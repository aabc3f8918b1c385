"""What a latency was measured on. Latencies are comparable only within one fingerprint."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def converter() -> str:
    """The converter that makes every .tflite file measured anywhere: TensorFlow's, on this machine."""
    return f"tensorflow {_version('tensorflow')}"


def host_fingerprint(*, threads: int, precision: str = "fp32", pinned: bool = False, delegate: str = "xnnpack") -> dict:
    """Fingerprint of the LiteRT interpreter on this machine; cheap, imports no TensorFlow."""
    info = {
        "device": "host",
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "runtime": f"ai-edge-litert {_version('ai-edge-litert')}",
        "converter": converter(),
        "threads": threads,
        "delegate": delegate,
        "precision": precision,
        "pinned": pinned,
    }
    info["id"] = fingerprint_id(info)
    return info


#: what makes two fingerprints measure different things, named when a study refuses a process
COMPARED_FIELDS = ("device", "cpu", "model", "runtime", "converter", "threads", "delegate", "precision", "pinned", "table")


def differences(stored: dict, current: dict) -> str:
    """The fields in which two fingerprints differ, as 'name: stored -> current'."""
    names = [n for n in COMPARED_FIELDS if stored.get(n) != current.get(n)]
    return "; ".join(f"{n}: {stored.get(n)!r} -> {current.get(n)!r}" for n in names) or "the fingerprints' ids"


def fingerprint_id(info: dict) -> str:
    text = "|".join(f"{key}={info[key]}" for key in sorted(info) if key != "id")
    return hashlib.sha256(text.encode()).hexdigest()[:10]
