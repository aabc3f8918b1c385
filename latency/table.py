"""Latencies from a table instead of a device: ``--device table:FILE:COLUMN``.

FILE is a CSV (gzip allowed) with an ``arch`` column holding each architecture's canonical string
and one column of milliseconds per device, such as ``../shared/nb201-hw/latency_ms.csv.gz``
(NAS-Bench-201 on 13 real devices, from HELP and HW-NAS-Bench). A lookup costs microseconds, so a
strategy's sample efficiency can be measured over thousands of searches.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import math
import os
from dataclasses import dataclass, field

from latency.fingerprint import fingerprint_id
from latency.measure import LatencyResult


class TableError(ValueError):
    """The table cannot serve latencies; the message is one line naming the file or value."""


def parse_table_device(text: str) -> tuple[str, str]:
    """'table:FILE:COLUMN' -> (FILE, COLUMN); the column follows the last colon."""
    body = text[len("table:") :]
    path, sep, column = body.rpartition(":")
    if not sep or not path or not column:
        raise TableError(f"device={text!r} must be table:FILE:COLUMN (a CSV file and one of its latency columns)")
    return path, column


@dataclass(frozen=True)
class LatencyTable:
    """One column of a latency table, loaded once: arch string -> milliseconds."""

    path: str
    column: str
    latencies_ms: dict = field(default_factory=dict, compare=False, repr=False)
    digest: str = ""

    @classmethod
    def load(cls, path: str, column: str) -> LatencyTable:
        try:
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rt", newline="") as f:
                reader = csv.DictReader(f)
                header = reader.fieldnames or []
                if "arch" not in header:
                    raise TableError(f"latency table {path} has no 'arch' column (columns: {', '.join(header) or 'none'})")
                if column not in header or column == "arch":
                    choices = ", ".join(c for c in header if c not in ("arch", "index"))
                    raise TableError(f"latency table {path} has no column {column!r}; its latency columns: {choices}")
                latencies = {}
                for line, row in enumerate(reader, start=2):
                    try:
                        value = float(row[column])
                    except (TypeError, ValueError):
                        raise TableError(f"latency table {path} line {line}: {column}={row[column]!r} is not a number") from None
                    if not math.isfinite(value) or value <= 0:
                        raise TableError(f"latency table {path} line {line}: {column}={value!r} is not a positive latency")
                    latencies[row["arch"]] = value
        except FileNotFoundError:
            raise TableError(f"latency table {path!r} does not exist") from None
        except (OSError, EOFError, csv.Error, UnicodeDecodeError) as error:
            raise TableError(f"latency table {path!r} cannot be read: {error}") from None
        if not latencies:
            raise TableError(f"latency table {path} has no rows")
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:10]
        return cls(path=os.path.abspath(path), column=column, latencies_ms=latencies, digest=digest)

    def fingerprint(self) -> dict:
        info = {"device": f"table:{self.column}", "cpu": "latency table", "table": os.path.basename(self.path)}
        info |= {"table_sha256": self.digest, "runtime": "table lookup", "threads": 0, "precision": "as published"}
        info["id"] = fingerprint_id(info)
        return info

    def lookup(self, arch: str) -> LatencyResult:
        try:
            value = self.latencies_ms[arch]
        except KeyError:
            raise TableError(f"architecture {arch!r} is not in the latency table {os.path.basename(self.path)}") from None
        return LatencyResult.exact(value)
