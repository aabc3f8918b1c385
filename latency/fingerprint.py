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


def host_fingerprint(*, threads: int, delegate: str = "xnnpack") -> dict:
    """Fingerprint of the LiteRT interpreter on this machine; cheap, imports no TensorFlow."""
    info = {
        "device": "host",
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "runtime": f"ai-edge-litert {_version('ai-edge-litert')}",
        "threads": threads,
        "delegate": delegate,
    }
    info["id"] = fingerprint_id(info)
    return info


def fingerprint_id(info: dict) -> str:
    text = "|".join(f"{key}={info[key]}" for key in sorted(info) if key != "id")
    return hashlib.sha256(text.encode()).hexdigest()[:10]
