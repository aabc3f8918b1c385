"""One way for a benchmark to keep its runs: appended to a JSON file's "runs", each with when, which code and
which machine produced it (files under bench/data/ are what survives a change of machine)."""

from __future__ import annotations

import datetime
import json


def append_run(path: str, record: dict) -> None:
    from latency.fingerprint import host_fingerprint
    from search_spaces.files import code_version, read_json, write_text_atomic

    document = read_json(path, {"runs": []})
    stamp = {
        "timed": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "code": code_version(),
        "machine": host_fingerprint(threads=1),
    }
    document["runs"].append(stamp | record)
    write_text_atomic(path, json.dumps(document, indent=1) + "\n")
