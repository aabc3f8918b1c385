"""The comparison of retrained models: found architectures against the references, each trained
with the same recipe and budget, scored on the test split in fp32 and int8 with LiteRT, and timed
side by side on one device. Computes the records' dominance and renders the table; `nas.comparison`
produces the records."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace

from latency.measure import BUSY_CORES_WARNING
from results.dominance import dominates as point_dominates
from results.dominance import non_dominated
from results.formatting import number
from search_spaces.files import read_json, write_text_atomic

PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class CompareRecord:
    model: str  # "trial 12", a reference's name, or an arch_id
    kind: str  # "found" or "reference"
    arch: str
    arch_id: str
    params_count: int
    multiply_adds: int | None
    latency_fp32_ms: float | None
    latency_int8_ms: float | None
    test_accuracy_fp32: float | None
    test_accuracy_int8: float | None
    val_accuracy: float | None  # of the delivered weights (the recipe's model selection; None: no validation)
    epochs: int
    train_seconds: float
    recipe_id: str
    dataset: str
    source: dict = field(default_factory=dict)
    dominates_fp32: tuple[str, ...] = ()  # references this found model beats in accuracy and latency
    dominates_int8: tuple[str, ...] = ()
    workdir: str = ""  # the retrained model's folder (a later comparison re-times it from there)
    fingerprint: str = ""  # id of the device fingerprint the latencies were timed on
    timed: str = ""  # when: records timed side by side in one run share it; only they are compared
    latency_fp32_rounds_ms: tuple[float, ...] = ()  # the median of each interleaved round of that timing
    latency_int8_rounds_ms: tuple[float, ...] = ()
    busy_cores: float | None = None  # most cores other processes kept busy during its timing (None: not known)

    def point(self, precision: str) -> tuple[float | None, float | None]:
        return getattr(self, f"latency_{precision}_ms"), getattr(self, f"test_accuracy_{precision}")

    @property
    def key(self) -> tuple[str, str, str]:
        """One record per model and recipe: (dataset, recipe_id, arch_id)."""
        return self.dataset, self.recipe_id, self.arch_id

    @property
    def group(self) -> tuple[str, str, str, str]:
        """Records comparable with each other: one recipe and dataset, timed side by side."""
        return self.dataset, self.recipe_id, self.fingerprint, self.timed


def dominates(a: CompareRecord, b: CompareRecord, precision: str) -> bool:
    """a dominates b in `precision` (never when either lacks a figure there)."""
    pa, pb = a.point(precision), b.point(precision)
    return None not in (*pa, *pb) and point_dominates(pa, pb)


def rounds_faster(a: CompareRecord, b: CompareRecord, precision: str) -> tuple[int, int] | None:
    """(rounds in which a ran faster than b, rounds) of their side-by-side timing in `precision`; None for
    records timed before rounds were kept."""
    ra, rb = getattr(a, f"latency_{precision}_rounds_ms"), getattr(b, f"latency_{precision}_rounds_ms")
    if not ra or len(ra) != len(rb):
        return None
    return sum(x < y for x, y in zip(ra, rb, strict=True)), len(ra)


def with_dominance(records: list[CompareRecord]) -> list[CompareRecord]:
    """Each found model with the references it dominates, per precision, among the records of its
    group (same recipe and dataset, timed side by side)."""
    out = []
    for record in records:
        if record.kind == "found":
            references = [r for r in records if r.kind == "reference" and r.group == record.group]
            beaten = {p: tuple(ref.model for ref in references if dominates(record, ref, p)) for p in PRECISIONS}
            record = replace(record, **{f"dominates_{p}": beaten[p] for p in PRECISIONS})
        out.append(record)
    return out


def merge(earlier: list[CompareRecord], new: list[CompareRecord]) -> list[CompareRecord]:
    """Earlier records kept, each model and recipe once: a new record replaces the earlier one of its
    key (the same trained files, timed again); dominance recomputed."""
    fresh = {r.key: r for r in new}
    kept = [fresh.pop(r.key, r) for r in earlier]
    return with_dominance(kept + list(fresh.values()))


def front(records: list[CompareRecord], precision: str) -> list[CompareRecord]:
    """The retrained models no other retrained model dominates, by latency."""
    return non_dominated((r for r in records if None not in r.point(precision)), lambda r: r.point(precision))


def groups(records: list[CompareRecord]) -> dict[tuple, list[CompareRecord]]:
    """The records by group, the most recently timed group first."""
    by_group: dict[tuple, list[CompareRecord]] = {}
    for record in records:
        by_group.setdefault(record.group, []).append(record)
    return dict(sorted(by_group.items(), key=lambda item: item[0][3], reverse=True))


def format_table(records: list[CompareRecord]) -> str:
    """One table per group (recipe, dataset, timing run), with its dominance verdict."""
    header = (
        f"{'model':<18} {'kind':<9} {'arch_id':<12} {'params':>9} {'MMACs':>6} {'fp32 ms':>8} {'int8 ms':>8} "
        f"{'fp32 acc':>8} {'int8 acc':>8} {'epochs':>6} {'train min':>9}"
    )
    blocks = []
    by_group = groups(records)
    for (dataset, recipe_id, _, timed), members in by_group.items():
        lines = []
        if len(by_group) > 1:
            lines.append(f"{dataset}, recipe {recipe_id}, timed side by side {timed or '-'}")
        lines += [header, "-" * len(header)]
        for r in sorted(members, key=lambda r: r.latency_int8_ms if r.latency_int8_ms is not None else float("inf")):
            macs = None if r.multiply_adds is None else r.multiply_adds / 1e6
            lines.append(
                f"{r.model:<18} {r.kind:<9} {r.arch_id:<12} {r.params_count:>9,} {number(macs, '.1f'):>6} "
                f"{number(r.latency_fp32_ms, '.3f'):>8} {number(r.latency_int8_ms, '.3f'):>8} "
                f"{number(r.test_accuracy_fp32, '.4f'):>8} {number(r.test_accuracy_int8, '.4f'):>8} {r.epochs:>6} "
                f"{r.train_seconds / 60:>9.1f}"
            )
        busy = max((m.busy_cores for m in members if m.busy_cores is not None), default=None)
        if busy is not None and busy >= BUSY_CORES_WARNING:
            lines.append(
                f"warning: other processes kept {busy:.1f} cores busy during this timing: its latencies and verdicts may be "
                "noise; run again on a quiet machine (the models are re-timed, not retrained)"
            )
        lines.append("")
        by_model = {m.model: m for m in members}
        for r in members:
            if r.kind != "found":
                continue
            for precision in PRECISIONS:
                beaten = [name + _steadiness(r, by_model[name], precision) for name in getattr(r, f"dominates_{precision}")]
                lines.append(f"{r.model} ({r.arch_id}) dominates in {precision}: {', '.join(beaten) or 'no reference'}")
        blocks.append("\n".join(lines).rstrip())
    return "\n\n".join(blocks)


def _steadiness(a: CompareRecord, b: CompareRecord, precision: str) -> str:
    """How steady a dominance's latency order was: ' (faster in 4 of 5 rounds)', or '' without rounds."""
    found = rounds_faster(a, b, precision)
    return "" if found is None else f" (faster in {found[0]} of {found[1]} rounds)"


def save(path: str, records: list[CompareRecord], *, recipes: dict, fingerprints: dict, runs: list[dict]) -> None:
    """The whole file: every record, the recipes and fingerprints they name, and the runs that wrote it."""
    document = {"recipes": recipes, "fingerprints": fingerprints, "runs": runs, "records": [asdict(r) for r in records]}
    write_text_atomic(path, json.dumps(document, indent=1) + "\n")


def load_document(path: str) -> dict:
    """compare.json as saved, an empty one when there is none. A file written before records were
    merged (one "settings" for all) reads as one run."""
    document = read_json(path, None)  # a damaged file raises DamagedFile: hours of retraining are never replaced
    if document is None:
        return {"recipes": {}, "fingerprints": {}, "runs": [], "records": []}
    if "settings" in document:  # the one-run format
        settings = document.pop("settings")
        fingerprint = settings.get("fingerprint", {})
        document["recipes"] = {settings.get("recipe_id", ""): settings.get("recipe", {})}
        document["fingerprints"] = {fingerprint.get("id", ""): fingerprint} if fingerprint else {}
        document["runs"] = [{"code": settings.get("code"), "recipe_id": settings.get("recipe_id")}]
        for entry in document.get("records", []):
            entry.setdefault("fingerprint", fingerprint.get("id", ""))
    return document


def load(path: str) -> list[CompareRecord]:
    return records_of(load_document(path))


def records_of(document: dict) -> list[CompareRecord]:
    known = {f.name for f in fields(CompareRecord)}
    records = []
    for entry in document.get("records", []):
        entry = {k: v for k, v in entry.items() if k in known}
        entry["dominates_fp32"] = tuple(entry.get("dominates_fp32", ()))
        entry["dominates_int8"] = tuple(entry.get("dominates_int8", ()))
        for precision in PRECISIONS:
            entry[f"latency_{precision}_rounds_ms"] = tuple(entry.get(f"latency_{precision}_rounds_ms", ()))
        records.append(CompareRecord(**entry))
    return records
