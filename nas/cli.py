"""The `nas` command. Thin: parse flags, build a config, call one library function, print.

Bad input exits with code 2 and one line naming the bad value; no traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time

from nas.config import FIELD_NAMES, ConfigError, SearchConfig, field_default, load_config
from search_spaces import INPUT_SHAPE
from search_spaces.files import NATIVE_LOG

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
    g.add_argument("--latency-threads", type=int, help=f"interpreter threads (default {field_default('latency_threads'):g})")
    g.add_argument("--latency-precision", help="fp32 (default) or int8 (full-integer model, as shipped)")
    g.add_argument("--latency-warmup", type=int, help=f"untimed runs first (default {field_default('latency_warmup'):g})")
    g.add_argument("--latency-runs", type=int, help=f"timed runs, in 5 rounds (default {field_default('latency_runs'):g})")
    g.add_argument(
        "--latency-max-cv",
        type=_number,
        help=f"re-measure when the rounds' spread exceeds this (default {field_default('latency_max_cv'):g})",
    )
    g.add_argument("--latency-pin-core", type=int, help="host: pin the measurement to this CPU core")
    g.add_argument(
        "--device-timeout",
        dest="device_timeout_s",
        type=_number,
        help=f"seconds per device command (default {field_default('device_timeout_s'):g})",
    )
    g.add_argument("--adb", dest="adb_path", help="adb binary (default: adb on PATH)")
    g.add_argument("--benchmark-binary", help="benchmark_model on the phone (default /data/local/tmp/benchmark_model)")
    g.add_argument("--delegate", help="adb: xnnpack (default), none, gpu or nnapi")
    g.add_argument("--latency-regex", help="cmd: regex whose group 1 is a latency in ms (default: a number before 'ms')")


def _add_selection_flags(p: argparse.ArgumentParser) -> None:
    _add_study_flags(p)
    p.add_argument("--trial", type=int, action="append", help="a trial number of --study (repeat for several)")
    p.add_argument("--front", action="store_true", help="every member of --study's Pareto front (best reward first)")
    p.add_argument("--top", type=int, help="with --front: only the K best by reward")
    p.add_argument(
        "--arch", action="append", help="an architecture string or a reference name (mnasnet-a1, ...; repeat for several)"
    )
    p.add_argument("--dataset", help="cifar10 or cifar100 (default: the study's; cifar10 for --arch alone)")
    p.add_argument("--data-dir", help="folder holding the official CIFAR folders")
    p.add_argument("--out", help="working folder of one model (default: runs/retrained/<dataset>/<recipe_id>/<arch_id>/)")


def _selection(args: argparse.Namespace):
    from nas.api import Selection

    return Selection(
        study=args.study_name,
        storage=args.storage,
        runs_dir=args.runs_dir or SearchConfig.runs_dir,
        trials=tuple(args.trial or ()),
        front=args.front,
        top=args.top,
        archs=tuple(args.arch or ()),
        dataset=args.dataset,
        data_dir=args.data_dir,
        out=getattr(args, "out", None),
    )


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
    search.add_argument(
        "--strategy",
        "--sampler",
        dest="strategy",
        help="tpe, nsga2, random or latency-aware (train only candidates that can move the front; "
        f"default {field_default('strategy')})",
    )
    search.add_argument(
        "--space",
        help="mnasnet (default), mnasnet-mobilevit (adds MobileViT blocks where the map is 8x8 or smaller) or nb201 "
        "(NAS-Bench-201's cells from published tables, with --device table:FILE:COLUMN)",
    )
    search.add_argument("--width", type=_number, help=f"width multiplier of the skeleton (default {field_default('width'):g})")
    search.add_argument(
        "--stem-stride",
        type=int,
        help="1 (default): the stem sees 32x32 and block 2 downsamples; 2: MobileNetV2's stride-2 stem (cheaper, less accurate)",
    )
    search.add_argument("--trials", type=int, help=f"trials to add to the study (default {field_default('trials'):g})")
    search.add_argument("--timeout", dest="timeout_s", type=_number, help="stop starting trials after this many seconds")
    search.add_argument("--seed", type=int, help=f"sampler and training seed (default {field_default('seed'):g})")
    search.add_argument(
        "--seed-references", action="store_true", default=None, help="evaluate the reference architectures' projections first"
    )
    search.add_argument("--dataset", help="cifar10 (default), cifar100, or imagenet16 (nb201 only)")
    search.add_argument(
        "--data-dir", help="folder holding cifar-10-batches-bin/ or -py/ (default: $NAS_DATA_DIR, ./data, ~/.keras/datasets)"
    )
    search.add_argument(
        "--train-images", type=int, help=f"proxy training images per epoch (default {field_default('train_images'):g})"
    )
    search.add_argument(
        "--val-images", type=int, help=f"held-out images carved from the training set (default {field_default('val_images'):g})"
    )
    search.add_argument("--epochs", type=int, help=f"proxy epochs (default {field_default('epochs'):g})")
    search.add_argument("--batch-size", type=int, help=f"proxy batch size (default {field_default('batch_size'):g})")
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
    search.add_argument(
        "--trials-per-worker",
        type=int,
        help=f"replace the worker process after this many trials (default {field_default('trials_per_worker'):g})",
    )
    search.add_argument(
        "--trial-timeout",
        dest="trial_timeout_s",
        type=_number,
        help="stop a measurement or training that takes longer than this many seconds "
        f"(default {field_default('trial_timeout_s'):g})",
    )
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
    _add_recipe_flags(export)  # the recipe names the retrained model to export
    _add_latency_flags(export)  # re-measure where the study measured: give it the search's --device flags

    compare = commands.add_parser(
        "compare",
        help="retrain found models and the references under one recipe; fp32/int8 accuracy and latency side by side",
    )
    _add_selection_flags(compare)
    compare.add_argument(
        "--references", help="comma-separated reference names (default: mobilenetv2-0.5,mnasnet-small,mnasnet-a1; '' for none)"
    )
    _add_recipe_flags(compare)
    _add_latency_flags(compare)

    calibrate = commands.add_parser(
        "calibrate", help="measure the reference architectures on the device; suggest a target latency"
    )
    calibrate.add_argument(
        "--input-size",
        type=int,
        default=INPUT_SHAPE[0],
        help=f"input side in pixels (default {INPUT_SHAPE[0]}; >= 128 uses the papers' strides)",
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
    latency_fit.add_argument("--width", type=_number, help=f"width multiplier (default {field_default('width'):g})")
    latency_fit.add_argument("--stem-stride", type=int, help="1 (default) or 2")
    latency_fit.add_argument("--seed", type=int, help=f"sampling seed (default {field_default('seed'):g})")
    latency_fit.add_argument("--report", action="store_true", help="print held-out error, rank agreement and every architecture")
    latency_fit.add_argument("--runs-dir", help="where the latency cache and model live (default: runs)")
    _add_latency_flags(latency_fit)

    check = commands.add_parser(
        "proxy-check", help="does the proxy budget rank architectures like a 10x longer one? (Kendall tau, Spearman rho)"
    )
    check.add_argument("--archs", type=int, default=12, help="random architectures of the space (default 12)")
    check.add_argument("--no-references", action="store_true", help="leave out the reference architectures")
    check.add_argument("--references", help="comma-separated reference names to check (default: all the space can hold)")
    check.add_argument("--trial", type=int, action="append", help="with --study: check this trial too (repeat for several)")
    check.add_argument("--train-images", type=int, help="proxy: training images (default: the search's, 8000)")
    check.add_argument("--epochs", type=int, help="proxy: epochs (default 1)")
    check.add_argument("--long-images", type=int, help="long budget: training images (default: 10x the proxy's, at most 45000)")
    check.add_argument("--long-epochs", type=int, help="long budget: epochs (default: enough for 10x the proxy's image-passes)")
    check.add_argument(
        "--final-epochs",
        type=int,
        help="long budget: the retraining recipe with this many epochs on the full training split (>= 15 recommended)",
    )
    check.add_argument("--study", dest="study_name", help="check members of this study spread over its front (not random ones)")
    check.add_argument("--storage", help="the study's storage (default: sqlite:///runs/<study>/study.db)")
    check.add_argument("--out", help="result file (default: runs/proxy-check/<settings>.json)")
    check.add_argument("--show", action="store_true", help="print the saved result of this check without training")
    for flag in ("--space", "--dataset", "--data-dir", "--runs-dir"):
        check.add_argument(flag)
    check.add_argument("--width", type=_number)
    check.add_argument("--stem-stride", type=int)
    check.add_argument("--val-images", type=int)
    check.add_argument("--batch-size", type=int)
    check.add_argument("--seed", type=int)

    dashboard = commands.add_parser("dashboard", help="serve optuna-dashboard on an existing study's storage")
    _add_study_flags(dashboard)
    dashboard.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    dashboard.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    return parser


def _print_trial(trial, done: int, total: int, *, started: float, chance: float) -> None:
    from results.record import TrialRecord

    record = TrialRecord.from_trial(trial)
    elapsed = time.perf_counter() - started
    eta = f"{elapsed / done * (total - done) / 60:.1f} min" if done else "-"  # a resumed run may begin with an answer
    acc, lat, reward = record.accuracy, record.latency_median_ms, record.reward
    figures = (
        f"acc {acc:.3f}  lat {lat:.3f} ms  reward {reward:.4f}"
        if acc is not None and lat is not None and reward is not None
        else f"{trial.state.name.lower()}: {record.fail_reason}"
    )
    tags = f" (reused trial {record.reused_from}: not counted)" if record.reused_from is not None else ""
    tags += f" (seed: {record.seeded_from})" if record.seeded_from else ""
    tags += f" (retry of {record.retry_of})" if record.retry_of is not None else ""
    tags += " (within noise of chance)" if acc is not None and acc <= chance else ""
    print(
        f"[{done:>3}/{total}] trial {trial.number:>3}  {record.arch_id or '?'}  {figures}  "
        f"{record.trial_seconds or 0:.1f} s{tags}  | elapsed {elapsed / 60:.1f} min, eta {eta}",
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
    from nas.api import search
    from results.pareto import format_front
    from trainers.proxy import chance_ceiling

    config = load_config(toml_path=args.config, overrides=_config_flags(args))
    started = time.perf_counter()
    chance = 0.0 if config.is_tabular else chance_ceiling(num_classes=config.num_classes, val_images=config.val_images)

    def on_start(study, fingerprint) -> None:
        finished = len(study.get_trials(deepcopy=False))
        print(
            f"study {config.study_name!r} in {config.storage_url}: {finished} earlier trials; "
            f"adding {config.trials} new architectures"
        )
        print(
            f"mode {config.mode}, strategy {config.strategy}, target {config.target_ms:g} ms, alpha {config.reward_alpha:g}, "
            f"beta {config.reward_beta:g}; proxy {config.train_images} images x {config.epochs} epochs"
        )
        print(f"latency on: {_describe(fingerprint)}", flush=True)

    summary = search(config, on_start=on_start, on_trial=lambda t, d, n: _print_trial(t, d, n, started=started, chance=chance))
    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(summary.info.counts.items()))
    reused = f" (and {summary.reused_trials} re-proposed, answered from the study)" if summary.reused_trials else ""
    print(f"\n{summary.new_trials} new architectures{reused} in {summary.wall_seconds / 60:.1f} min; study now holds {counts}")
    if summary.converged:
        print(f"stopped early: the {config.strategy} sampler proposed only architectures the study already knows")
    trained = [r.accuracy for r in summary.info.rows if r.measured and r.reused_from is None]
    noise = sum(a <= chance for a in trained)
    if trained and noise > len(trained) / 2:
        print(
            f"warning: {noise} of {len(trained)} trials scored within noise of chance (<= {chance:.3f} on {config.val_images} "
            f"images, {config.num_classes} classes): this proxy budget ranks noise here; raise --train-images or --epochs"
        )
    print(f"\nPareto front (accuracy vs latency) of {config.study_name!r}:\n{format_front(summary.info)}")
    print(f"\nall trials: {summary.csv_path}")
    study = _study_words(config)
    print(f"look at it:  nas report {study}   (HTML)   |   nas dashboard {study}   (live)")
    print(f"print again: nas front {study}")
    if not config.is_tabular:  # a table's cells have nothing to retrain
        data = f" --data-dir {shlex.quote(config.data_dir)}" if config.data_dir else ""
        print(f"deploy:      nas retrain {study} --front --top 3{data}")
        print(f"             nas export {study} --front --top 3{data}")
        print(f"prove it:    nas compare {study} --front --top 3{data}   (retrained against the references)")
    return 0


def _study_words(config: SearchConfig) -> str:
    """The flags that find this study again."""
    words = ["--study", config.study_name]
    if config.storage:
        words += ["--storage", config.storage]
    if config.runs_dir != SearchConfig.runs_dir:
        words += ["--runs-dir", config.runs_dir]
    return " ".join(shlex.quote(w) for w in words)


def _existing_study(args: argparse.Namespace):
    """(config, study) for the commands that read a study; a missing one is bad input."""
    from nas.api import open_study

    return open_study(args.study_name, storage=args.storage, runs_dir=args.runs_dir or SearchConfig.runs_dir)


def cmd_front(args: argparse.Namespace) -> int:
    from results.pareto import format_front, pareto_info

    _, study = _existing_study(args)
    print(format_front(pareto_info(study)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from nas.api import report

    paths = report(args.study_name, storage=args.storage, runs_dir=args.runs_dir or SearchConfig.runs_dir, out=args.out)
    print(f"report: {paths['report.html']}")
    print(f"front:  {paths['front.csv']}, {paths['front.json']}")
    return 0


def _print_epoch(epoch: int, epochs: int, record: dict) -> None:
    done = int(30 * (epoch + 1) / epochs)
    print(
        f"  epoch {epoch + 1:>3}/{epochs} [{'#' * done}{'.' * (30 - done)}] loss {record['loss']:.3f}  "
        f"val acc {record['val_accuracy']:.3f}  {record['seconds']:.0f} s",
        flush=True,
    )


def _print_model(k: int, total: int, item) -> None:
    print(f"[{k}/{total}] {item.name}: {item.spec.arch_id} in {item.workdir}")
    print(f"  {item.spec.to_string()}", flush=True)


def cmd_retrain(args: argparse.Namespace) -> int:
    from nas.api import retrain

    recipe = _recipe(args)
    print(f"recipe {recipe.recipe_id}: {recipe.describe()}", flush=True)
    for _item, result in retrain(_selection(args), recipe, on_model=_print_model, on_epoch=_print_epoch):
        print(
            f"  best validation accuracy {result.val_accuracy:.4f} (epoch {result.best_epoch}); test accuracy "
            f"{result.test_accuracy:.4f}; {result.train_seconds / 60:.1f} min",
            flush=True,
        )
    print(f"\nexport: nas export {' '.join(_selection_words(args) + _recipe_words(args))}")
    return 0


def _selection_words(args: argparse.Namespace) -> list[str]:
    """The flags that choose the same models again (for the next-step commands)."""
    words = []
    for flag, name in (("study_name", "--study"), ("storage", "--storage"), ("runs_dir", "--runs-dir"), ("top", "--top")):
        if getattr(args, flag, None) is not None:
            words += [name, str(getattr(args, flag))]
    for number in getattr(args, "trial", None) or ():
        words += ["--trial", str(number)]
    for arch in getattr(args, "arch", None) or ():
        words += ["--arch", shlex.quote(arch)]
    for flag, name in (("dataset", "--dataset"), ("data_dir", "--data-dir"), ("out", "--out")):
        if getattr(args, flag, None) is not None:
            words += [name, shlex.quote(str(getattr(args, flag)))]
    return words + (["--front"] if getattr(args, "front", False) else [])


def _recipe_words(args: argparse.Namespace) -> list[str]:
    from trainers.full import RECIPE_FIELDS

    words = []
    for name in RECIPE_FIELDS:
        value = getattr(args, name, None)
        if value is True:
            words.append(f"--{name.replace('_', '-')}")
        elif value is not None:
            words += [f"--{name.replace('_', '-')}", str(value)]
    return words


def cmd_export(args: argparse.Namespace) -> int:
    from nas.api import export

    device_config = load_config(overrides=_config_flags(args))
    for item, card in export(_selection(args), _recipe(args), device_config=device_config, formats=args.formats):
        print(f"{card['arch_id']}: {card['params_count']:,} params, {card['multiply_adds']:,} multiply-adds")
        for name, entry in card["formats"].items():
            if "error" in entry:
                print(f"  {name:6} failed: {entry['error']}")
            else:
                latency = f"{entry['latency_median_ms']:.3f} ms" if "latency_median_ms" in entry else "-"
                print(f"  {name:6} test accuracy {entry['test_accuracy']:.4f}  latency {latency:>9}  {entry['file']}")
        print(f"  model card: {os.path.join(item.workdir, 'model_card.md')}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from nas.api import compare
    from results.compare import format_table

    recipe = _recipe(args)
    references = None if args.references is None else tuple(n for n in args.references.split(",") if n)
    print(f"recipe {recipe.recipe_id}: {recipe.describe()}", flush=True)
    records, path = compare(
        _selection(args),
        recipe,
        references=references,
        device_config=load_config(overrides=_config_flags(args)),
        on_model=_print_model,
        on_epoch=_print_epoch,
    )
    print(f"\n{format_table(records)}\n\nrecords: {path}")
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
    from nas import calibration as calibrate
    from nas.api import calibrate as run_calibration

    config = load_config(overrides=_config_flags(args))
    if args.target_ms is not None and args.target_ms <= 0:
        raise ConfigError(f"target-ms={args.target_ms!r} must be a positive number")
    names = [n.strip() for n in args.references.split(",")] if args.references else None

    def on_row(row) -> None:
        figure = f"{row.latency_median_ms:.3f} ms" if not row.error else f"failed: {row.error}"
        print(f"  {row.name:<{calibrate.NAME_WIDTH}} {figure}", flush=True)

    print(f"calibrating at {args.input_size}x{args.input_size} on {config.device}", flush=True)
    rows, fingerprint, path = run_calibration(config, input_size=args.input_size, names=names, on_row=on_row)
    print(f"measured on {_describe(fingerprint)}")
    print(f"\n{calibrate.format_table(rows)}\n")
    print(calibrate.target_advice(rows))
    if args.target_ms is not None:
        measured = [r.latency_median_ms for r in rows if not r.error]
        warning = calibrate.target_warning(args.target_ms, measured, source="the references")
        print(warning or f"--target-ms {args.target_ms:g} lies within reach of the references here")
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

        def on_sample(k, spec, answer) -> None:
            if isinstance(answer, str):
                print(f"  [{k:>3}/{args.samples}] {spec.arch_id}  failed: {answer}", flush=True)
                return
            seconds = sum(answer.timings.get(p, 0.0) for p in ("build_seconds", "convert_seconds", "measure_seconds"))
            print(f"  [{k:>3}/{args.samples}] {spec.arch_id}  {answer.median_ms:.3f} ms  {seconds:.1f} s", flush=True)

        latency_fit.measure_samples(config, fingerprint, args.samples, seed=config.seed, on_sample=on_sample)
    report = latency_fit.fit(config, fingerprint)
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
    study = None
    if args.study_name:  # the study's own space, data and proxy budget, unless a flag says otherwise
        import dataclasses

        from results.record import study_settings

        _, study = _existing_study(args)
        stored = study_settings(study)
        given = {k for k, v in _config_flags(args).items() if v is not None}
        inherited = {k: stored[k] for k in config.study_identity() if k in stored and k not in given and k != "mode"}
        config = dataclasses.replace(config, **inherited)
    proxy = proxy_check.Budget(config.train_images, config.epochs)
    available = 50_000 - config.val_images
    long_images = args.long_images if args.long_images is not None else min(10 * proxy.train_images, available)
    long_epochs = args.long_epochs if args.long_epochs is not None else math.ceil(10 * proxy.image_passes / max(1, long_images))
    for name, value in (("long-images", long_images), ("long-epochs", long_epochs)):
        if value < 1:
            raise ConfigError(f"{name}={value} must be at least 1")
    long = proxy_check.Budget(long_images, long_epochs)
    if args.final_epochs is not None:
        from trainers.full import Recipe

        if args.final_epochs < 1:
            raise ConfigError(f"final-epochs={args.final_epochs} must be at least 1")
        long = proxy_check.FinalBudget(Recipe(epochs=args.final_epochs))
    path = args.out or proxy_check.result_path(config)
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
    if isinstance(long, proxy_check.FinalBudget):
        against = f"the retraining recipe ({long.recipe.describe()}; final validation accuracy)"
    else:
        against = f"{long.label} images x epochs ({long.image_passes / proxy.image_passes:.1f}x the image-passes)"
    trials = tuple(args.trial or ())
    if trials and study is None:
        raise ConfigError("--trial needs --study")
    if args.no_references:
        references: tuple[str, ...] = ()
    elif args.references is not None:
        references = tuple(n.strip() for n in args.references.split(",") if n.strip())
        unknown = [n for n in references if n not in proxy_check.REFERENCES]
        if unknown:
            raise ConfigError(f"reference {unknown[0]!r} is unknown; known: {', '.join(proxy_check.REFERENCES)}")
    else:
        references = proxy_check.default_references(config)
    if study:
        given = f"trials {', '.join(map(str, trials))} and " if trials else ""
        which = f"{given}{args.archs} more of study {args.study_name!r} spread over its latency range"
    else:
        which = f"{args.archs} random {config.space} architectures"
    print(f"proxy {proxy.label} vs {against}; {which}" + (f" + {', '.join(references)}" if references else ""), flush=True)
    print(f"results: {path} (re-run the same command to resume)", flush=True)

    def on_result(record, budget, result) -> None:
        figure = f"accuracy {result['accuracy']:.4f}" if "accuracy" in result else f"failed: {result['error']}"
        print(f"  {record.name:<16} {budget.label:>10}  {figure}  {result['seconds']:.0f} s", flush=True)

    path, records = proxy_check.run_check(
        config,
        count=args.archs,
        proxy=proxy,
        long=long,
        references=references,
        study=study,
        trials=trials,
        path=path,
        on_result=on_result,
        on_epoch=_print_epoch if args.final_epochs else None,
    )
    print(f"\n{proxy_check.format_check(records, proxy, long)}")
    return 0


#: commands that import TensorFlow in their own process (the others do it in workers, which log already)
IN_PROCESS_TENSORFLOW = ("retrain", "export", "compare", "proxy-check")

COMMANDS = {
    "search": cmd_search,
    "front": cmd_front,
    "report": cmd_report,
    "retrain": cmd_retrain,
    "export": cmd_export,
    "compare": cmd_compare,
    "dashboard": cmd_dashboard,
    "calibrate": cmd_calibrate,
    "latency-fit": cmd_latency_fit,
    "proxy-check": cmd_proxy_check,
}


def _native_output_to_log(runs_dir: str) -> None:
    """Point file descriptor 2 (where C++ libraries write) at runs/nas.log, keeping Python's
    sys.stderr, and so this command's own messages, on the terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        os.makedirs(runs_dir, exist_ok=True)
        log_fd = os.open(os.path.join(runs_dir, NATIVE_LOG), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        return  # an unwritable log is no reason to fail the command: the chatter stays visible
    terminal = os.dup(2)
    sys.stderr.flush()
    sys.stderr = os.fdopen(terminal, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")
    os.dup2(log_fd, 2)
    os.close(log_fd)
    for name in ("absl", "tensorflow", "keras"):  # their Python warnings are the same chatter
        logging.getLogger(name).setLevel(logging.ERROR)


#: what survives a Ctrl-C or SIGTERM, per command
KEPT_WHEN_INTERRUPTED = {
    "search": "finished trials",
    "retrain": "finished epochs and models",
    "compare": "finished epochs and models",
    "export": "finished models",
    "proxy-check": "finished architectures",
    "latency-fit": "finished measurements",
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in IN_PROCESS_TENSORFLOW and getattr(args, "runs_dir", None) != "/dev/null":
        _native_output_to_log(getattr(args, "runs_dir", None) or SearchConfig.runs_dir)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        import optuna

        # ERROR: Optuna's per-trial failure warnings repeat what the trial lines already say
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        from nas.searching import terminate_as_interrupt

        with terminate_as_interrupt():
            return COMMANDS[args.command](args)
    except ConfigError as error:
        print(f"nas: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        kept = KEPT_WHEN_INTERRUPTED.get(args.command)
        print(f"\nnas: interrupted{'; ' + kept + ' are kept, run the same command to resume' if kept else ''}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
