"""A latency cache keyed by (arch_id, input shape, fingerprint): samplers re-propose the same
architectures, and a latency is a property of the architecture and the device, not the weights.

One JSON file, shared by every study under a runs directory; each update re-reads the file under
an exclusive lock and replaces it atomically, so concurrent searches and a kill mid-write never
leave it half-written.
"""

from __future__ import annotations

import dataclasses
import json
import os

from latency.fingerprint import fingerprint_id
from search_spaces.files import locked, read_json_store, write_text_atomic


def cache_key(arch_id: str, input_shape: tuple[int, ...], *, num_classes: int, fingerprint: dict, protocol=None) -> str:
    """Everything a latency depends on: the architecture, its input shape and class count, the
    device's fingerprint (device, CPU, runtime and converter versions, threads, delegate,
    precision) and the measurement protocol (warm-up, runs, rounds, spread limit)."""
    settings = "-" if protocol is None else fingerprint_id(dataclasses.asdict(protocol))
    shape = "x".join(str(d) for d in input_shape)
    return f"{arch_id}|{shape}|c{num_classes}|{fingerprint['id']}|{settings}"


def key_suffix(key: str) -> str:
    """The part of a key after the architecture: equal for measurements made under equal settings."""
    return key.split("|", 1)[1]


class LatencyCache:
    def __init__(self, path: str):
        self.path = path

    def _read(self) -> dict:
        entries = read_json_store(self.path, {})  # a damaged cache is moved aside, never overwritten
        return entries if isinstance(entries, dict) else {}

    def get(self, key: str) -> dict | None:
        entry = self._read().get(key)
        return None if entry is None else {k: v for k, v in entry.items() if k != "arch"}

    def measured(self, like_key: str) -> list[tuple[str, float]]:
        """(arch string, median ms) of every entry measured under the same settings as `like_key`
        (any architecture): the latency model's training data."""
        suffix = key_suffix(like_key)
        return [
            (entry["arch"], float(entry["latency_median_ms"]))
            for key, entry in sorted(self._read().items())
            if key_suffix(key) == suffix and "arch" in entry and "latency_median_ms" in entry
        ]

    def put(self, key: str, latency: dict, *, arch: str | None = None) -> None:
        if arch is not None:
            latency = latency | {"arch": arch}
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        with locked(self.path + ".lock"):
            entries = self._read()
            entries[key] = latency
            write_text_atomic(self.path, json.dumps(entries, indent=1, sort_keys=True))
