"""Which TensorFlow settings train fastest on this CPU: its oneDNN path (`--settings onednn`), the
sizes of its thread pools (`--settings threads`), or two trainings at once on one thread each against one on
all cores (`--settings sharing`: whether two long runs, such as two benchmarks' retrainings, are better run
side by side than one after the other).

TensorFlow turns oneDNN on by default only on CPUs with AVX-512 VNNI/BF16 or AMX; on an AVX2-only machine it
is off unless `TF_ENABLE_ONEDNN_OPTS=1`. These variables are read when TensorFlow is imported, so each
setting runs in a process of its own; the settings alternate, round after round, so a drift of the
machine's speed touches each alike. Each round trains the recipe's fused step (batch 128) on real CIFAR-10.

    python bench/onednn_speed.py --data-dir data [--settings threads|sharing] [--arch mobilenetv2-0.5]
        [--steps 60] [--rounds 3] [--pause PID ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from retime import paused  # noqa: E402

#: a pseudo-variable of SETTINGS: how many children of the setting train at once (their images/s add up)
PROCESSES = "PROCESSES"
#: name -> environment of the child; --settings picks a family, the first of each is the baseline
SETTINGS = {
    "onednn": {"oneDNN as TensorFlow chooses": {}, "TF_ENABLE_ONEDNN_OPTS=1": {"TF_ENABLE_ONEDNN_OPTS": "1"}},
    "threads": {  # TensorFlow's defaults start as many intra- and inter-op threads as cores
        "threads as TensorFlow chooses": {},
        "inter-op 1": {"TF_NUM_INTEROP_THREADS": "1"},
        "intra-op 2, inter-op 1": {"TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "1"},
    },
    "sharing": {
        "one process, TF's threads": {},
        "two at once, 1 thread each": {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", PROCESSES: "2"},
        "two at once, TF's threads": {PROCESSES: "2"},
    },
}


def child(args) -> None:
    """One round in this process: print the steady-state images per second of the fused step."""
    import keras

    from nas.choice import parse_arch
    from search_spaces.keras_blocks import build
    from trainers.cifar import load_cifar
    from trainers.fused import FusedStep, StepRecipe, batches

    batch = 128
    data = load_cifar("cifar10", data_dir=args.data_dir)
    x, y = data.x_train[: batch * (args.steps + 1)], data.y_train[: batch * (args.steps + 1)]
    recipe = StepRecipe(optimizer="sgd", peak_lr=0.05, warmup_steps=0, total_steps=10_000, weight_decay=5e-4, label_smoothing=0.1)
    keras.utils.set_random_seed(0)
    step = FusedStep(build(parse_arch(args.arch), bn_momentum=0.99, fused_bn=True), recipe)
    stream = iter(batches(x, y, num_classes=10, batch_size=batch, seed=0, key=0, cutout=16))
    float(step.run(*next(stream)))  # trace
    print("ready", flush=True)
    sys.stdin.readline()  # the parent starts every child of a round together, once all have traced
    start = time.perf_counter()
    for images, labels in stream:
        loss = step.run(images, labels)
    float(loss)
    print(args.steps * batch / (time.perf_counter() - start))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    parser.add_argument("--arch", default="mobilenetv2-0.5")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settings", choices=sorted(SETTINGS), default="onednn", help="what to compare (default onednn)")
    parser.add_argument("--pause", type=int, nargs="+", metavar="PID", help="SIGSTOP these and their children meanwhile")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    command = [sys.executable, os.path.abspath(__file__), "--child", "--data-dir", args.data_dir, "--arch", args.arch]
    command += ["--steps", str(args.steps)]
    settings = SETTINGS[args.settings]
    results: dict[str, list[float]] = {name: [] for name in settings}
    with paused(args.pause):
        for _ in range(args.rounds):
            for name, variables in settings.items():
                results[name].append(_round(command, variables))
    print(f"{args.arch}, batch 128, {args.steps} steps per round, {args.rounds} rounds alternating\n")
    print(f"{'setting (img/s of all its processes)':<36} {'img/s per round':>24} {'median':>8}")
    medians = {}
    for name, rows in results.items():
        medians[name] = statistics.median(rows)
        print(f"{name:<36} {' '.join(f'{r:.0f}' for r in rows):>24} {medians[name]:>8.0f}")
    baseline, *others = medians
    for name in others:
        print(f"{name} / {baseline}: {medians[name] / medians[baseline]:.2f}x")


def _round(command: list[str], variables: dict[str, str]) -> float:
    """One round of a setting: its children started together; the images per second of all of them."""
    variables = dict(variables)
    count = int(variables.pop(PROCESSES, "1"))
    env = {**os.environ, **variables, "TF_CPP_MIN_LOG_LEVEL": "3"}
    children = [
        subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(count)
    ]
    for child in children:
        if child.stdout.readline().strip() != "ready":
            raise SystemExit(f"a round failed: {command}")
    for child in children:  # equal work started together: their timed windows overlap, so their rates add up
        child.stdin.write("go\n")
        child.stdin.flush()
    outputs = [child.communicate()[0] for child in children]
    if any(child.returncode for child in children):
        raise SystemExit(f"a round failed: {command}")
    return sum(float(out.strip().splitlines()[-1]) for out in outputs)


if __name__ == "__main__":
    main()
