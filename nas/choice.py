"""After the search: pick architectures (trials, the front, the top-k by reward, strings or
reference names) and give each its one working folder per dataset and recipe, so that `nas
retrain`, `nas export` and `nas compare` find and reuse the same retrained model.

    runs/retrained/<dataset>/<recipe_id>/<arch_id>/    checkpoint, result.json, model.keras, model card
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from nas.config import ConfigError
from results.pareto import pareto_info
from search_spaces import INPUT_SHAPE, REFERENCES, ArchSpec, SpecError, validate
from search_spaces.files import PROVENANCE, load_provenance, write_text_atomic


@dataclass(frozen=True)
class Chosen:
    name: str  # "trial 12", a reference's name, or the arch_id of a given string
    spec: ArchSpec
    workdir: str
    provenance: dict  # where it came from: {"reference": name} or the study, trial and its search figures


def retrain_dir(runs_dir: str, *, dataset: str, recipe, arch_id: str) -> str:
    return os.path.join(runs_dir, "retrained", dataset, recipe.recipe_id, arch_id)


def parse_arch(text: str) -> ArchSpec:
    try:
        spec = ArchSpec.from_string(REFERENCES.get(text, text))
        validate(spec, INPUT_SHAPE[0])
    except SpecError as error:
        raise ConfigError(f"arch {text!r} is not a valid architecture or reference name: {error}") from None
    return spec


def choose(
    *,
    study=None,
    trials: tuple[int, ...] = (),
    front: bool = False,
    top: int | None = None,
    archs: tuple[str, ...] = (),
    runs_dir: str,
    dataset: str,
    recipe,
    out: str | None = None,
) -> list[Chosen]:
    """The architectures to retrain, export or compare, each once, with its working folder."""
    if top is not None and top < 1:
        raise ConfigError(f"top={top} must be at least 1")
    chosen: list[Chosen] = []
    if trials or front:  # the study's models first: they are what a user waits for
        if study is None:
            raise ConfigError("--trial and --front need --study")
        chosen += _from_study(study, trials=trials, front=front, top=top)
    elif study is not None and not archs:
        raise ConfigError("say what to take from the study: --trial N or --front [--top K]")
    for text in archs:
        spec = parse_arch(text)
        name = text if text in REFERENCES else spec.arch_id
        chosen.append(Chosen(name, spec, "", {"reference": text} if text in REFERENCES else {}))
    if not chosen:
        raise ConfigError("say what to retrain: --trial N or --front [--top K] with --study, or --arch STRING")
    unique, seen = [], set()
    for item in chosen:
        if item.spec.arch_id not in seen:  # one architecture, one model, whatever named it
            seen.add(item.spec.arch_id)
            unique.append(item)
    if out and len(unique) > 1:
        raise ConfigError(f"--out names one folder, but {len(unique)} architectures were chosen")
    return [
        Chosen(
            item.name,
            item.spec,
            out or retrain_dir(runs_dir, dataset=dataset, recipe=recipe, arch_id=item.spec.arch_id),
            item.provenance,
        )
        for item in unique
    ]


def _from_study(study, *, trials: tuple[int, ...], front: bool, top: int | None) -> list[Chosen]:
    info = pareto_info(study)
    rows = {row.number: row for row in info.rows}
    picked = []
    for number in trials:
        if number not in rows or not rows[number].measured:
            finished = sorted(n for n, r in rows.items() if r.measured)
            raise ConfigError(f"trial {number} of study {study.study_name!r} is not a finished trial (finished: {finished[:20]})")
        picked.append(rows[number])
    if front:
        ranked = sorted(info.front, key=lambda r: -(r.reward or 0.0))[: top or len(info.front)]
        if not ranked:
            raise ConfigError(f"study {study.study_name!r} has no finished trial yet")
        picked += ranked
    search_seconds = sum(r.trial_seconds or 0.0 for r in info.rows)
    return [
        Chosen(
            f"trial {row.number}",
            ArchSpec.from_string(row.arch),
            "",
            {
                "study": study.study_name,
                "trial": row.number,
                "proxy_accuracy": row.accuracy,
                "latency_ms": row.latency_ms,
                "reward": row.reward,
                "search_seconds": search_seconds,
                "trials": len(info.rows),
            },
        )
        for row in picked
    ]


def save_provenance(chosen: Chosen) -> None:
    """Record where the model came from; a model chosen from several places keeps them all."""
    path = os.path.join(chosen.workdir, PROVENANCE)
    known = load_provenance(chosen.workdir)
    if chosen.provenance and chosen.provenance not in known:
        known.append(chosen.provenance)
    write_text_atomic(path, json.dumps(known, indent=1))
