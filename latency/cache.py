"""A latency cache keyed by (arch_id, input shape, fingerprint): samplers re-propose the same
architectures, and a latency is a property of the architecture and the device, not the weights.

One JSON file, shared by every study under a runs directory; each update re-reads the file under
an exclusive lock and replaces it atomically, so concurrent searches and a kill mid-write never
leave it half-written.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile


def cache_key(arch_id: str, input_shape: tuple[int, ...], fingerprint_id: str) -> str:
    return f"{arch_id}|{'x'.join(str(d) for d in input_shape)}|{fingerprint_id}"


class LatencyCache:
    def __init__(self, path: str):
        self.path = path

    def _read(self) -> dict:
        try:
            with open(self.path) as f:
                entries = json.load(f)
            return entries if isinstance(entries, dict) else {}
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def get(self, key: str) -> dict | None:
        entry = self._read().get(key)
        return None if entry is None else {k: v for k, v in entry.items() if k != "arch"}

    def measured(self, input_shape: tuple[int, ...], fingerprint_id: str) -> list[tuple[str, float]]:
        """(arch string, median ms) of every entry measured on this device at this input shape:
        the latency model's training data. Entries written before the arch was stored are skipped."""
        suffix = f"|{'x'.join(str(d) for d in input_shape)}|{fingerprint_id}"
        return [
            (entry["arch"], float(entry["latency_median_ms"]))
            for key, entry in sorted(self._read().items())
            if key.endswith(suffix) and "arch" in entry and "latency_median_ms" in entry
        ]

    def put(self, key: str, latency: dict, *, arch: str | None = None) -> None:
        if arch is not None:
            latency = latency | {"arch": arch}
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        with open(self.path + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self._read()
            entries[key] = latency
            fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(entries, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
