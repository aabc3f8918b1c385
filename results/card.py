"""The model card `nas export` writes beside a retrained model: one typed record, saved as
model_card.json (read back by `nas compare`) and rendered as model_card.md."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields

from results.formatting import number
from search_spaces.files import MODEL_CARD, read_json, write_text_atomic


@dataclass(frozen=True)
class FormatEntry:
    """One exported file: its test accuracy and, where it was timed, its latency; or why it failed."""

    file: str | None = None
    test_accuracy: float | None = None
    size_bytes: int | None = None
    latency_median_ms: float | None = None
    latency_p90_ms: float | None = None
    latency_cv: float | None = None
    latency_error: str | None = None  # the file is good, only its timing failed
    export_seconds: float | None = None
    error: str | None = None  # the conversion failed: no file

    @property
    def scored(self) -> bool:
        return self.error is None and self.test_accuracy is not None


@dataclass(frozen=True)
class ModelCard:
    arch: str
    arch_id: str
    params_count: int
    multiply_adds: int | None
    input: dict  # shape, dtype, dataset
    classes: tuple[str, ...]
    formats: dict[str, FormatEntry]
    training: dict  # the recipe and what it reached
    search: dict = field(default_factory=dict)  # the study and trial it came from; {} for a given architecture
    latency_fingerprint: dict | None = None  # where the files were timed; None: not timed (nas compare times them)
    latency_protocol: dict | None = None
    references: tuple[str, ...] = ("MnasNet: Tan et al., arXiv:1807.11626", "CIFAR: Krizhevsky, 2009")

    @property
    def timed(self) -> bool:
        return self.latency_fingerprint is not None

    def to_json(self) -> dict:
        document = asdict(self)
        document["formats"] = {name: {k: v for k, v in asdict(e).items() if v is not None} for name, e in self.formats.items()}
        return document

    @classmethod
    def from_json(cls, document: dict) -> ModelCard:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in document.items() if k in known}
        entry_fields = {f.name for f in fields(FormatEntry)}
        values["formats"] = {
            name: FormatEntry(**{k: v for k, v in entry.items() if k in entry_fields})
            for name, entry in document.get("formats", {}).items()
        }
        for name in ("classes", "references"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)

    def save(self, workdir: str) -> None:
        write_text_atomic(os.path.join(workdir, MODEL_CARD + ".json"), json.dumps(self.to_json(), indent=1))
        write_text_atomic(os.path.join(workdir, MODEL_CARD + ".md"), self.markdown())

    @classmethod
    def load(cls, workdir: str) -> ModelCard | None:
        """The card in `workdir`, None if there is none (a damaged one raises DamagedFile)."""
        document = read_json(os.path.join(workdir, MODEL_CARD + ".json"), None)
        return None if document is None else cls.from_json(document)

    def markdown(self) -> str:
        training, search = self.training, self.search
        lines = [
            f"# Model card: {self.arch_id}",
            "",
            f"Architecture (block-string grammar of MnasNet/EfficientNet): `{self.arch}`",
            "",
            f"- parameters: {self.params_count:,}; multiply-adds per image: {number(self.multiply_adds, ',')}",
            f"- input: {self.input['shape']} {self.input['dtype']}; classes: {', '.join(self.classes)}",
            "",
            "## Formats (test split, evaluated once; latency on the device below)",
            "",
            "| format | file | test accuracy | latency p50 ms | latency p90 ms | size KB |",
            "|---|---|---|---|---|---|",
        ]
        for name, entry in self.formats.items():
            if entry.error is not None:
                lines.append(f"| {name} | - | failed: {entry.error} | | | |")
                continue
            lines.append(
                f"| {name} | {entry.file} | {entry.test_accuracy:.4f} | {number(entry.latency_median_ms, '.3f')} | "
                f"{number(entry.latency_p90_ms, '.3f')} | {entry.size_bytes / 1024:.0f} |"
            )
        lines.append("")
        if self.timed:
            where, protocol = self.latency_fingerprint, self.latency_protocol or {}
            runs = protocol.get("rounds", 0) * protocol.get("runs_per_round", 0)
            lines.append(
                f"Latency measured on: {where['device']} ({where['cpu']}), {where['runtime']}, {where['threads']} thread(s), "
                f"delegate {where.get('delegate', '-')} (fingerprint {where['id']}); "
                f"batch 1, median of {runs} runs after warm-up."
            )
        else:
            lines.append("Latency not measured here (`nas compare` times its models side by side; `nas export` times them).")
        lines += [
            "",
            "## Training",
            "",
            f"Recipe: `{json.dumps(training['recipe'], sort_keys=True)}`",
            "",
            f"{training['epochs_run']} epochs in {training['retrain_seconds'] / 60:.1f} min; {_chosen(training)}; "
            f"test accuracy {training['test_accuracy']:.4f}.",
            "",
            "## Search",
            "",
        ]
        if search.get("study"):
            lines.append(
                f"Study `{search.get('study')}`, trial {search.get('trial')}: "
                f"proxy accuracy {number(search.get('proxy_accuracy'), '.4f')}, "
                f"latency {number(search.get('latency_ms'), '.3f')} ms, reward {number(search.get('reward'), '.4f')}; "
                f"the study spent {number(search.get('search_seconds', 0) / 60, '.1f')} min searching "
                f"({search.get('trials')} trials)."
            )
        elif search.get("reference"):
            lines.append(f"Not from a search: the reference architecture {search['reference']}.")
        else:
            lines.append("Not from a search (architecture given directly).")
        lines += ["", "References: " + "; ".join(self.references) + "."]
        return "\n".join(lines) + "\n"


def _chosen(training: dict) -> str:
    """How the delivered weights were chosen: by validation, or (a recipe without one) the last epoch's."""
    if training.get("val_accuracy") is None:
        return f"trained on every training image, no validation: epoch {training['best_epoch']}'s weights ship"
    return (
        f"best validation accuracy {training['val_accuracy']:.4f} at epoch {training['best_epoch']} "
        "(validation carved from the training set)"
    )
