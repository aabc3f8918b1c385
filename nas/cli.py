"""The `nas` command: one `Command` per subcommand in `COMMANDS`, each keeping its flags and its
action together (as Optuna's CLI does). Flags come from the config dataclasses' fields (`nas.flags`);
an action builds configs, calls one function of `nas.api` and prints. Bad input exits with code 2
and one line naming the bad value; no traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from nas import api, progress
from nas.config import LATENCY_FIELDS, SEARCH_FIELDS, STUDY_FIELDS, ConfigError, DeviceConfig, SearchConfig, load_config
from nas.flags import EXIT_BAD_INPUT, Parser, add_fields, number, values_of, words_of
from search_spaces import INPUT_SHAPE


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    flags: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    in_process_tensorflow: bool = False  # its native chatter goes to runs/nas.log (the workers log their own)
    kept_when_interrupted: str = ""  # what a Ctrl-C or SIGTERM keeps


# -- shared pieces ---------------------------------------------------------------------------


def _study_flags(p) -> None:
    add_fields(p, SearchConfig, STUDY_FIELDS)


def _latency_flags(p) -> None:
    add_fields(p, DeviceConfig, LATENCY_FIELDS, title="latency measurement")


def _models_flags(p) -> None:
    from trainers.full import RECIPE_FIELDS, Recipe

    add_fields(p, api.Selection, tuple(api.Selection.__dataclass_fields__))
    add_fields(p, Recipe, RECIPE_FIELDS, title="retraining recipe")


def _config(args, *, besides=None) -> SearchConfig:
    """The search's settings from the flags; `besides`: the command's own settings class, whose fields
    keep their own meaning where a name is shared (proxy-check's `--trial` fills its `trials`)."""
    return load_config(toml_path=getattr(args, "config", None), overrides=_search_values(args, besides))


def _search_values(args, besides=None) -> dict:
    own = {f.name for f in dataclasses.fields(besides)} if besides else set()
    return {k: v for k, v in values_of(args, SearchConfig).items() if k not in own}


def _device_config(args) -> DeviceConfig:
    """The measuring settings of a command that is not a search (its other flags are the recipe's)."""
    return DeviceConfig(**values_of(args, DeviceConfig))


def _selection(args):
    return api.Selection(**values_of(args, api.Selection))


def _recipe(args):
    from trainers.full import Recipe

    try:
        return Recipe(**values_of(args, Recipe))
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _existing_study(args):
    return api.open_study(args.study_name, storage=args.storage, runs_dir=args.runs_dir or SearchConfig.runs_dir)


def _say(text: str) -> None:
    print(text, flush=True)


def _epoch(epoch: int, epochs: int, record: dict) -> None:
    _say(progress.epoch_line(epoch, epochs, record))


def _model(k: int, total: int, item) -> None:
    _say(progress.model_lines(k, total, item))


# -- search, front, report, dashboard --------------------------------------------------------


def _search_flags(p) -> None:
    p.add_argument("--config", help="TOML file with any of these settings (flags win)")
    add_fields(p, SearchConfig, STUDY_FIELDS + SEARCH_FIELDS)
    _latency_flags(p)
    p.add_argument("-v", "--verbose", action="store_true", help="log details")


def cmd_search(args) -> int:
    from nas.config import read_toml
    from nas.searching import study_evaluations
    from nas.storage import with_study_budget
    from trainers.proxy import chance_ceiling, default_budget

    given = set(_search_values(args)) | (set(read_toml(args.config)) if args.config else set())
    default = _config(args)
    config = with_study_budget(default, given=given)
    if config != default:  # a default changed since the study began
        images, epochs = default_budget(config.dataset)
        _say(
            f"proxy: {config.train_images} images x {config.epochs} epochs, as the study ran (a new {config.dataset} study "
            f"trains {images} x {epochs} by default)"
        )
    started = time.perf_counter()
    chance = 0.0 if config.is_tabular else chance_ceiling(num_classes=config.num_classes, val_images=config.val_images)
    done_before = 0  # of a study-wide budget, what earlier runs and other workers had done when this one began

    def on_start(study, fingerprint: dict) -> None:
        nonlocal done_before
        if config.study_trials is not None:
            done_before = study_evaluations(study.get_trials(deepcopy=False))
        _say(progress.search_header(config, study, fingerprint))

    def on_trial(trial, done: int, total: int) -> None:
        elapsed_s = time.perf_counter() - started
        print(progress.trial_line(trial, done, total, elapsed_s=elapsed_s, chance=chance, done_before=done_before), flush=True)

    summary = api.search(config, on_start=on_start, on_trial=on_trial)
    print(progress.search_summary(summary, config, chance=chance))
    return 0


def cmd_front(args) -> int:
    from results.pareto import format_front, pareto_info

    _, study = _existing_study(args)
    print(format_front(pareto_info(study)))
    return 0


def _report_flags(p) -> None:
    _study_flags(p)
    p.add_argument("--out", help="output folder (default: runs/<study>/)")


def cmd_report(args) -> int:
    paths = api.report(args.study_name, storage=args.storage, runs_dir=args.runs_dir or SearchConfig.runs_dir, out=args.out)
    print(f"report: {paths['report.html']}\nfront:  {paths['front.csv']}, {paths['front.json']}")
    return 0


def _dashboard_flags(p) -> None:
    _study_flags(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")


def cmd_dashboard(args) -> int:
    from results.dashboard import prepare, serve

    if not 0 < args.port < 65536:
        raise ConfigError(f"port={args.port} must be in 1..65535")
    config, study = _existing_study(args)
    prepare(study)
    ready = f"optuna-dashboard for study {config.study_name!r}: http://{args.host}:{args.port}/  (Ctrl-C stops it)"
    try:
        serve(config.storage_url, host=args.host, port=args.port, on_ready=lambda: _say(ready))
    except OSError as error:
        raise ConfigError(f"cannot serve on {args.host}:{args.port}: {error.strerror}") from None
    print("\ndashboard stopped", flush=True)
    return 0


# -- retrain, export, compare ----------------------------------------------------------------


def cmd_retrain(args) -> int:
    from trainers.full import RECIPE_FIELDS, Recipe

    recipe = _recipe(args)
    _say(f"recipe {recipe.recipe_id}: {recipe.describe()}")
    for _item, result in api.retrain(_selection(args), recipe, on_model=_model, on_epoch=_epoch):
        _say(progress.retrain_line(result))
    again = words_of(args, api.Selection, tuple(api.Selection.__dataclass_fields__)) + words_of(args, Recipe, RECIPE_FIELDS)
    print(f"\nexport: nas export {' '.join(again)}")
    return 0


def _export_flags(p) -> None:
    _models_flags(p)  # the recipe names the retrained model to export
    p.add_argument("--formats", nargs="+", choices=("fp32", "fp16", "int8"), help="TFLite formats (default: all three)")
    _latency_flags(p)  # re-measure where the study measured: give it the search's --device flags


def cmd_export(args) -> int:
    for item, card in api.export(_selection(args), _recipe(args), device_config=_device_config(args), formats=args.formats):
        _say(progress.export_lines(item, card))
    return 0


def _compare_flags(p) -> None:
    _models_flags(p)
    p.add_argument(
        "--references", help="comma-separated reference names (default: mobilenetv2-0.5,mnasnet-small,mnasnet-a1; '' for none)"
    )
    _latency_flags(p)


def cmd_compare(args) -> int:
    from results.compare import format_table

    recipe = _recipe(args)
    references = None if args.references is None else tuple(n for n in args.references.split(",") if n)
    _say(f"recipe {recipe.recipe_id}: {recipe.describe()}")
    device = _device_config(args)
    records, path = api.compare(
        _selection(args), recipe, references=references, device_config=device, on_model=_model, on_epoch=_epoch
    )
    print(f"\n{format_table(records)}\n\nrecords: {path}")
    return 0


# -- calibrate, latency-fit, proxy-check -----------------------------------------------------


def _calibrate_flags(p) -> None:
    help_size = f"input side in pixels (default {INPUT_SHAPE[0]}; >= 128 uses the papers' strides)"
    p.add_argument("--input-size", type=int, default=INPUT_SHAPE[0], help=help_size)
    p.add_argument("--references", help="comma-separated subset (default: all)")
    p.add_argument("--target-ms", type=number, help="say where this target lies against the references")
    p.add_argument("--runs-dir", help="where calibration.json is kept (default: runs)")
    _latency_flags(p)


def cmd_calibrate(args) -> int:
    config = _config(args)  # validates --target-ms too
    target = args.target_ms
    names = [n.strip() for n in args.references.split(",")] if args.references else None

    _say(f"calibrating at {args.input_size}x{args.input_size} on {config.device}")
    on_row = lambda row: _say(progress.calibration_line(row))  # noqa: E731
    rows, fingerprint, path = api.calibrate(
        config.device_config, input_size=args.input_size, names=names, runs_dir=config.runs_dir, on_row=on_row
    )
    print(progress.calibration_summary(rows, fingerprint, target_ms=target, path=path))
    return 0


def _latency_fit_flags(p) -> None:
    p.add_argument("--samples", type=int, default=0, help="first measure this many random architectures of the space")
    p.add_argument("--report", action="store_true", help="print held-out error, rank agreement and every architecture")
    add_fields(p, SearchConfig, ("space", "width", "stem_stride", "seed", "runs_dir"))
    _latency_flags(p)


def cmd_latency_fit(args) -> int:
    from nas import latency_fit

    config = _config(args)

    def on_start(fingerprint) -> None:
        _say(f"latency model for {progress.device_line(fingerprint)}")
        if args.samples:
            print(f"measuring {args.samples} random architectures of {config.space} (width {config.width:g})", flush=True)

    on_sample = lambda k, spec, answer: _say(progress.sample_line(k, args.samples, spec, answer))  # noqa: E731
    report, path = api.latency_fit(config, samples=args.samples, on_start=on_start, on_sample=on_sample)
    print("\n" + (latency_fit.format_report(report, every_architecture=True) if args.report else latency_fit.summarize(report)))
    print(f"saved: {path}")
    return 0


def _proxy_check_flags(p) -> None:
    from nas.proxy_check import CheckSettings

    add_fields(p, CheckSettings, tuple(CheckSettings.__dataclass_fields__))
    p.add_argument("--no-references", dest="references", action="store_const", const="", help="leave out the references")
    add_fields(p, SearchConfig, (*STUDY_FIELDS, "space", "width", "stem_stride", "dataset", "data_dir"), title="what is checked")
    add_fields(p, SearchConfig, ("train_images", "epochs", "val_images", "batch_size", "seed"), title="the proxy budget")
    add_fields(p, SearchConfig, ("trial_timeout_s",))  # a long budget on a loaded machine outlasts the default


def cmd_proxy_check(args) -> int:
    from nas import proxy_check

    settings = proxy_check.CheckSettings(**values_of(args, proxy_check.CheckSettings))
    study = _existing_study(args)[1] if args.study_name else None
    given = set(_search_values(args, proxy_check.CheckSettings))
    plan = proxy_check.plan(_config(args, besides=proxy_check.CheckSettings), settings, study=study, given=given)
    if settings.show:
        _say(proxy_check.saved_report(plan))
        return 0
    print(f"{plan.describe()}\nresults: {plan.path} (re-run the same command to resume)", flush=True)

    on_result = lambda record, budget, result: _say(progress.check_line(record, budget, result))  # noqa: E731
    _, records = api.proxy_check(plan, on_result=on_result, on_epoch=_epoch if settings.final_epochs else None)
    print(f"\n{proxy_check.format_check(records, plan.proxy, plan.long)}")
    return 0


# -- the registry ----------------------------------------------------------------------------

MODELS = "finished epochs and models"
COMMANDS = (
    Command("search", "run (or resume) a search", _search_flags, cmd_search, kept_when_interrupted="finished trials"),
    Command("front", "print the Pareto front of an existing study", _study_flags, cmd_front),
    Command("report", "write an HTML report (plus front.csv/json) of an existing study", _report_flags, cmd_report),
    Command("retrain", "train chosen architectures with the full recipe (resumable)", _models_flags, cmd_retrain, True, MODELS),
    Command("export", "export retrained models: .keras, TFLite fp32/fp16/int8, model card", _export_flags, cmd_export, True,
            "finished models"),
    Command("compare", "retrain found models and the references under one recipe; accuracy and latency side by side",
            _compare_flags, cmd_compare, True, MODELS),
    Command("dashboard", "serve optuna-dashboard on an existing study's storage", _dashboard_flags, cmd_dashboard),
    Command("calibrate", "measure the reference architectures on the device; suggest a target latency", _calibrate_flags,
            cmd_calibrate),
    Command("latency-fit", "fit the latency model on the device's measurements; report its error", _latency_fit_flags,
            cmd_latency_fit, kept_when_interrupted="finished measurements"),
    Command("proxy-check", "does the proxy rank architectures like a longer budget or final accuracy?", _proxy_check_flags,
            cmd_proxy_check, True, "finished architectures"),
)  # fmt: skip
BY_NAME = {command.name: command for command in COMMANDS}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="nas", description="Multi-objective hardware-aware architecture search (MnasNet space, CIFAR, LiteRT).")
    subcommands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.flags(subcommands.add_parser(command.name, help=command.help, description=command.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = BY_NAME[args.command]
    if command.in_process_tensorflow and getattr(args, "runs_dir", None) != "/dev/null":
        from nas.native_log import redirect_native_output

        redirect_native_output(getattr(args, "runs_dir", None) or SearchConfig.runs_dir)
    level = logging.INFO if getattr(args, "verbose", False) else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        import optuna

        # ERROR: Optuna's per-trial failure warnings repeat what the trial lines already say
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        from nas.searching import terminate_as_interrupt

        with terminate_as_interrupt():
            return command.run(args)
    except ConfigError as error:
        print(f"nas: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        kept = command.kept_when_interrupted
        print(f"\nnas: interrupted{'; ' + kept + ' are kept, run the same command to resume' if kept else ''}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
