"""`nas calibrate`: what the reference architectures cost on the chosen device, and which target
latency T means on this device what MnasNet's T meant on its phone.

MnasNet's T = 75 ms was MobileNetV2-1.0's latency on a Pixel 1 at 224x224 (arXiv:1807.11626
section 6.1), so "the T that puts MobileNetV2-1.0 on the target" is its measured latency here.
Results are kept in `runs/calibration.json` by device fingerprint and input size, so that
`nas search` can warn when `--target-ms` is far from anything this device runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from search_spaces.files import CALIBRATION, locked, read_json_store, write_text_atomic
from search_spaces.references import REFERENCES, reference

ANCHOR = "mobilenetv2-1.0"  # MnasNet's T was this model's latency on its phone
MNASNET_TARGET_MS = 75.0
FAR = 10.0  # a target more than this factor outside the references' range gets a warning


@dataclass
class CalibrationRow:
    name: str
    layout: str
    latency_median_ms: float | None = None
    latency_p90_ms: float | None = None
    latency_cv: float | None = None
    params_count: int = 0
    multiply_adds: int = 0
    error: str = ""


def layout_for(input_hw: int) -> str:
    """The papers' strides at ImageNet sizes; the CIFAR adaptation at small inputs."""
    return "imagenet" if input_hw >= 128 else "cifar"


def calibrate(
    *,
    device,
    input_hw: int,
    num_classes: int,
    names: list[str],
    workdir: str,
    misfits: dict[str, str] | None = None,
    log_path: str | None = None,
    on_row: Callable[[CalibrationRow], None] | None = None,
) -> list[CalibrationRow]:
    """A row per reference: measured, or its failure; `misfits` (name -> why it cannot take this
    input size) are not measured, their rows say why."""
    from nas.worker import MeasureJob, Status, TrialRunner

    layout = layout_for(input_hw)
    rows = []
    with TrialRunner(trials_per_worker=8, log_path=log_path) as runner:
        for name in names:
            if name in (misfits or {}):
                rows.append(CalibrationRow(name=name, layout=layout, error=misfits[name]))
                if on_row:
                    on_row(rows[-1])
                continue
            spec = reference(name, layout=layout)
            outcome = runner.run(
                MeasureJob(
                    arch=spec.to_string(),
                    input_hw=input_hw,
                    num_classes=num_classes,
                    device=device,
                    tflite_path=os.path.join(workdir, f"{name}-{input_hw}.tflite"),
                )
            )
            row = CalibrationRow(name=name, layout=layout)
            if outcome.status is Status.OK:
                row.latency_median_ms = outcome.latency.median_ms
                row.latency_p90_ms = outcome.latency.p90_ms
                row.latency_cv = outcome.latency.cv
                row.params_count = outcome.params_count
                row.multiply_adds = outcome.multiply_adds
            else:
                row.error = outcome.reason
            rows.append(row)
            if on_row:
                on_row(row)
    return rows


#: the name column of every calibration line: wide enough for any reference
NAME_WIDTH = max(len("reference"), *(len(name) for name in REFERENCES))


def format_table(rows: list[CalibrationRow]) -> str:
    width = NAME_WIDTH
    lines = [f"{'reference':<{width}} {'median ms':>10} {'p90 ms':>9} {'spread':>7} {'params':>11} {'multiply-adds':>14}"]
    for r in rows:
        if r.error:
            lines.append(f"{r.name:<{width}} failed: {r.error}")
        else:
            lines.append(
                f"{r.name:<{width}} {r.latency_median_ms:>10.3f} {r.latency_p90_ms:>9.3f} {100 * r.latency_cv:>6.1f}% "
                f"{r.params_count:>11,} {r.multiply_adds:>14,}"
            )
    return "\n".join(lines)


def target_advice(rows: list[CalibrationRow]) -> str:
    anchor = next((r for r in rows if r.name == ANCHOR and not r.error), None)
    if anchor is None:
        return f"{ANCHOR} was not measured: no target suggestion"
    return (
        f"--target-ms {anchor.latency_median_ms:.3g} puts {ANCHOR} on the target here, as MnasNet's "
        f"T = {MNASNET_TARGET_MS:g} ms did on a Pixel 1 at 224x224"
    )


# -- the calibration store ---------------------------------------------------------------------


def store_path(runs_dir: str) -> str:
    return os.path.join(runs_dir, CALIBRATION)


def _key(fingerprint_id: str, input_hw: int) -> str:
    return f"{fingerprint_id}|{input_hw}"


def save(runs_dir: str, fingerprint: dict, input_hw: int, rows: list[CalibrationRow]) -> str:
    """Add this calibration to the store, atomically and under a lock (several workers may share it)."""
    path = store_path(runs_dir)
    os.makedirs(runs_dir, exist_ok=True)
    with locked(path + ".lock"):
        entries = _read(path)
        entries[_key(fingerprint["id"], input_hw)] = {"fingerprint": fingerprint, "rows": [r.__dict__ for r in rows]}
        write_text_atomic(path, json.dumps(entries, indent=1, sort_keys=True))
    return path


def _read(path: str) -> dict:
    entries = read_json_store(path, {})
    return entries if isinstance(entries, dict) else {}


def load(runs_dir: str, fingerprint_id: str, input_hw: int) -> list[CalibrationRow] | None:
    entry = _read(store_path(runs_dir)).get(_key(fingerprint_id, input_hw))
    return None if entry is None else [CalibrationRow(**row) for row in entry["rows"]]


def target_warning(target_ms: float, latencies_ms: list[float], *, source: str) -> str | None:
    """A warning when the target is more than FAR times outside the given latencies' range."""
    if not latencies_ms:
        return None
    low, high = min(latencies_ms), max(latencies_ms)
    if low / FAR <= target_ms <= high * FAR:
        return None
    return (
        f"--target-ms {target_ms:g} is far outside the {low:.3g}-{high:.3g} ms that {source} take on this device "
        f"(75 ms is a Pixel-1 figure at 224x224): the reward will not trade accuracy for latency as intended. "
        f"Run `nas calibrate` to pick T, or measure on the target with --device adb / --device cmd:..."
    )


def known_names() -> list[str]:
    return list(REFERENCES)
