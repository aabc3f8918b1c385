"""The search vocabulary: architecture specs, the MnasNet space, references and (lazily) builders."""

from search_spaces.mnasnet import MnasNetSpace, Skeleton, make_divisible
from search_spaces.references import REFERENCES, reference
from search_spaces.spec import ArchSpec, BlockSpec, SpecError, feature_sizes, validate

SPACES = {"mnasnet": {"mobilevit": False}, "mnasnet-mobilevit": {"mobilevit": True}}


def get_space(name: str, *, width: float = 0.5) -> MnasNetSpace:
    if name not in SPACES:
        raise ValueError(f"space={name!r} is unknown; expected one of {sorted(SPACES)}")
    return MnasNetSpace(width=width, **SPACES[name])


__all__ = [
    "REFERENCES",
    "SPACES",
    "ArchSpec",
    "BlockSpec",
    "MnasNetSpace",
    "Skeleton",
    "SpecError",
    "feature_sizes",
    "get_space",
    "make_divisible",
    "reference",
    "validate",
]
