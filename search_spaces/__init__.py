"""The search vocabulary: architecture specs, the MnasNet space, references and (lazily) builders."""

from search_spaces.mnasnet import MnasNetSpace, Skeleton, make_divisible
from search_spaces.nb201 import CellSpec, Nb201Space
from search_spaces.references import REFERENCES, reference
from search_spaces.spec import ArchSpec, BlockSpec, SpecError, feature_sizes, validate

#: the input every searched network takes (CIFAR's 32 x 32 RGB images)
INPUT_SHAPE = (32, 32, 3)
#: searchable spaces; "nb201" is NAS-Bench-201's cell space, evaluated from published tables (no training)
SPACES = ("mnasnet", "mnasnet-mobilevit", "nb201")
TABULAR_SPACES = ("nb201",)


def get_space(name: str, *, width: float = 0.5, stem_stride: int = 2) -> MnasNetSpace | Nb201Space:
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
    "MnasNetSpace",
    "Nb201Space",
    "Skeleton",
    "SpecError",
    "feature_sizes",
    "get_space",
    "make_divisible",
    "reference",
    "validate",
]
