"""`nas compare`: found architectures against hand-designed references, under one recipe.

Every chosen model (front members, trials, strings, references) is retrained with the same recipe
and budget, resumable per epoch, reusing any model already retrained with that recipe on that
dataset; each is exported and scored on the test split in fp32 and full-integer int8 with LiteRT;
then all files are timed side by side on the device (interleaved rounds, so a drift of the
machine's speed touches every model alike; each file's latency is that of its rounds outside the
machine's slow spells, `latency.measure.fast_state_ms`). The records go to `runs/<study>/compare.json`, merged
with what earlier runs measured: one record per model and recipe, and every earlier model of the
same recipe whose files are still here is timed again beside the new ones.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable

from latency.measure import LatencyResult, fast_state_ms
from nas.choice import Chosen, save_provenance
from results.card import ModelCard
from results.compare import CompareRecord, with_dominance
from search_spaces import ArchSpec

log = logging.getLogger(__name__)

#: the hand-designed networks every comparison includes unless told otherwise
DEFAULT_REFERENCES = ("mobilenetv2-0.5", "mnasnet-small", "mnasnet-a1")
#: interleaved rounds of the side-by-side timing: a verdict says in how many of them the order held
SIDE_BY_SIDE_ROUNDS = 5


def retrain_and_export(item: Chosen, *, dataset, recipe, on_epoch=None):
    """(result, model card) of `item`, retraining and exporting only what is not there yet."""
    from results.export import export_retrained
    from trainers.full import load_result, retrain

    save_provenance(item)
    result = load_result(item.workdir)
    if result is None:
        result = retrain(item.spec, dataset, recipe=recipe, workdir=item.workdir, on_epoch=on_epoch)
    card = ModelCard.load(item.workdir)
    if card is None or not all(p in card.formats and card.formats[p].scored for p in ("fp32", "int8")):
        card = export_retrained(item.workdir, dataset=dataset, device=None, formats=("fp32", "int8"), measure=False)
    return result, card


def time_side_by_side(paths: dict, device, *, rounds: int = SIDE_BY_SIDE_ROUNDS) -> dict[object, tuple[LatencyResult, ...]]:
    """Every file's measurement in each of `rounds` interleaved rounds on `device` (every file once a
    round, so a drift of the device's speed touches all alike)."""
    samples: dict = {name: [] for name in paths}
    for _ in range(rounds):
        for name, path in paths.items():
            samples[name].append(device.measure(path))
    return {name: tuple(values) for name, values in samples.items()}


def busiest(measured: dict[object, tuple[LatencyResult, ...]]) -> float | None:
    """The most cores other processes kept busy during any of these measurements (None: not known)."""
    return max((r.busy_cores for results in measured.values() for r in results if r.busy_cores is not None), default=None)


def compare(
    chosen: list[Chosen],
    *,
    dataset,
    recipe,
    device,
    on_model: Callable[[int, int, Chosen], None] | None = None,
    on_epoch: Callable[[int, int, dict], None] | None = None,
) -> list[CompareRecord]:
    """Retrain, export and time every chosen model; the records (all stamped `timed`, when their one
    side-by-side timing began) with their dominance."""
    finished = []
    for k, item in enumerate(chosen, start=1):
        if on_model:
            on_model(k, len(chosen), item)
        finished.append((item, *retrain_and_export(item, dataset=dataset, recipe=recipe, on_epoch=on_epoch)))
    paths = {
        (item.spec.arch_id, precision): os.path.join(item.workdir, card.formats[precision].file)
        for item, _, card in finished
        for precision in ("fp32", "int8")
        if precision in card.formats and card.formats[precision].file
    }
    # stamped now, not when the run began: the training before may have taken hours
    timed = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    measured = time_side_by_side(paths, device)
    rounds = {key: tuple(r.median_ms for r in results) for key, results in measured.items()}
    latencies = {key: fast_state_ms(values) for key, values in rounds.items()}
    fingerprint = device.fingerprint()["id"]
    records = []
    for item, result, card in finished:
        scored = {p: card.formats[p].test_accuracy for p in ("fp32", "int8") if p in card.formats}
        records.append(
            CompareRecord(
                model=item.name,
                kind="reference" if "reference" in item.provenance else "found",
                arch=item.spec.to_string(),
                arch_id=item.spec.arch_id,
                params_count=card.params_count,
                multiply_adds=card.multiply_adds,
                latency_fp32_ms=latencies.get((item.spec.arch_id, "fp32")),
                latency_int8_ms=latencies.get((item.spec.arch_id, "int8")),
                latency_fp32_rounds_ms=rounds.get((item.spec.arch_id, "fp32"), ()),
                latency_int8_rounds_ms=rounds.get((item.spec.arch_id, "int8"), ()),
                test_accuracy_fp32=scored.get("fp32"),
                test_accuracy_int8=scored.get("int8"),
                val_accuracy=result.val_accuracy,
                epochs=result.epochs_run,
                train_seconds=result.train_seconds,
                recipe_id=recipe.recipe_id,
                dataset=dataset.name,
                source=item.provenance,
                workdir=item.workdir,
                fingerprint=fingerprint,
                timed=timed,
                busy_cores=busiest(measured),
            )
        )
    return with_dominance(records)


def earlier_models(records: list[CompareRecord], *, recipe_id: str, dataset: str, exclude: set[str]) -> list[Chosen]:
    """The models of earlier records under this recipe and dataset whose exported files are still
    here (not in `exclude`, arch ids): timed again beside the new ones. A folder holding only the
    training's result (its model files gone with another machine) has nothing to time."""
    return [
        Chosen(r.model, ArchSpec.from_string(r.arch), r.workdir, r.source)
        for r in records
        if r.recipe_id == recipe_id and r.dataset == dataset and r.arch_id not in exclude and _exported(r.workdir)
    ]


def _exported(workdir: str | None) -> bool:
    """Whether `workdir` holds a model card whose fp32 and int8 files are all there."""
    card = ModelCard.load(workdir) if workdir and os.path.isdir(workdir) else None
    files = [card.formats[p].file for p in ("fp32", "int8") if p in card.formats] if card else []
    return bool(files) and all(f and os.path.exists(os.path.join(workdir, f)) for f in files)
