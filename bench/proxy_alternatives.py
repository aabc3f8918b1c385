"""Which proxy ranks like final accuracy, at what cost: every proxy the proof's check ran on the same
architectures (bench/proof.py steps `proxy` and `alternatives`), side by side.

    python bench/proxy_alternatives.py [--folder bench/data/proof]

Reads proxy_vs_final.json (the default proxy, seed 0) and every proxy_vs_final_<name>.json beside it; for
each: Kendall's tau and Spearman's rho against the final validation accuracy with 95 % bootstrap intervals,
the median seconds of one proxy run; the same for the default proxy averaged over the seeds it ran with,
and for the estimators each run records for free (its mean training loss, its accuracy half-way), for each
proxy corrected for size out of sample (leave-one-out), and for the parameter count alone; and whether
the ranking error (rank by the proxy minus rank by the final) trends with the architecture's size or its
latency in the study (Spearman's rho of the two; references have no study latency). The seconds are as each
run measured them: compare them only between runs made alike (threads, other work on the machine).
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nas.proxy_check import ESTIMATORS, load_records  # noqa: E402
from results.ranking import agreement, error_trend  # noqa: E402


def finals_of(records) -> dict[str, float]:
    """arch -> final accuracy, from any record that has it."""
    return {
        arch: final["accuracy"]
        for arch, record in records.items()
        for label, final in record.results.items()
        if label.startswith("final-") and "accuracy" in final
    }


def proxy_and_final(records, finals: dict[str, float], estimator=ESTIMATORS["proxy accuracy"]) -> dict[str, tuple]:
    """arch -> (the proxy run's `estimator`, final accuracy, proxy seconds) of the records with a proxy run and a
    final in `finals` (the finals are one training per architecture, whichever check's file recorded them: a
    check run with --proxies-only before they finished lacks them)."""
    out = {}
    for arch, record in records.items():
        proxies = [v for k, v in record.results.items() if not k.startswith("final-") and "accuracy" in v]
        if arch in finals and proxies and estimator(proxies[0]) is not None:
            out[arch] = (estimator(proxies[0]), finals[arch], proxies[0].get("seconds", float("nan")))
    return out


def sizes_of(records) -> dict[str, tuple]:
    """arch -> (parameter count or None, study latency ms or None)."""
    return {
        arch: (
            next((v["params_count"] for v in record.results.values() if v.get("params_count")), None),
            record.latency_ms,
        )
        for arch, record in records.items()
    }


def trend_column(rows: dict[str, tuple], sizes: dict[str, tuple], which: int) -> str:
    """Spearman's rho of the ranking error against size (which=0) or latency (which=1), '-' under 3 values."""
    archs = list(rows)
    covariate = [sizes.get(a, (None, None))[which] for a in archs]
    found = error_trend([rows[a][0] for a in archs], [rows[a][1] for a in archs], covariate)
    return "-" if found is None else f"{found.spearman_rho:.2f}"


def size_corrected(rows: dict[str, tuple], sizes: dict[str, tuple]) -> dict[str, tuple]:
    """The proxy corrected for its size trend, out of sample: for each architecture, final accuracy fitted as
    a + b x proxy + c x log(parameters) on all the *others* (least squares), and that fit's prediction for it
    (leave-one-out: a correction fitted on the finals it is scored against would rank them well by
    construction). What a search could ship if the correction held: its coefficients from finals like these."""
    import numpy as np

    archs = [a for a in rows if sizes.get(a, (None, None))[0]]
    if len(archs) < 5:  # 3 coefficients need more than 3 others to mean anything
        return {}
    X = np.array([[1.0, rows[a][0], np.log(sizes[a][0])] for a in archs])
    y = np.array([rows[a][1] for a in archs])
    out = {}
    for i, arch in enumerate(archs):
        others = np.arange(len(archs)) != i
        coefficients, *_ = np.linalg.lstsq(X[others], y[others], rcond=None)
        out[arch] = (float(X[i] @ coefficients), rows[arch][1], rows[arch][2])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", default=os.path.join(ROOT, "bench", "data", "proof"))
    args = parser.parse_args()

    files = sorted(glob.glob(os.path.join(args.folder, "proxy_vs_final*.json")))
    if not files:
        raise SystemExit(f"no proxy_vs_final*.json in {args.folder} yet")
    runs = {os.path.basename(f)[len("proxy_vs_final") : -len(".json")].lstrip("_") or "default": f for f in files}
    records = {name: load_records(path) for name, path in runs.items()}
    finals = {arch: accuracy for found in records.values() for arch, accuracy in finals_of(found).items()}
    sizes = {arch: size for found in records.values() for arch, size in sizes_of(found).items()}
    pairs = {name: proxy_and_final(found, finals) for name, found in records.items()}
    seeds = [name for name in pairs if name == "default" or name.startswith("seed")]
    if len(seeds) > 1:  # the default proxy averaged over its seeds, on the architectures every seed has
        common = set.intersection(*(set(pairs[name]) for name in seeds))
        pairs[f"default, mean of {len(seeds)} seeds"] = {
            arch: (
                statistics.mean(pairs[name][arch][0] for name in seeds),
                pairs["default"][arch][1],
                sum(pairs[name][arch][2] for name in seeds),
            )
            for arch in sorted(common)
        }
    for name, found in records.items():  # the free estimators of each run (its training loss, its curve)
        for estimator, value_of in ESTIMATORS.items():
            if estimator != "proxy accuracy":
                pairs[f"{name}: {estimator}"] = proxy_and_final(found, finals, value_of)
    for name in list(records):  # the size trend taken out, and size alone (no training: 0 s)
        pairs[f"{name}: size-corrected, leave-one-out"] = size_corrected(pairs[name], sizes)
    pairs["log parameter count alone"] = {
        arch: (sizes[arch][0], accuracy, 0.0) for arch, accuracy in finals.items() if sizes.get(arch, (None, None))[0]
    }
    header = f"{'proxy':<42} {'n':>3} {'Kendall tau [95 %]':>24} {'Spearman rho [95 %]':>24} {'s per arch':>10}"
    print(f"{header} {'error~size':>10} {'error~lat':>9}")
    for name, rows in pairs.items():
        if not rows:  # an estimator that run did not record
            continue
        if len(rows) < 3:
            print(f"{name:<42} {len(rows):>3}   (too few finished)")
            continue
        proxy, final, seconds = zip(*rows.values(), strict=True)
        found = agreement(proxy, final)
        kl, kh = found.kendall_interval
        sl, sh = found.spearman_interval
        print(
            f"{name:<42} {found.n:>3} {found.kendall_tau:>7.3f} [{kl:>6.3f}, {kh:>6.3f}] "
            f"{found.spearman_rho:>7.3f} [{sl:>6.3f}, {sh:>6.3f}] {statistics.median(seconds):>10.0f} "
            f"{trend_column(rows, sizes, 0):>10} {trend_column(rows, sizes, 1):>9}"
        )


if __name__ == "__main__":
    main()
