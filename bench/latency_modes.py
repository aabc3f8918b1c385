"""Is a model's LiteRT latency on this machine one figure or two? In the quiet side-by-side timings of the
proof (bench/data/proof/timing.json) each model's per-call medians fall into two clusters about 1.2-1.3x
apart, in every model and both precisions, with few calls between them; which cluster a call lands in
decides a median of 7 calls, and with it verdicts between models within 30 %.

This times each file over and over, interleaved: a fresh interpreter per call (as the search, `nas compare`
and bench/retime.py do) and one interpreter kept for the whole run. If a kept interpreter never changes
cluster while fresh ones do, the cluster belongs to the interpreter (where its buffers landed in memory), not
to the moment (another tenant, the clock); then the buffer addresses of the fresh interpreters are set
against their cluster; and a probe of 20 runs of one file before each call says whether a few milliseconds
tell the spell. Each call is the search's protocol (30 warm-up runs, 5 rounds of 40), its median
kept. Prints per file the fast cluster, the share of calls in the slow one and the ratio between them; with
--out, appends the run (calls, addresses, machine, code) to a JSON file. Run it with nothing else on the CPU.

    python bench/latency_modes.py FILE.tflite [FILE ...] [--calls 20] [--out bench/data/latency_modes.json]
    python bench/latency_modes.py --records bench/data/proof/timing.json bench/data/proof/compare_100.json ...
    python bench/latency_modes.py FILE.tflite [FILE ...] --compare-gaps 0 0.5 1 [--calls 12] [--out ...]

--compare-gaps measures what spreading the search's rounds in time buys: each file is measured again and
again with the search's whole protocol (fresh interpreter, up to 3 sets of rounds) at each pause between
rounds, interleaved, and per gap it prints how far the repeated figures of one file scatter (the share of
them over SLOW_SPELL_OVER_FAST x the file's fastest figure at any gap, their coefficient of variation and
max/min) and what a measurement costs in seconds.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PROBE_RUNS = 20


def _interpreter(path: str, protocol):
    """A ready interpreter, and the addresses of its input and output buffers."""
    from latency.measure import ready_interpreter

    interpreter = ready_interpreter(path, protocol.threads)
    addresses = {
        "input": int(interpreter.tensor(interpreter.get_input_details()[0]["index"])().ctypes.data),
        "output": int(interpreter.tensor(interpreter.get_output_details()[0]["index"])().ctypes.data),
    }
    return interpreter, addresses


def _call_ms(interpreter, protocol) -> float:
    """One call of the search's protocol on `interpreter` (one attempt, whatever its spread): its median in ms."""
    import dataclasses

    from latency.measure import measure_interpreter

    return measure_interpreter(interpreter, dataclasses.replace(protocol, max_attempts=1)).median_ms


def clusters(calls: list[float]) -> dict:
    """The fast and slow cluster of a file's call medians (slow: a spell, over SLOW_SPELL_OVER_FAST x the fastest)."""
    from latency.measure import fast_state_ms, in_slow_spell

    slow = [c for c, in_spell in zip(calls, in_slow_spell(calls), strict=True) if in_spell]
    return {
        "fast_ms": fast_state_ms(calls),
        "slow_ms": statistics.median(slow) if slow else None,
        "slow_share": len(slow) / len(calls),
        "median_ms": statistics.median(calls),
    }


def _probe_ms(interpreter) -> float:
    """The median of PROBE_RUNS runs: a few milliseconds, to tell whether the machine is in a slow spell now."""
    times = []
    for _ in range(PROBE_RUNS):
        begin = time.perf_counter_ns()
        interpreter.invoke()
        times.append((time.perf_counter_ns() - begin) / 1e6)
    return statistics.median(times)


def from_records(paths: list[str]) -> None:
    """What committed side-by-side timings say. A timing file of bench/retime.py (its "runs" keep every call):
    per run, the share of calls in a slow spell and how they line up in rounds (a spell of the machine slows
    every file of a round); a comparison file of `nas compare` (its records keep every round): each latency
    as the median of its rounds and outside the slow spells."""
    from latency.measure import fast_state_ms, in_slow_spell
    from search_spaces.files import read_json

    for path in paths:
        document = read_json(path, None)
        if document is None:
            raise SystemExit(f"no such records file: {path}")
        print(f"\n{path}")
        if "records" in document:
            for record in document["records"]:
                for precision in ("fp32", "int8"):
                    calls = record.get(f"latency_{precision}_rounds_ms") or ()
                    if calls:
                        print(
                            f"  {record['model']:<28} {record.get('timed', '')[:16]}  {precision}  median "
                            f"{statistics.median(calls):.3f}  outside spells {fast_state_ms(calls):.3f} ms  "
                            f"rounds {' '.join(f'{c:.3f}' for c in calls)}"
                        )
            continue
        ratios, slow_calls, calls_seen = [], 0, 0
        for run in document["runs"]:
            flags = []  # per file, per round: slow?
            for sample in run["samples_ms"]:
                calls = sample["medians"]
                flags.append(in_slow_spell(calls))
                slow = [c for c, in_spell in zip(calls, flags[-1], strict=True) if in_spell]
                slow_calls, calls_seen = slow_calls + len(slow), calls_seen + len(calls)
                if slow:
                    ratios.append(statistics.median(slow) / fast_state_ms(calls))
            columns = ["".join("S" if f[r] else "." for f in flags) for r in range(len(flags[0]))]
            shares = [column.count("S") / len(column) for column in columns]
            print(
                f"  {run['timed'][:16]}  {len(flags)} files x {len(columns)} rounds: share of each round's files in a "
                f"spell {' '.join(f'{x:.0%}' for x in shares)}"
            )
        print(
            f"  {calls_seen} calls, {slow_calls / calls_seen:.0%} in a spell; a spell's calls over the same file's "
            f"outside one: median {statistics.median(ratios):.2f}x, {min(ratios):.2f}-{max(ratios):.2f}x"
        )


def compare_gaps(files: list[str], gaps: list[float], calls: int) -> dict:
    """Every file measured `calls` times at each gap, interleaved: the figures, their scatter and their cost."""
    import numpy as np

    from latency.measure import SLOW_SPELL_OVER_FAST, LatencyProtocol, measure_tflite

    figures = {path: {gap: [] for gap in gaps} for path in files}
    seconds = {path: {gap: [] for gap in gaps} for path in files}
    spell_rounds = {path: {gap: [] for gap in gaps} for path in files}
    for call in range(calls):
        for path in files:
            for gap in gaps:
                begin = time.perf_counter()
                result = measure_tflite(path, LatencyProtocol(round_gap_s=gap))
                seconds[path][gap].append(round(time.perf_counter() - begin, 3))
                figures[path][gap].append(result.median_ms)
                spell_rounds[path][gap].append(result.spell_rounds)
        print(f"call {call + 1}/{calls}", end="\r", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print(f"{calls} measurements per file and gap, interleaved; the search's protocol (5 rounds of 40, up to 3 sets)")
    print(f"{'file':<50} {'gap s':>5} {'median ms':>9} {'over 1.1x':>9} {'cv':>6} {'max/min':>7} {'s each':>6}")
    summary: dict = {str(gap): {"over": 0, "calls": 0, "cv": [], "seconds": []} for gap in gaps}
    for path in files:
        fastest = min(min(by_gap) for by_gap in figures[path].values())
        for gap in gaps:
            f = np.array(figures[path][gap])
            over = int(np.sum(f > SLOW_SPELL_OVER_FAST * fastest))
            cv = float(np.std(f) / np.mean(f))
            row = summary[str(gap)]
            row["over"], row["calls"] = row["over"] + over, row["calls"] + len(f)
            row["cv"].append(cv)
            row["seconds"] += seconds[path][gap]
            print(
                f"{path[-50:]:<50} {gap:5.2f} {np.median(f):9.4f} {over:>5}/{len(f):<3} {100 * cv:5.1f}% "
                f"{f.max() / f.min():7.3f} {np.median(seconds[path][gap]):6.2f}"
            )
    print("all files:")
    for gap, row in summary.items():
        print(
            f"  gap {float(gap):.2f} s: {row['over']}/{row['calls']} figures over {SLOW_SPELL_OVER_FAST}x the file's fastest "
            f"({row['over'] / row['calls']:.0%}), median cv {100 * statistics.median(row['cv']):.1f} %, "
            f"a measurement {statistics.median(row['seconds']):.2f} s"
        )
    return {"gaps": gaps, "figures": figures, "seconds": seconds, "spell_rounds": spell_rounds, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*")
    parser.add_argument("--records", nargs="+", metavar="JSON", help="read committed timings instead of timing files")
    parser.add_argument("--calls", type=int, default=20, help="calls per file and way (fresh, kept)")
    parser.add_argument("--out", help="append the run to this JSON file")
    parser.add_argument("--compare-gaps", nargs="+", type=float, metavar="S", help="measure with these pauses between rounds")
    parser.add_argument(
        "--probe",
        help="time this file for PROBE_RUNS runs before each call: does a short probe tell the spell? (default: the first file)",
    )
    args = parser.parse_args()
    if args.records:
        from_records(args.records)
        return
    if not args.files:
        parser.error("give .tflite files to time, or --records")
    for path in args.files:
        if not os.path.isfile(path):
            raise SystemExit(f"no such model file: {path}")
    if args.calls < 2:
        raise SystemExit(f"--calls {args.calls}: need at least 2")
    if args.compare_gaps:
        from latency.measure import MAX_ROUND_GAP_S

        for gap in args.compare_gaps:
            if not 0 <= gap <= MAX_ROUND_GAP_S:
                raise SystemExit(f"--compare-gaps {gap:g}: a pause must be in [0, {MAX_ROUND_GAP_S:g}] seconds")
        record = compare_gaps(args.files, args.compare_gaps, args.calls)
        if args.out:
            from runlog import append_run

            append_run(args.out, {"mode": "compare-gaps", "calls": args.calls} | record)
            print(f"appended to {args.out}")
        return

    from latency.measure import SLOW_SPELL_OVER_FAST, LatencyProtocol, busy_while, in_slow_spell

    protocol = LatencyProtocol(round_gap_s=0)  # one call = one moment of the machine, as the search measured before
    kept = {path: _interpreter(path, protocol)[0] for path in args.files}
    probe = _interpreter(args.probe or args.files[0], protocol)[0]
    fields = ("fresh", "kept", "probe", "seconds", "addresses", "busy_cores")
    runs: dict[str, dict] = {path: {name: [] for name in fields} for path in args.files}
    start = time.perf_counter()
    for call in range(args.calls):
        for path in args.files:
            runs[path]["probe"].append(_probe_ms(probe))
            runs[path]["seconds"].append(round(time.perf_counter() - start, 2))
            interpreter, addresses = _interpreter(path, protocol)
            fresh, busy = busy_while(lambda i=interpreter: _call_ms(i, protocol))
            del interpreter
            runs[path]["fresh"].append(fresh)
            runs[path]["addresses"].append(addresses)
            runs[path]["kept"].append(_call_ms(kept[path], protocol))
            runs[path]["busy_cores"].append(round(busy, 2))
        print(f"call {call + 1}/{args.calls}", end="\r", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    print(f"{args.calls} calls per file and way, interleaved; 1 thread; slow: over {SLOW_SPELL_OVER_FAST}x the fastest call")
    print(f"{'file':<60} {'way':<6} {'fast ms':>8} {'slow ms':>8} {'slow/fast':>9} {'slow calls':>10}")
    summary = {}
    for path, run in runs.items():
        summary[path] = {}
        for way in ("fresh", "kept"):
            c = clusters(run[way])
            summary[path][way] = c
            ratio = f"{c['slow_ms'] / c['fast_ms']:.2f}x" if c["slow_ms"] else "-"
            slow = f"{round(c['slow_share'] * len(run[way]))}/{len(run[way])}"
            print(f"{path[-60:]:<60} {way:<6} {c['fast_ms']:8.4f} {c['slow_ms'] or 0:8.4f} {ratio:>9} {slow:>10}")
        spelled = in_slow_spell(run["fresh"])
        for name in ("input", "output"):  # does the cluster follow where the buffer landed?
            by_offset: dict[int, list[bool]] = {}
            for addresses, in_spell in zip(run["addresses"], spelled, strict=True):
                by_offset.setdefault(addresses[name] % 4096, []).append(in_spell)
            pure = sum(1 for flags in by_offset.values() if len(set(flags)) == 1)
            print(f"  {name} buffer offsets in a 4 KiB page: {len(by_offset)} seen, {pure} always in one cluster")
        agreement = Counter(zip(in_slow_spell(run["probe"]), spelled, strict=True))
        summary[path]["probe_agreement"] = {
            f"probe {'slow' if a else 'fast'}, call {'slow' if b else 'fast'}": n for (a, b), n in agreement.items()
        }
        print(f"  the probe before each fresh call against the call: {summary[path]['probe_agreement']}")
    timeline = sorted(  # every fresh call in time order, slow or not: how long does a spell last?
        pair for run in runs.values() for pair in zip(run["seconds"], in_slow_spell(run["fresh"]), strict=True)
    )
    same = sum(1 for (_, a), (_, b) in itertools.pairwise(timeline) if a == b) / max(1, len(timeline) - 1)
    spells = [second for (_, before), (second, slow) in itertools.pairwise(timeline) if slow and not before]
    print(
        f"consecutive calls (any file, {timeline[-1][0] / len(timeline):.2f} s apart) in the same state: {same:.0%}; "
        f"{len(spells)} slow spells began in {timeline[-1][0]:.0f} s"
    )
    print(f"other processes kept {max(b for r in runs.values() for b in r['busy_cores']):.2f} cores busy at most")
    if args.out:
        from runlog import append_run

        record = {"calls": args.calls, "slow_over_fast": SLOW_SPELL_OVER_FAST, "probe": args.probe or args.files[0]}
        append_run(args.out, record | {"same_state_next": same, "files": runs, "summary": summary})
        print(f"appended to {args.out}")


if __name__ == "__main__":
    main()
