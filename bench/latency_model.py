"""Latency you can trust: for N random architectures of the space, measured on the host:

1. the spread of repeated measurements (each model measured `--repeats` times with the full
   protocol: the CV of those medians, next to the protocol's own round-to-round CV);
2. the latency model's error on held-out architectures (5-fold cross-validation): the fraction
   within +-10 %, the median error, and the rank agreement (Kendall tau, Spearman rho, with
   bootstrap intervals);
3. the time per conversion and per measurement, and per model prediction.

    python bench/latency_model.py [--samples 30] [--repeats 3] [--save tests/data/host_latencies.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from latency.devices import HostDevice
from latency.model import cross_validate, fit_with_error
from nas.config import SearchConfig
from nas.latency_fit import random_architectures
from results.ranking import agreement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--space", default="mnasnet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", help="write the measurements (arch, median ms) as JSON here")
    args = parser.parse_args()

    import keras

    from latency.convert import to_tflite
    from search_spaces.keras_blocks import build

    device = HostDevice()
    fingerprint = device.fingerprint()
    specs = random_architectures(SearchConfig(space=args.space), args.samples, seed=args.seed)
    print(
        f"{len(specs)} random {args.space} architectures on {fingerprint['cpu']}, 1 thread, fp32; {args.repeats} repeats each\n"
    )
    print(f"{'#':>3} {'arch_id':<13} {'median ms':>9} {'repeat CV':>9} {'round CV':>8} {'convert s':>9} {'measure s':>9}")
    medians, repeat_cvs, round_cvs, convert_s, measure_s = [], [], [], [], []
    with tempfile.TemporaryDirectory() as workdir:
        for k, spec in enumerate(specs, start=1):
            keras.backend.clear_session()
            path = os.path.join(workdir, f"{spec.arch_id}.tflite")
            start = time.perf_counter()
            to_tflite(build(spec), path, input_shape=(32, 32, 3))
            convert_s.append(time.perf_counter() - start)
            results = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                results.append(device.measure(path))
                measure_s.append(time.perf_counter() - start)
            values = np.array([r.median_ms for r in results])
            medians.append(float(np.median(values)))
            repeat_cvs.append(float(np.std(values) / np.mean(values)))
            round_cvs.append(statistics.median(r.cv for r in results))
            print(
                f"{k:>3} {spec.arch_id:<13} {medians[-1]:>9.3f} {100 * repeat_cvs[-1]:>8.2f}% {100 * round_cvs[-1]:>7.2f}% "
                f"{convert_s[-1]:>9.1f} {statistics.median(measure_s[-args.repeats :]):>9.2f}",
                flush=True,
            )
    latencies = np.array(medians)
    held_out = cross_validate(specs, latencies, input_hw=32, num_classes=10, folds=5)
    errors = held_out / latencies - 1
    rank = agreement(latencies, held_out)
    model, _ = fit_with_error(specs, latencies, input_hw=32, fingerprint_id=fingerprint["id"], num_classes=10)
    start = time.perf_counter()
    for spec in specs:
        model.predict(spec)
    predict_ms = 1000 * (time.perf_counter() - start) / len(specs)

    print(f"\nlatency range {latencies.min():.3f}-{latencies.max():.3f} ms")
    print(
        f"repeated measurements: CV of {args.repeats} medians per model: median {100 * np.median(repeat_cvs):.2f} %, "
        f"max {100 * np.max(repeat_cvs):.2f} %; protocol round CV median {100 * np.median(round_cvs):.2f} %"
    )
    print(
        f"latency model, 5-fold held-out: {100 * np.mean(np.abs(errors) <= 0.10):.0f} % within +-10 %, "
        f"median |error| {100 * np.median(np.abs(errors)):.1f} %, worst {100 * errors[np.argmax(np.abs(errors))]:+.1f} %"
    )
    print(f"rank agreement: {rank.describe()}")
    print(
        f"time: conversion median {statistics.median(convert_s):.1f} s, measurement median {statistics.median(measure_s):.2f} s, "
        f"model prediction {predict_ms:.2f} ms"
    )
    if args.save:
        document = {
            "note": "latencies measured on the host by bench/latency_model.py (median of repeats, LiteRT, 1 thread, fp32)",
            "fingerprint_id": fingerprint["id"],
            "cpu": fingerprint["cpu"],
            "arch": [s.to_string() for s in specs],
            "latency_median_ms": [round(m, 5) for m in medians],
        }
        with open(args.save, "w") as f:
            json.dump(document, f, indent=1)
        print(f"saved {args.save}")


if __name__ == "__main__":
    main()
