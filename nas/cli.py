"""The `nas` command. Thin: parse flags, build a config, call one library function, print.

Bad input exits with code 2 and one line naming the bad value; no traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from nas.config import FIELD_NAMES, ConfigError, SearchConfig, load_config

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors: one line, exit 2
        self.exit(EXIT_BAD_INPUT, f"nas: error: {message}\n")


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _add_study_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--study-name", "--study", dest="study_name", help="study name (default: <space>-<dataset>, e.g. mnasnet-cifar10)"
    )
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///runs/<study>/study.db)")
    p.add_argument("--runs-dir", help="directory holding one folder per study (default: runs)")


def _add_latency_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("latency measurement")
    g.add_argument(
        "--device", help="host (LiteRT here, default), adb[:SERIAL] (benchmark_model on a phone), or cmd:'COMMAND {model}'"
    )
    g.add_argument("--latency-threads", type=int, help="interpreter threads (default 1)")
    g.add_argument("--latency-precision", help="fp32 (default) or int8 (full-integer model, as shipped)")
    g.add_argument("--latency-warmup", type=int, help="untimed runs first (default 30)")
    g.add_argument("--latency-runs", type=int, help="timed runs, in 5 rounds (default 200)")
    g.add_argument("--latency-max-cv", type=_number, help="re-measure when the rounds' spread exceeds this (default 0.05)")
    g.add_argument("--latency-pin-core", type=int, help="host: pin the measurement to this CPU core")
    g.add_argument("--device-timeout", dest="device_timeout_s", type=_number, help="seconds per device command (default 120)")
    g.add_argument("--adb", dest="adb_path", help="adb binary (default: adb on PATH)")
    g.add_argument("--benchmark-binary", help="benchmark_model on the phone (default /data/local/tmp/benchmark_model)")
    g.add_argument("--delegate", help="adb: xnnpack (default), none, gpu or nnapi")
    g.add_argument("--latency-regex", help="cmd: regex whose group 1 is a latency in ms (default: a number before 'ms')")


def _add_selection_flags(p: argparse.ArgumentParser) -> None:
    _add_study_flags(p)
    p.add_argument("--trial", type=int, help="a trial number of --study")
    p.add_argument("--front", action="store_true", help="every member of --study's Pareto front (best reward first)")
    p.add_argument("--top", type=int, help="with --front: only the K best by reward")
    p.add_argument("--arch", help="an architecture string or a reference name (mnasnet-a1, mobilevit-xxs, ...)")
    p.add_argument("--dataset", help="cifar10 (default) or cifar100")
    p.add_argument("--data-dir", help="folder holding the official CIFAR folders")
    p.add_argument("--out", help="working folder (default: runs/<study>/retrained/<arch_id>/)")


def _add_recipe_flags(p: argparse.ArgumentParser) -> None:
    from trainers.full import Recipe

    d = Recipe()
    g = p.add_argument_group("retraining recipe")
    g.add_argument("--epochs", type=int, help=f"epochs (default {d.epochs})")
    g.add_argument("--batch-size", type=int, help=f"batch size (default {d.batch_size})")
    g.add_argument("--optimizer", help=f"sgd (Nesterov), rmsprop or adam (default {d.optimizer})")
    g.add_argument("--lr", type=_number, help=f"peak learning rate (default {d.lr:g})")
    g.add_argument(
        "--warmup-epochs", type=_number, help="linear warm-up before cosine decay (default 2, or a tenth of a shorter run)"
    )
    g.add_argument(
        "--weight-decay", type=_number, help=f"L2 on kernels only, not BatchNorm or biases (default {d.weight_decay:g})"
    )
    g.add_argument("--label-smoothing", type=_number, help=f"default {d.label_smoothing:g}")
    g.add_argument("--cutout", type=int, help=f"side of the cutout square in pixels, 0 = off (default {d.cutout})")
    g.add_argument("--dropout", type=_number, help=f"before the classifier (default {d.dropout:g})")
    g.add_argument("--ema-decay", type=_number, help=f"per-step weight averaging, 0 = off (default {d.ema_decay:g})")
    g.add_argument("--val-images", type=int, help=f"validation images carved from the training set (default {d.val_images})")
    g.add_argument("--train-images", type=int, help="use only this many training images (default: all the rest)")
    g.add_argument("--seed", type=int, help=f"default {d.seed}")
    g.add_argument(
        "--deterministic",
        action="store_true",
        default=None,
        help="bit-exact kernels: resuming equals an uninterrupted run (slower)",
    )


def _recipe(args: argparse.Namespace):
    from trainers.full import RECIPE_FIELDS, Recipe

    try:
        return Recipe(**{name: getattr(args, name) for name in RECIPE_FIELDS if getattr(args, name, None) is not None})
    except ValueError as error:
        raise ConfigError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nas", description="Multi-objective hardware-aware architecture search (MnasNet space, CIFAR, LiteRT).")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    search = commands.add_parser(
        "search",
        help="run (or resume) a search",
        description="Run or resume a search; every flag can also come from --config FILE.toml.",
    )
    search.add_argument("--config", help="TOML file with any of these settings (flags win)")
    _add_study_flags(search)
    search.add_argument("--mode", help="pareto (accuracy up, latency down; default) or reward (MnasNet scalar)")
    search.add_argument("--target-ms", type=_number, help="target latency T in ms (default 1.0: host CPU, 1 thread)")
    search.add_argument("--constraint", help="soft (alpha=beta=-0.07, default) or hard (alpha=0, beta=-1)")
    search.add_argument("--alpha", type=_number, help="reward exponent when LAT <= T (overrides --constraint)")
    search.add_argument("--beta", type=_number, help="reward exponent when LAT > T (overrides --constraint)")
    search.add_argument(
        "--max-latency-ms", type=_number, help="time but do not train models slower than this (hard default: 2 x T)"
    )
    search.add_argument("--sampler", help="tpe (default), nsga2 or random")
    search.add_argument(
        "--space", help="mnasnet (default) or mnasnet-mobilevit (adds MobileViT blocks where the map is 8x8 or smaller)"
    )
    search.add_argument("--width", type=_number, help="width multiplier of the skeleton (default 0.5)")
    search.add_argument("--trials", type=int, help="trials to add to the study (default 20)")
    search.add_argument("--timeout", dest="timeout_s", type=_number, help="stop starting trials after this many seconds")
    search.add_argument("--seed", type=int, help="sampler and training seed (default 0)")
    search.add_argument(
        "--seed-references", action="store_true", default=None, help="evaluate the reference architectures' projections first"
    )
    search.add_argument("--dataset", help="cifar10 (default) or cifar100")
    search.add_argument(
        "--data-dir", help="folder holding cifar-10-batches-bin/ or -py/ (default: $NAS_DATA_DIR, ./data, ~/.keras/datasets)"
    )
    search.add_argument("--train-images", type=int, help="proxy training images per epoch (default 8000)")
    search.add_argument("--val-images", type=int, help="held-out images carved from the training set (default 2000)")
    search.add_argument("--epochs", type=int, help="proxy epochs (default 1)")
    search.add_argument("--batch-size", type=int, help="proxy batch size (default 64)")
    search.add_argument(
        "--early-stop", help="on: stop a trial whose accuracy part-way is dominated by a faster finished trial; off (default)"
    )
    search.add_argument(
        "--no-latency-screen",
        dest="latency_screen",
        action="store_false",
        default=None,
        help="with a hard limit: do not skip candidates the latency model is sure exceed it",
    )
    _add_latency_flags(search)
    search.add_argument("--trials-per-worker", type=int, help="replace the worker process after this many trials (default 8)")
    search.add_argument("-v", "--verbose", action="store_true", help="log details")

    front = commands.add_parser("front", help="print the Pareto front of an existing study")
    _add_study_flags(front)

    report = commands.add_parser("report", help="write an HTML report (plus front.csv/json) of an existing study")
    _add_study_flags(report)
    report.add_argument("--out", help="output folder (default: runs/<study>/)")

    retrain = commands.add_parser("retrain", help="train chosen architectures with the full recipe (resumable)")
    _add_selection_flags(retrain)
    _add_recipe_flags(retrain)

    export = commands.add_parser("export", help="export retrained models: .keras, TFLite fp32/fp16/int8, model card")
    _add_selection_flags(export)
    export.add_argument("--formats", nargs="+", choices=("fp32", "fp16", "int8"), help="TFLite formats (default: all three)")
    _add_latency_flags(export)  # re-measure where the study measured: give it the search's --device flags

    calibrate = commands.add_parser(
        "calibrate", help="measure the reference architectures on the device; suggest a target latency"
    )
    calibrate.add_argument(
        "--input-size", type=int, default=32, help="input side in pixels (default 32; >= 128 uses the papers' strides)"
    )
    calibrate.add_argument("--references", help="comma-separated subset (default: all)")
    calibrate.add_argument("--target-ms", type=_number, help="say where this target lies against the references")
    calibrate.add_argument("--runs-dir", help="where calibration.json is kept (default: runs)")
    _add_latency_flags(calibrate)

    latency_fit = commands.add_parser(
        "latency-fit", help="fit the latency model on the device's measurements (and new random samples); report its error"
    )
    latency_fit.add_argument("--samples", type=int, default=0, help="first measure this many random architectures of the space")
    latency_fit.add_argument("--space", help="mnasnet (default) or mnasnet-mobilevit")
    latency_fit.add_argument("--width", type=_number, help="width multiplier (default 0.5)")
    latency_fit.add_argument("--seed", type=int, help="sampling seed (default 0)")
    latency_fit.add_argument("--report", action="store_true", help="print held-out error, rank agreement and every architecture")
    latency_fit.add_argument("--runs-dir", help="where the latency cache and model live (default: runs)")
    _add_latency_flags(latency_fit)

    check = commands.add_parser(
        "proxy-check", help="does the proxy budget rank architectures like a 10x longer one? (Kendall tau, Spearman rho)"
    )
    check.add_argument("--archs", type=int, default=12, help="random architectures of the space (default 12)")
    check.add_argument("--no-references", action="store_true", help="leave out the reference architectures")
    check.add_argument("--train-images", type=int, help="proxy: training images (default: the search's, 8000)")
    check.add_argument("--epochs", type=int, help="proxy: epochs (default 1)")
    check.add_argument("--long-images", type=int, help="long budget: training images (default: 10x the proxy's, at most 45000)")
    check.add_argument("--long-epochs", type=int, help="long budget: epochs (default: enough for 10x the proxy's image-passes)")
    check.add_argument("--show", action="store_true", help="print the saved result of this check without training")
    for flag in ("--space", "--dataset", "--data-dir", "--runs-dir"):
        check.add_argument(flag)
    check.add_argument("--width", type=_number)
    check.add_argument("--val-images", type=int)
    check.add_argument("--batch-size", type=int)
    check.add_argument("--seed", type=int)

    dashboard = commands.add_parser("dashboard", help="serve optuna-dashboard on an existing study's storage")
    _add_study_flags(dashboard)
    dashboard.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    dashboard.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    return parser


def _print_trial(trial, done: int, total: int, *, started: float) -> None:
    attrs = trial.user_attrs
    elapsed = time.perf_counter() - started
    eta = elapsed / done * (total - done)
    acc = attrs.get("accuracy")
    lat = attrs.get("latency_median_ms")
    reward = attrs.get("reward")
    state = trial.state.name.lower()
    figures = (
        f"acc {acc:.3f}  lat {lat:.3f} ms  reward {reward:.4f}"
        if acc is not None and lat is not None and reward is not None
        else f"{state}: {attrs.get('fail_reason', '')}"
    )
    arch_id = attrs.get("arch_id", "?")
    tags = " (reused)" if "reused_from" in attrs else ""
    tags += f" (seed: {attrs['seeded_from']})" if attrs.get("seeded_from") else ""
    print(
        f"[{done:>3}/{total}] trial {trial.number:>3}  {arch_id}  {figures}  "
        f"{attrs.get('trial_seconds', 0):.1f} s{tags}  | elapsed {elapsed / 60:.1f} min, eta {eta / 60:.1f} min",
        flush=True,
    )


def _describe(fingerprint: dict) -> str:
    threads, precision = fingerprint["threads"], fingerprint.get("precision", "fp32")
    return f"{fingerprint['device']} ({fingerprint['cpu']}), {fingerprint['runtime']}, {threads} thread(s), {precision}"


def _device_and_fingerprint(config: SearchConfig):
    from latency.devices import DeviceError

    device = config.make_device()
    try:
        return device, device.fingerprint()
    except DeviceError as error:
        raise ConfigError(f"device {config.device!r} cannot be used: {error}") from None


def _config_flags(args: argparse.Namespace) -> dict:
    """The flags that are SearchConfig fields (None: not given)."""
    return {name: getattr(args, name) for name in FIELD_NAMES if hasattr(args, name)}


def cmd_search(args: argparse.Namespace) -> int:
    from nas.search import run_search
    from results.pareto import format_front

    config = load_config(toml_path=args.config, overrides=_config_flags(args))
    started = time.perf_counter()

    def on_start(study, fingerprint) -> None:
        finished = len(study.get_trials(deepcopy=False))
        print(f"study {config.study_name!r} in {config.storage_url}: {finished} earlier trials; adding {config.trials}")
        print(
            f"mode {config.mode}, sampler {config.sampler}, target {config.target_ms:g} ms, alpha {config.reward_alpha:g}, "
            f"beta {config.reward_beta:g}; proxy {config.train_images} images x {config.epochs} epochs"
        )
        print(f"latency on: {_describe(fingerprint)}", flush=True)

    summary = run_search(config, on_start=on_start, on_trial=lambda t, d, n: _print_trial(t, d, n, started=started))
    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(summary.info.counts.items()))
    print(f"\n{summary.new_trials} trials in {summary.wall_seconds / 60:.1f} min; study now holds {counts}")
    print(f"\nPareto front (accuracy vs latency) of {config.study_name!r}:\n{format_front(summary.info)}")
    print(f"\nall trials: {summary.csv_path}")
    print(
        f"look at it:  nas report --study {config.study_name}   (HTML)   |   nas dashboard --study {config.study_name}   (live)"
    )
    print(f"print again: nas front --study {config.study_name}")
    print(f"deploy:      nas retrain --study {config.study_name} --front --top 3")
    print(f"             nas export --study {config.study_name} --front --top 3")
    return 0


def _existing_study(args: argparse.Namespace):
    """(config, study) for the commands that read a study; a missing one is bad input."""
    from nas.search import load_existing_study

    config = SearchConfig(study_name=args.study_name, storage=args.storage, runs_dir=args.runs_dir or SearchConfig.runs_dir)
    if config.storage is None and not os.path.exists(os.path.join(config.run_dir, "study.db")):
        raise ConfigError(f"study {config.study_name!r} does not exist: no {os.path.join(config.run_dir, 'study.db')}")
    return config, load_existing_study(study_name=config.study_name, storage_url=config.storage_url)


def cmd_front(args: argparse.Namespace) -> int:
    from results.pareto import format_front, pareto_info

    _, study = _existing_study(args)
    print(format_front(pareto_info(study)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from results.pareto import pareto_info
    from results.report import write_report

    config, study = _existing_study(args)
    out_dir = args.out or config.run_dir
    try:
        paths = write_report(pareto_info(study), out_dir)
    except OSError as error:
        raise ConfigError(f"cannot write the report to {out_dir!r}: {error.strerror}") from None
    print(f"report: {paths['report.html']}")
    print(f"front:  {paths['front.csv']}, {paths['front.json']}")
    return 0


def _chosen(args: argparse.Namespace):
    from nas.retrain import choose

    if args.top is not None and args.top < 1:
        raise ConfigError(f"top={args.top} must be at least 1")
    if args.arch is not None:
        if args.trial is not None or args.front:
            raise ConfigError("--arch cannot be combined with --trial or --front")
        return choose(arch=args.arch, runs_dir=args.runs_dir or SearchConfig.runs_dir, out=args.out)
    _, study = _existing_study(args)
    return choose(
        study=study,
        trial=args.trial,
        front=args.front,
        top=args.top,
        runs_dir=args.runs_dir or SearchConfig.runs_dir,
        out=args.out,
    )


def _dataset(args: argparse.Namespace):
    from trainers.cifar import DataError, check_cifar, load_cifar

    name = args.dataset or "cifar10"
    try:
        check_cifar(name, data_dir=args.data_dir)
        return load_cifar(name, data_dir=args.data_dir)
    except DataError as error:
        raise ConfigError(str(error)) from None


def _print_epoch(epoch: int, epochs: int, record: dict) -> None:
    done = int(30 * (epoch + 1) / epochs)
    print(
        f"  epoch {epoch + 1:>3}/{epochs} [{'#' * done}{'.' * (30 - done)}] loss {record['loss']:.3f}  "
        f"val acc {record['val_accuracy']:.3f}  {record['seconds']:.0f} s",
        flush=True,
    )


def cmd_retrain(args: argparse.Namespace) -> int:
    from nas.retrain import save_provenance
    from trainers.full import retrain

    recipe = _recipe(args)
    chosen = _chosen(args)
    dataset = _dataset(args)
    for k, item in enumerate(chosen, start=1):
        save_provenance(item)
        print(f"[{k}/{len(chosen)}] retraining {item.spec.arch_id} for {recipe.epochs} epochs in {item.workdir}")
        print(f"  {item.spec.to_string()}", flush=True)
        try:
            result = retrain(item.spec, dataset, recipe=recipe, workdir=item.workdir, on_epoch=_print_epoch)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        print(
            f"  best validation accuracy {result.val_accuracy:.4f} (epoch {result.best_epoch}); test accuracy "
            f"{result.test_accuracy:.4f}; {result.train_seconds / 60:.1f} min",
            flush=True,
        )
    print(f"\nexport: nas export {' '.join(_selection_words(args))}")
    return 0


def _selection_words(args: argparse.Namespace) -> list[str]:
    words = []
    for flag in ("study_name", "runs_dir", "trial", "top", "arch", "data_dir", "out"):
        value = getattr(args, flag, None)
        if value is not None:
            words += [f"--{flag.replace('_name', '').replace('_', '-')}", str(value)]
    return words + (["--front"] if args.front else [])


def cmd_export(args: argparse.Namespace) -> int:
    from results.export import FORMATS, export_retrained

    chosen = _chosen(args)
    dataset = _dataset(args)
    for item in chosen:
        if not os.path.exists(os.path.join(item.workdir, "result.json")):
            raise ConfigError(f"{item.workdir} holds no finished retraining of {item.spec.arch_id}: run nas retrain first")
    device, _ = _device_and_fingerprint(load_config(overrides=_config_flags(args)))
    for item in chosen:
        card = export_retrained(item.workdir, dataset=dataset, device=device, formats=tuple(args.formats or FORMATS))
        print(f"{item.spec.arch_id}: {card['params_count']:,} params, {card['multiply_adds']:,} multiply-adds")
        for name, entry in card["formats"].items():
            if "error" in entry:
                print(f"  {name:6} failed: {entry['error']}")
            else:
                latency = f"{entry['latency_median_ms']:.3f} ms" if "latency_median_ms" in entry else "-"
                print(f"  {name:6} test accuracy {entry['test_accuracy']:.4f}  latency {latency:>9}  {entry['file']}")
        print(f"  model card: {os.path.join(item.workdir, 'model_card.md')}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from results.dashboard import prepare, serve

    if not 0 < args.port < 65536:
        raise ConfigError(f"port={args.port} must be in 1..65535")
    config, study = _existing_study(args)
    prepare(study)
    url = f"http://{args.host}:{args.port}/"
    try:
        serve(
            config.storage_url,
            host=args.host,
            port=args.port,
            on_ready=lambda: print(f"optuna-dashboard for study {config.study_name!r}: {url}  (Ctrl-C stops it)", flush=True),
        )
    except OSError as error:
        raise ConfigError(f"cannot serve on {args.host}:{args.port}: {error.strerror}") from None
    print("\ndashboard stopped", flush=True)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    import tempfile

    from nas import calibrate
    from nas.worker import WORKER_LOG
    from search_spaces import SpecError, reference, validate

    config = load_config(overrides=_config_flags(args))
    names = [n.strip() for n in args.references.split(",")] if args.references else calibrate.known_names()
    for name in names:
        if name not in calibrate.known_names():
            raise ConfigError(f"reference {name!r} is unknown; known: {', '.join(calibrate.known_names())}")
    if not 8 <= args.input_size <= 1024:
        raise ConfigError(f"input-size={args.input_size} must be in 8..1024")
    if args.target_ms is not None and args.target_ms <= 0:
        raise ConfigError(f"target-ms={args.target_ms:g} must be a positive number")
    device, fingerprint = _device_and_fingerprint(config)
    layout = calibrate.layout_for(args.input_size)
    num_classes = 1000 if layout == "imagenet" else 10
    print(f"calibrating on {_describe(fingerprint)}")
    size = f"{args.input_size}x{args.input_size}"
    print(f"{len(names)} references at {size}, {layout} strides, {num_classes} classes\n", flush=True)
    for name in names:  # fail fast on a size the reference cannot take, before any conversion
        try:
            validate(reference(name, layout=layout), args.input_size)
        except SpecError as error:
            raise ConfigError(f"reference {name} does not fit input-size={args.input_size}: {error}") from None

    def on_row(row) -> None:
        figure = f"{row.latency_median_ms:.3f} ms" if not row.error else f"failed: {row.error}"
        print(f"  {row.name:<17} {figure}", flush=True)

    with tempfile.TemporaryDirectory() as workdir:
        rows = calibrate.calibrate(
            device=device,
            input_hw=args.input_size,
            num_classes=num_classes,
            names=names,
            workdir=workdir,
            log_path=os.path.join(config.runs_dir, WORKER_LOG),
            on_row=on_row,
        )
    print(f"\n{calibrate.format_table(rows)}\n")
    print(calibrate.target_advice(rows))
    if args.target_ms is not None:
        measured = [r.latency_median_ms for r in rows if not r.error]
        warning = calibrate.target_warning(args.target_ms, measured, source="the references")
        print(warning or f"--target-ms {args.target_ms:g} lies within reach of the references here")
    path = calibrate.save(config.runs_dir, fingerprint, args.input_size, rows)
    print(f"saved: {path} (nas search checks its --target-ms against it)")
    return 0


def cmd_latency_fit(args: argparse.Namespace) -> int:
    import numpy as np

    from nas import latency_fit

    if args.samples < 0:
        raise ConfigError(f"samples={args.samples} must be >= 0")
    config = load_config(overrides=_config_flags(args))
    _, fingerprint = _device_and_fingerprint(config)
    print(f"latency model for {_describe(fingerprint)}", flush=True)
    if args.samples:
        print(f"measuring {args.samples} random architectures of {config.space} (width {config.width:g})", flush=True)

        def on_sample(k, spec, outcome) -> None:
            figure = f"{outcome.latency['latency_median_ms']:.3f} ms" if outcome.status == "ok" else f"failed: {outcome.reason}"
            seconds = sum((outcome.timings or {}).get(p, 0.0) for p in ("build_seconds", "convert_seconds", "measure_seconds"))
            print(f"  [{k:>3}/{args.samples}] {spec.arch_id}  {figure}  {seconds:.1f} s", flush=True)

        latency_fit.measure_samples(config, fingerprint, args.samples, seed=config.seed, on_sample=on_sample)
    report = latency_fit.fit(config, fingerprint["id"])
    path = latency_fit.save_model(config, report.model)
    if args.report:
        print("\n" + latency_fit.format_report(report))
        print(f"\n{'arch_id':<13} {'measured ms':>11} {'held-out ms':>11} {'error':>7}")
        for spec, measured, predicted in sorted(
            zip(report.specs, report.measured_ms, report.held_out_ms, strict=True), key=lambda item: item[1]
        ):
            print(f"{spec.arch_id:<13} {measured:>11.3f} {predicted:>11.3f} {100 * (predicted / measured - 1):>+6.1f}%")
    else:
        errors = np.abs(report.relative_errors)
        print(
            f"fitted on {len(report.specs)} architectures; held-out: {100 * report.within_10_percent:.0f} % within +-10 %, "
            f"median |error| {100 * np.median(errors):.1f} %  (--report for details)"
        )
    print(f"saved: {path}")
    return 0


def cmd_proxy_check(args: argparse.Namespace) -> int:
    import math

    from nas import proxy_check
    from trainers.cifar import DataError, check_cifar

    config = load_config(overrides=_config_flags(args))
    if args.archs < 0 or (args.archs == 0 and args.no_references):
        raise ConfigError(f"archs={args.archs}: nothing to check")
    proxy = proxy_check.Budget(config.train_images, config.epochs)
    available = 50_000 - config.val_images
    long_images = args.long_images or min(10 * proxy.train_images, available)
    long_epochs = args.long_epochs or math.ceil(10 * proxy.image_passes / long_images)
    for name, value in (("long-images", long_images), ("long-epochs", long_epochs)):
        if value < 1:
            raise ConfigError(f"{name}={value} must be at least 1")
    long = proxy_check.Budget(long_images, long_epochs)
    path = proxy_check.result_path(config)
    if args.show:
        records = proxy_check.load_records(path)
        if not any(proxy.label in r.results for r in records.values()):
            raise ConfigError(f"no saved proxy check at {path}")
        print(f"{path}\n\n{proxy_check.format_check(records, proxy, long)}")
        return 0
    try:
        check_cifar(config.dataset, data_dir=config.data_dir)
    except DataError as error:
        raise ConfigError(str(error)) from None
    print(
        f"proxy {proxy.label} vs long {long.label} (images x epochs, {long.image_passes / proxy.image_passes:.1f}x the "
        f"image-passes); {args.archs} random {config.space} architectures" + ("" if args.no_references else " + the references"),
        flush=True,
    )
    print(f"results: {path} (re-run the same command to resume)", flush=True)

    def on_result(record, budget, result) -> None:
        figure = f"accuracy {result['accuracy']:.4f}" if "accuracy" in result else f"failed: {result['error']}"
        print(f"  {record.name:<16} {budget.label:>10}  {figure}  {result['seconds']:.0f} s", flush=True)

    path, records = proxy_check.run_check(
        config, count=args.archs, proxy=proxy, long=long, with_references=not args.no_references, on_result=on_result
    )
    print(f"\n{proxy_check.format_check(records, proxy, long)}")
    return 0


COMMANDS = {
    "search": cmd_search,
    "front": cmd_front,
    "report": cmd_report,
    "retrain": cmd_retrain,
    "export": cmd_export,
    "dashboard": cmd_dashboard,
    "calibrate": cmd_calibrate,
    "latency-fit": cmd_latency_fit,
    "proxy-check": cmd_proxy_check,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        import optuna

        # ERROR: Optuna's per-trial failure warnings repeat what the trial lines already say
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        return COMMANDS[args.command](args)
    except ConfigError as error:
        print(f"nas: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("\nnas: interrupted; finished trials are kept, run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
