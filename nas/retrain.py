"""After the search: pick architectures (a trial, the front, the top-k by reward, or a string),
retrain each with the full recipe, export the deployable files with a model card."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from nas.config import ConfigError
from results.pareto import pareto_info, write_text_atomic
from search_spaces import REFERENCES, ArchSpec, SpecError, validate


@dataclass(frozen=True)
class Chosen:
    spec: ArchSpec
    workdir: str
    provenance: dict


def choose(
    *,
    study=None,
    trial: int | None = None,
    front: bool = False,
    top: int | None = None,
    arch: str | None = None,
    runs_dir: str,
    out: str | None = None,
) -> list[Chosen]:
    """The architectures to retrain or export, each with its working folder."""
    if arch is not None:
        text = REFERENCES.get(arch, arch)
        try:
            spec = ArchSpec.from_string(text)
            validate(spec, 32)
        except SpecError as error:
            raise ConfigError(f"arch {arch!r} is not a valid architecture: {error}") from None
        workdir = out or os.path.join(runs_dir, "retrained", spec.arch_id)
        return [Chosen(spec, workdir, {"reference": arch} if arch in REFERENCES else {})]
    info = pareto_info(study)
    rows = {row.number: row for row in info.rows}
    if trial is not None:
        if trial not in rows or not rows[trial].measured:
            finished = sorted(n for n, r in rows.items() if r.measured)
            raise ConfigError(f"trial {trial} of study {study.study_name!r} is not a finished trial (finished: {finished[:20]})")
        picked = [rows[trial]]
    elif front:
        picked = sorted(info.front, key=lambda r: -(r.reward or 0.0))[: top or len(info.front)]
        if not picked:
            raise ConfigError(f"study {study.study_name!r} has no finished trial yet")
    else:
        raise ConfigError("say what to retrain: --trial N or --front [--top K] with --study, or --arch STRING")
    search_seconds = sum(r.trial_seconds or 0.0 for r in info.rows)
    chosen = []
    for row in picked:
        spec = ArchSpec.from_string(row.arch)
        root = out or os.path.join(runs_dir, study.study_name, "retrained")
        workdir = out if out and len(picked) == 1 else os.path.join(root, spec.arch_id)
        provenance = {
            "study": study.study_name,
            "trial": row.number,
            "proxy_accuracy": row.accuracy,
            "latency_ms": row.latency_ms,
            "reward": row.reward,
            "search_seconds": search_seconds,
            "trials": len(info.rows),
        }
        chosen.append(Chosen(spec, workdir, provenance))
    return chosen


def save_provenance(chosen: Chosen) -> None:
    os.makedirs(chosen.workdir, exist_ok=True)
    write_text_atomic(os.path.join(chosen.workdir, "provenance.json"), json.dumps(chosen.provenance, indent=1))
