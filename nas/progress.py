"""What long work shows while it runs and when it ends: one line per trial, epoch or model, and a
summary a person reads at a glance. Pure: every function returns text; the CLI prints it."""

from __future__ import annotations

import os

from latency.measure import BUSY_CORES_WARNING, SLOW_SPELL_OVER_FAST
from results.formatting import number
from search_spaces.files import MODEL_CARD


def device_line(fingerprint: dict) -> str:
    threads, precision = fingerprint["threads"], fingerprint.get("precision", "fp32")
    return f"{fingerprint['device']} ({fingerprint['cpu']}), {fingerprint['runtime']}, {threads} thread(s), {precision}"


def epoch_line(epoch: int, epochs: int | None, record: dict) -> str:
    """One epoch's progress; `epochs` None while a timed run has not chosen its length."""
    done = int(30 * (epoch + 1) / epochs) if epochs else 0
    return (
        f"  epoch {epoch + 1:>3}/{epochs or '?'} [{'#' * done}{'.' * (30 - done)}] loss {record['loss']:.3f}  "
        f"val acc {number(record.get('val_accuracy'), '.3f')}  {record['seconds']:.0f} s"
    )


def model_lines(k: int, total: int, item) -> str:
    return f"[{k}/{total}] {item.name}: {item.spec.arch_id} in {item.workdir}\n  {item.spec.to_string()}"


def trial_line(trial, done: int, total: int, *, elapsed_s: float, chance: float, done_before: int = 0) -> str:
    """One finished trial: its figures (or why it has none), what it was, and the search's progress. `done` of
    `total` counts the study's trials when a budget is the study's (`--study-trials`); `done_before` of them
    were done when this process began, so the rate (and the eta) is of the `elapsed_s` since."""
    from results.record import TrialRecord

    record = TrialRecord.from_trial(trial)
    here = done - done_before  # a resumed run may begin with an answer: none done here yet
    eta = f"{elapsed_s / here * (total - done) / 60:.1f} min" if here > 0 else "-"
    acc, lat, reward = record.accuracy, record.latency_ms, record.reward
    figures = (
        f"acc {acc:.3f}  lat {lat:.3f} ms  reward {reward:.4f}"
        if acc is not None and lat is not None and reward is not None
        else f"{trial.state.name.lower()}: {record.fail_reason}"
    )
    tags = f" (reused trial {record.reused_from}: not counted)" if record.reused_from is not None else ""
    tags += f" (seed: {record.seeded_from})" if record.seeded_from else ""
    tags += f" (retry of {record.retry_of})" if record.retry_of is not None else ""
    tags += " (within noise of chance)" if acc is not None and acc <= chance else ""
    busy = record.latency.busy_cores if record.latency and record.reused_from is None else None
    tags += f" (timed beside {busy:.1f} busy cores)" if busy is not None and busy >= BUSY_CORES_WARNING else ""
    return (
        f"[{done:>3}/{total}] trial {trial.number:>3}  {record.arch_id or '?'}  {figures}  "
        f"{record.trial_seconds or 0:.1f} s{tags}  | elapsed {elapsed_s / 60:.1f} min, eta {eta}"
    )


def search_header(config, study, fingerprint: dict) -> str:
    earlier = len(study.get_trials(deepcopy=False))
    if config.study_trials is None:
        budget = f"adding {config.trials} new architectures"
    else:
        budget = f"until it holds {config.study_trials} new architectures, every worker's together"
    return (
        f"study {config.study_name!r} in {config.storage_url}: {earlier} earlier trials; {budget}\n"
        f"mode {config.mode}, strategy {config.strategy}, target {config.target_ms:g} ms, alpha {config.reward_alpha:g}, "
        f"beta {config.reward_beta:g}; proxy {config.train_images} images x {config.epochs} epochs, "
        f"early stop {config.early_stop}\n"
        f"latency on: {device_line(fingerprint)}"
    )


def study_words(config) -> str:
    """The flags that find this study again."""
    import shlex

    words = ["--study", config.study_name] + (["--storage", config.storage] if config.storage else [])
    words += ["--runs-dir", config.runs_dir] if config.runs_dir != "runs" else []
    return " ".join(shlex.quote(w) for w in words)


def search_summary(summary, config, *, chance: float) -> str:
    """What the search did, whether its trials learned, its front, and the next commands."""
    from results.pareto import format_front

    study_words_ = study_words(config)
    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(summary.info.counts.items()))
    reused = f" (and {summary.reused_trials} re-proposed, answered from the study)" if summary.reused_trials else ""
    lines = [f"\n{summary.new_trials} new architectures{reused} in {summary.wall_seconds / 60:.1f} min; study now holds {counts}"]
    if summary.converged:
        lines.append(f"stopped early: the {config.strategy} sampler proposed only architectures the study already knows")
    trained = [r.accuracy for r in summary.info.rows if r.measured and r.reused_from is None]
    noise = sum(a <= chance for a in trained)
    if trained and noise > len(trained) / 2:
        lines.append(
            f"warning: {noise} of {len(trained)} trials scored within noise of chance (<= {chance:.3f} on {config.val_images} "
            f"images, {config.num_classes} classes): this proxy budget ranks noise here; raise --train-images or --epochs"
        )
    limit = config.latency_limit_ms
    new_rows = [r for r in summary.info.rows if r.reused_from is None and r.state in ("COMPLETE", "PRUNED")]
    # pruned over the limit: measured above it, or screened (no latency); an early-stopped trial was within it
    over = [r for r in new_rows if r.state == "PRUNED" and (r.latency_ms is None or r.latency_ms > limit)] if limit else []
    if over and len(over) > len(new_rows) / 2:
        lines.append(
            f"warning: {len(over)} of {len(new_rows)} architectures were over the latency limit {limit:g} ms and not trained: "
            "it lies below most of the space on this device (`nas calibrate` shows what the references take here)"
        )
    busy = [r.latency_busy_cores for r in summary.info.rows if r.measured and r.latency_busy_cores is not None]
    loud = [b for b in busy if b >= BUSY_CORES_WARNING]
    if loud:
        lines.append(
            f"warning: {len(loud)} of {len(busy)} trials were timed while other processes kept up to {max(loud):.1f} cores "
            "busy: their latencies are noisier (single timings moved 0.83-1.27x beside one training); search on a quiet machine"
        )
    spelled = [r.latency_spell_rounds for r in summary.info.rows if r.measured and r.latency_spell_rounds is not None]
    if any(spelled):
        lines.append(
            f"latency: {sum(n > 0 for n in spelled)} of {len(spelled)} timings had rounds in one of the machine's slow spells, "
            f"over {SLOW_SPELL_OVER_FAST:g}x the fastest round: set aside (docs/latency.md)"
        )
    lines += [
        f"\nPareto front (accuracy vs latency) of {config.study_name!r}:\n{format_front(summary.info)}",
        f"\nall trials: {summary.csv_path}",
        f"look at it:  nas report {study_words_}   (HTML)   |   nas dashboard {study_words_}   (live)",
        f"print again: nas front {study_words_}",
    ]
    if not config.is_tabular:  # a table's cells have nothing to retrain
        data = f" --data-dir {config.data_dir}" if config.data_dir else ""
        lines += [
            f"deploy:      nas retrain {study_words_} --front --top 3{data}",
            f"             nas export {study_words_} --front --top 3{data}",
            f"prove it:    nas compare {study_words_} --front --top 3{data}   (retrained against the references)",
        ]
    return "\n".join(lines)


def retrain_line(result) -> str:
    chosen = (
        f"best validation accuracy {result.val_accuracy:.4f} (epoch {result.best_epoch}, {result.best_weights} weights)"
        if result.val_accuracy is not None
        else f"no validation: epoch {result.best_epoch}'s {result.best_weights} weights"
    )
    return f"  {chosen}; test accuracy {result.test_accuracy:.4f}; {result.train_seconds / 60:.1f} min"


def export_lines(item, card) -> str:
    lines = [f"{card.arch_id}: {card.params_count:,} params, {number(card.multiply_adds, ',')} multiply-adds"]
    for name, entry in card.formats.items():
        if entry.error is not None:
            lines.append(f"  {name:6} failed: {entry.error}")
            continue
        latency = number(entry.latency_median_ms, ".3f") + (" ms" if entry.latency_median_ms is not None else "")
        lines.append(f"  {name:6} test accuracy {entry.test_accuracy:.4f}  latency {latency:>9}  {entry.file}")
    return "\n".join([*lines, f"  model card: {os.path.join(item.workdir, MODEL_CARD + '.md')}"])


def sample_line(k: int, total: int, spec, answer) -> str:
    """One architecture `nas latency-fit` measured (or why it could not)."""
    if isinstance(answer, str):
        return f"  [{k:>3}/{total}] {spec.arch_id}  failed: {answer}"
    seconds = sum(answer.timings.get(p, 0.0) for p in ("build_seconds", "convert_seconds", "measure_seconds"))
    return f"  [{k:>3}/{total}] {spec.arch_id}  {answer.median_ms:.3f} ms  {seconds:.1f} s"


def check_line(record, budget, result: dict) -> str:
    """One budget of one architecture `nas proxy-check` trained."""
    figure = f"accuracy {result['accuracy']:.4f}" if "accuracy" in result else f"failed: {result['error']}"
    return f"  {record.name:<16} {budget.label:>10}  {figure}  {result['seconds']:.0f} s"


def calibration_line(row) -> str:
    from nas.calibration import NAME_WIDTH

    figure = f"{row.latency_median_ms:.3f} ms" if not row.error else f"failed: {row.error}"
    return f"  {row.name:<{NAME_WIDTH}} {figure}"


def calibration_summary(rows, fingerprint: dict, *, target_ms: float | None, path: str) -> str:
    """The references' table, the target it suggests, and where a given target lies."""
    from nas import calibration

    lines = [f"measured on {device_line(fingerprint)}", "", calibration.format_table(rows), "", calibration.target_advice(rows)]
    if target_ms is not None:
        measured = [r.latency_median_ms for r in rows if not r.error]
        warning = calibration.target_warning(target_ms, measured, source="the references")
        lines.append(warning or f"--target-ms {target_ms:g} lies within reach of the references here")
    return "\n".join([*lines, f"saved: {path} (nas search checks its --target-ms against it)"])
