"""Time every model of a comparison side by side on this machine, including those whose files are gone.

Latency does not depend on the weights: a model's TFLite graph is fixed by its architecture and the
converter. So a compared model whose .tflite files are not on this machine (trained models are not kept in the
repository: only their records, bench/landing.py; runs/ goes with its machine) is timed through a
*twin*: the same architecture built as the delivered model is (Keras' BatchNorm, untrained weights),
converted the same way (fp32; int8 with real training images as its calibration set). One model that
still has its real files is timed as a twin too, as the control: their ratio is printed. Outside the
machine's slow spells they agree in both precisions (trial 19: 1.003x fp32, 0.994x int8, 2026-12-06 10:48;
the 1.29x once reported for its int8 twin was the median of 7 calls, 4 of them in slow spells).

    python bench/retime.py [--compare bench/data/proof/compare_30.json ...] [--rounds 5] [--data-dir data]
        [--front-of trials.csv [--every-trial] [--search-ms-below MS] [--trials N ...]] [--references NAME ...]
        [--pause PID ...]

All files are timed in interleaved rounds (a drift of the machine's speed touches every model alike) with
the search's protocol on the host (1 thread, XNNPACK); a file's latency is that of its rounds outside the
machine's slow spells (`latency.measure.fast_state_ms`; every round's figure is kept). Run it on a quiet
machine: stop other work first. The timing goes to bench/data/proof/timing.json, one entry per run (never
replaced), with the machine's fingerprint and the code; the table prints each model's accuracy from the
comparison beside its latency and which found model dominates which reference (more accurate at no more
latency).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from search_spaces.files import code_version, read_json, write_text_atomic  # noqa: E402

PROOF = os.path.join(ROOT, "bench", "data", "proof")
PRECISIONS = ("fp32", "int8")


def twin_files(arch: str, folder: str, *, dataset) -> dict[str, str]:
    """fp32 and int8 TFLite files of `arch` with untrained weights, converted as `nas export` converts;
    kept in `folder`, so a later timing of the same architecture reuses them."""
    import numpy as np

    from latency.convert import untrained_tflite
    from search_spaces import ArchSpec
    from search_spaces.keras_blocks import build

    files = {precision: os.path.join(folder, f"model_{precision}.tflite") for precision in PRECISIONS}
    done = os.path.join(folder, "converted")  # written last: a conversion cut short is made again
    if os.path.exists(done):
        return files
    spec, shape = ArchSpec.from_string(arch), dataset.x_train.shape[1:]
    representative = dataset.x_train[np.random.default_rng(0).choice(len(dataset.x_train), 256, replace=False)]
    os.makedirs(folder, exist_ok=True)
    for precision, path in files.items():
        untrained_tflite(
            lambda: build(spec, input_shape=shape, num_classes=len(dataset.class_names)),
            path,
            input_shape=shape,
            precision=precision,
            representative=representative,
        )
    with open(done, "w") as f:
        f.write(arch + "\n")
    return files


@contextlib.contextmanager
def paused(pids: list[int] | None):
    """SIGSTOP the processes `pids` and their children for the block, SIGCONT them after, whatever happens
    (the long runs of other benchmarks, for a quiet measurement)."""
    import psutil

    processes = [p for pid in pids or () for p in (psutil.Process(pid), *psutil.Process(pid).children(recursive=True))]
    # a `kill` of this process must still wake them: SIGTERM unwinds through the finally below
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for process in processes:
        process.suspend()
    try:
        yield
    finally:
        for process in processes:
            process.resume()
        signal.signal(signal.SIGTERM, previous)


def proxy_front(trials_csv: str, *, every: bool = False) -> list[dict]:
    """The finished trials of a search that no other dominates on (search latency, proxy accuracy);
    `every`: all its finished trials, each architecture once."""
    import csv

    from results.dominance import non_dominated

    with open(trials_csv, newline="") as f:
        finished = [r for r in csv.DictReader(f) if r["state"] == "COMPLETE" and not r["reused_from"]]
    earliest = {r["arch"]: r for r in reversed(finished)}  # each architecture once: its earliest trial
    rows = [
        {"number": int(r["number"]), "arch": r["arch"], "accuracy": float(r["accuracy"]), "latency_ms": float(r["latency_ms"])}
        for r in earliest.values()
    ]
    rows.sort(key=lambda r: r["latency_ms"])
    return rows if every else non_dominated(rows, lambda r: (r["latency_ms"], r["accuracy"]))


def records_of_files(paths: list[str]) -> list:
    """Every record of `paths`, in order. From the second file on, a found model's name gets its file's folder
    added (trial numbers are per study: "trial 20 (shipped)"), and so does a reference met again (the
    shipped comparison's own MobileNetV2-0.5 beside the first one's), so every one is timed and shown. Two
    records of one architecture time the same files twice in the same rounds: deliberately, their difference
    is the timing's own noise (docs/outcome.md)."""
    import dataclasses

    from results.compare import load

    records, names = [], set()
    for index, path in enumerate(paths):
        for record in load(path):
            if record.model in names or (index and record.kind == "found"):
                record = dataclasses.replace(record, model=f"{record.model} ({os.path.basename(os.path.dirname(path))})")
            names.add(record.model)
            records.append(record)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--compare",
        nargs="+",
        default=[os.path.join(PROOF, "compare_30.json")],
        help="comparison files, timed together (a model in several is named by its file's folder from the second on)",
    )
    parser.add_argument("--runs-dir", default=os.path.join(ROOT, "runs"), help="where this machine's trained models are")
    parser.add_argument("--out", default=os.path.join(PROOF, "timing.json"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    parser.add_argument(
        "--pause", type=int, nargs="+", metavar="PID", help="processes (trainings) to stop, with their children, while timing"
    )
    parser.add_argument(
        "--front-of", help="a trials.csv: its front by proxy accuracy is timed too (twins), to see which is fast here"
    )
    parser.add_argument("--every-trial", action="store_true", help="with --front-of: every finished trial, not only the front")
    parser.add_argument("--search-ms-below", type=float, help="with --front-of: only trials the search timed below this")
    parser.add_argument("--trials", type=int, nargs="+", help="with --front-of: only these trials")
    parser.add_argument(
        "--references", nargs="+", metavar="NAME", default=[], help="references not trained yet, timed as twins: where each falls"
    )
    args = parser.parse_args()

    from latency.measure import fast_state_ms
    from nas.comparison import time_side_by_side
    from nas.config import DeviceConfig
    from results.dominance import dominates
    from search_spaces import ArchSpec
    from search_spaces import reference as reference_spec
    from trainers.cifar import load_cifar

    records = records_of_files(args.compare)
    dataset = load_cifar(records[0].dataset, data_dir=args.data_dir)
    twins_dir = os.path.join(args.runs_dir, "twins")  # by architecture: every later timing reuses them
    paths: dict[tuple[str, str, str], str] = {}  # (model, source, precision) -> file
    control = None
    for record in records:
        folder = os.path.join(args.runs_dir, "retrained", record.dataset, record.recipe_id, record.arch_id)
        real = {p: os.path.join(folder, f"model_{p}.tflite") for p in PRECISIONS}
        if all(os.path.exists(path) for path in real.values()):
            paths |= {(record.model, "real", p): path for p, path in real.items()}
            if control is not None:
                continue
            control = record.model  # the first model with real files is also timed as a twin
        twins = twin_files(record.arch, os.path.join(twins_dir, record.arch_id), dataset=dataset)
        paths |= {(record.model, "twin", p): path for p, path in twins.items()}
        print(f"twin of {record.model} ({record.arch_id}) converted", flush=True)

    front = proxy_front(args.front_of, every=args.every_trial) if args.front_of else []
    front = [row for row in front if args.search_ms_below is None or row["latency_ms"] < args.search_ms_below]
    front = [row for row in front if args.trials is None or row["number"] in args.trials]
    for row in front:
        twins = twin_files(row["arch"], os.path.join(twins_dir, ArchSpec.from_string(row["arch"]).arch_id), dataset=dataset)
        paths |= {(f"front trial {row['number']}", "twin", p): path for p, path in twins.items()}
    untrained = {name: reference_spec(name) for name in args.references}
    for name, spec in untrained.items():
        twins = twin_files(spec.to_string(), os.path.join(twins_dir, spec.arch_id), dataset=dataset)
        paths |= {(f"untrained {name}", "twin", p): path for p, path in twins.items()}

    device, fingerprint = DeviceConfig().open()
    print(f"timing {len(paths)} files side by side, {args.rounds} interleaved rounds", flush=True)
    with paused(args.pause):
        measured = time_side_by_side(paths, device, rounds=args.rounds)
    samples = {k: tuple(r.median_ms for r in results) for k, results in measured.items()}
    latency = {key: fast_state_ms(values) for key, values in samples.items()}  # outside the slow spells

    def key(model: str, precision: str) -> tuple[str, str, str]:
        return (model, "real", precision) if (model, "real", precision) in latency else (model, "twin", precision)

    def timed(model: str, precision: str) -> float:
        return latency[key(model, precision)]

    rows = []
    for record in records:
        row = {"model": record.model, "kind": record.kind, "arch_id": record.arch_id}
        for p in PRECISIONS:
            row[f"latency_{p}_ms"] = timed(record.model, p)
            row[f"source_{p}"] = "real" if (record.model, "real", p) in latency else "twin"
            row[f"test_accuracy_{p}"] = getattr(record, f"test_accuracy_{p}")
        rows.append(row)
    check = {p: latency[(control, "twin", p)] / latency[(control, "real", p)] for p in PRECISIONS} if control else {}

    verdicts = []
    for p in PRECISIONS:
        for found in (r for r in rows if r["kind"] == "found"):
            for reference in (r for r in rows if r["kind"] == "reference"):
                point = lambda row: (row[f"latency_{p}_ms"], row[f"test_accuracy_{p}"])  # noqa: E731, B023
                if dominates(point(found), point(reference)):
                    # how steady the latency order is: the found model's time over the reference's, round by round
                    ratios = [
                        a / b for a, b in zip(samples[key(found["model"], p)], samples[key(reference["model"], p)], strict=True)
                    ]
                    verdicts.append(
                        f"{p}: {found['model']} dominates {reference['model']} "
                        f"(+{100 * (found[f'test_accuracy_{p}'] - reference[f'test_accuracy_{p}']):.2f} points; latency "
                        f"{found[f'latency_{p}_ms'] / reference[f'latency_{p}_ms']:.3f}x, round by round "
                        f"{min(ratios):.3f}-{max(ratios):.3f}x, faster in {sum(r < 1 for r in ratios)} of {len(ratios)})"
                    )

    entry = {
        "timed": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "code": code_version(),
        "fingerprint": fingerprint,
        "rounds": args.rounds,
        "samples_ms": [{"model": k[0], "files": k[1], "precision": k[2], "medians": list(v)} for k, v in samples.items()],
        "control": {"model": control, "twin_over_real": check},
        "rows": rows,
        "dominance": verdicts,
        "front": [
            {**row, **{f"latency_{p}_ms": latency[(f"front trial {row['number']}", "twin", p)] for p in PRECISIONS}}
            for row in front
        ],
        "front_is": "every finished trial" if args.every_trial else "the front by proxy accuracy",
        "untrained_references": [
            {"model": name, "arch_id": spec.arch_id}
            | {f"latency_{p}_ms": latency[(f"untrained {name}", "twin", p)] for p in PRECISIONS}
            for name, spec in untrained.items()
        ],
    }
    document = read_json(args.out, {"runs": []})
    document["runs"].append(entry)
    write_text_atomic(args.out, json.dumps(document, indent=1) + "\n")

    print(f"\n{'model':<20} {'kind':<9} {'fp32 ms':>8} {'int8 ms':>8} {'fp32 acc':>8} {'int8 acc':>8}  files")
    for row in sorted(rows, key=lambda r: r["latency_fp32_ms"]):
        print(
            f"{row['model']:<20} {row['kind']:<9} {row['latency_fp32_ms']:>8.3f} {row['latency_int8_ms']:>8.3f} "
            f"{row['test_accuracy_fp32']:>8.4f} {row['test_accuracy_int8']:>8.4f}  {row['source_fp32']}"
        )
    if control:
        print(f"\ncontrol: {control}'s twin / its real files: fp32 {check['fp32']:.3f}x, int8 {check['int8']:.3f}x")
    print("\n" + ("\n".join(verdicts) or "no found model dominates a reference"))
    if front:
        print(f"\nthe study's trials ({entry['front_is']}), timed here ({args.front_of}); * = no slower than every reference")
        print(f"{'trial':>6} {'proxy acc':>9} {'search ms':>9} {'fp32 ms':>8} {'int8 ms':>8}")
        fastest = {p: min(r[f"latency_{p}_ms"] for r in rows if r["kind"] == "reference") for p in PRECISIONS}
        for row in entry["front"]:
            marks = "".join(f" *{p}" for p in PRECISIONS if row[f"latency_{p}_ms"] <= fastest[p])
            print(
                f"{row['number']:>6} {row['accuracy']:>9.3f} {row['latency_ms']:>9.3f} "
                f"{row['latency_fp32_ms']:>8.3f} {row['latency_int8_ms']:>8.3f}{marks}"
            )
    if untrained:
        print("\nreferences not trained yet (twins), timed in the same rounds")
        for row in entry["untrained_references"]:
            print(f"{row['model']:<20} {'':<9} {row['latency_fp32_ms']:>8.3f} {row['latency_int8_ms']:>8.3f}")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
