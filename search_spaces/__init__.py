"""The search vocabulary: architecture specs, the MnasNet space, references and (lazily) builders."""

from typing import Protocol

from search_spaces.mnasnet import MnasNetSpace, Skeleton, make_divisible
from search_spaces.nb201 import CellSpec, Nb201Space
from search_spaces.references import REFERENCES, reference
from search_spaces.spec import ArchSpec, BlockSpec, Description, SpecError, feature_sizes, validate

#: the input every searched network takes (CIFAR's 32 x 32 RGB images)
INPUT_SHAPE = (32, 32, 3)
#: searchable spaces; "nb201" is NAS-Bench-201's cell space, evaluated from published tables (no training)
SPACES = ("mnasnet", "mnasnet-mobilevit", "nb201")
TABULAR_SPACES = ("nb201",)


class SearchSpace(Protocol):
    """What the search loop and the strategies ask of a space (`MnasNetSpace`, `Nb201Space`)."""

    name: str

    def choices(self) -> dict[str, tuple]: ...  # every Optuna parameter and its choices
    def sample(self, trial): ...  # a candidate (ArchSpec or CellSpec), drawn through the trial
    def from_params(self, params: dict): ...
    def parse(self, text: str): ...
    def project(self, spec: ArchSpec) -> dict: ...  # the nearest parameters; ValueError if none


def get_space(name: str, *, width: float = 0.5, stem_stride: int = 2) -> SearchSpace:
    if name not in SPACES:
        raise ValueError(f"space={name!r} is unknown; expected one of {', '.join(SPACES)}")
    if name == "nb201":
        return Nb201Space()
    return MnasNetSpace(width=width, mobilevit=name == "mnasnet-mobilevit", skeleton=Skeleton.for_stem_stride(stem_stride))


__all__ = [
    "INPUT_SHAPE",
    "REFERENCES",
    "SPACES",
    "TABULAR_SPACES",
    "ArchSpec",
    "BlockSpec",
    "CellSpec",
    "Description",
    "MnasNetSpace",
    "Nb201Space",
    "SearchSpace",
    "Skeleton",
    "SpecError",
    "feature_sizes",
    "get_space",
    "make_divisible",
    "reference",
    "validate",
]
