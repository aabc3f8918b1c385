"""The architecture as data: `BlockSpec`, `ArchSpec`, their string/JSON codec and validation.

The block-string grammar follows MnasNet's released code (Tan et al., arXiv:1807.11626,
tensorflow/tpu `mnasnet_models.py`) and EfficientNet/timm: one block is

    OP_rR_kK_sS[_eE]_cC[_seX][_noskip|_poolskip]

e.g. ``mbconv_r2_k3_s2_e6_c24_se0.25``; blocks are joined by ``-``. A MobileViT block (Mehta &
Rastegari, arXiv:2110.02178) adds its transformer fields:

    mobilevit_r1_kK_sS_eE_cC_dD_lL_hH_pP_mM_(mhsa|eaS)

transformer width D, depth L, heads H, patch P, MLP ratio M, and multi-head self-attention or
external attention with S memory units (Guo et al., arXiv:2105.02358). The stem is an ordinary
``conv`` block and the head is ``head_cC`` (1x1 conv, global pooling, classifier), so one string
describes the whole network. ``ArchSpec.from_string(s).to_string() == s`` for every canonical s.

This module is pure Python: the CLI and the codec never import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass

SCHEMA_VERSION = 1

#: ops whose layers have an expansion ratio (the others always use ``expand == 1``).
EXPANDING_OPS = frozenset({"mbconv", "mobilevit"})
#: ops with a transformer (the MobileViT fields are zero for every other op).
TRANSFORMER_OPS = frozenset({"mobilevit"})
#: every op of the grammar; ``head`` may only be the last block.
OPS = frozenset({"conv", "dsconv", "mbconv", "mobilevit", "head"})
ATTENTIONS = ("mhsa", "external")
SKIPS = ("identity", "pool", "none")
_SKIP_TOKENS = {"identity": "", "pool": "poolskip", "none": "noskip"}


@dataclass(frozen=True)
class Description:
    """A candidate as known without training: `features` for a surrogate, a `capacity` to rank
    candidates by, whether it computes nothing by construction (its accuracy is chance, so
    training it teaches nothing: a NAS-Bench-201 cell with no path from input to output), and a
    `function` key shared by candidates that compute the same function (a NAS-Bench-201 cell
    with the same live edges: its dead ones may still cost latency); None: its own."""

    features: tuple[float, ...]
    capacity: float
    computes_nothing: bool = False
    function: str | None = None


class SpecError(ValueError):
    """An architecture string, JSON document or spec that cannot describe a network."""


@dataclass(frozen=True)
class BlockSpec:
    """One block: `repeats` identical layers, the first of which may stride and change width.

    `se` is the squeeze-excite ratio of the *block input* channels (0 = no SE), as in the
    MnasNet paper and its official code. `skip` chooses the shortcut of each layer:
    ``identity`` (a residual wherever the shapes allow it), ``pool`` (average-pool + 1x1
    projection where they do not, identity where they do) or ``none``.

    MobileViT blocks are an MBConv layer (which may stride, `expand`, `out_ch`) followed by one
    MobileViT block with `depth` transformer layers of width `dim`, `heads` heads, patches of
    `patch` x `patch` pixels, MLP ratio `mlp`, and `attention` ``mhsa`` or ``external`` (with
    `memory` units).
    """

    op: str
    out_ch: int
    repeats: int = 1
    kernel: int = 3
    stride: int = 1
    expand: int = 1
    se: float = 0.0
    skip: str = "identity"
    dim: int = 0
    depth: int = 0
    heads: int = 0
    patch: int = 0
    mlp: int = 0
    attention: str = ""
    memory: int = 0

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise SpecError(f"op={self.op!r} is unknown; expected one of {sorted(OPS)}")
        if not isinstance(self.out_ch, int) or self.out_ch < 1:
            raise SpecError(f"out_ch={self.out_ch!r} must be a positive integer")
        if not isinstance(self.repeats, int) or self.repeats < 1:
            raise SpecError(f"repeats={self.repeats!r} must be a positive integer")
        if self.kernel not in (1, 3, 5, 7):
            raise SpecError(f"kernel={self.kernel!r} must be 1, 3, 5 or 7")
        if self.stride not in (1, 2):
            raise SpecError(f"stride={self.stride!r} must be 1 or 2")
        if not isinstance(self.expand, int) or not 1 <= self.expand <= 8:
            raise SpecError(f"expand={self.expand!r} must be an integer in 1..8")
        if self.op not in EXPANDING_OPS and self.expand != 1:
            raise SpecError(f"expand={self.expand} is only meaningful for mbconv, not op={self.op!r}")
        if not 0.0 <= self.se <= 1.0:
            raise SpecError(f"se={self.se!r} must be a ratio in [0, 1]")
        if self.skip not in SKIPS:
            raise SpecError(f"skip={self.skip!r} is unknown; expected one of {list(SKIPS)}")
        if self.op == "head" and (self.repeats, self.kernel, self.stride, self.se) != (1, 1, 1, 0.0):
            raise SpecError(f"head block takes only channels (head_cN), got {self!r}")
        if self.op in TRANSFORMER_OPS:
            self._check_transformer()
        elif (self.dim, self.depth, self.heads, self.patch, self.mlp, self.attention, self.memory) != (0, 0, 0, 0, 0, "", 0):
            raise SpecError(f"transformer fields are only meaningful for mobilevit, not op={self.op!r}")

    def _check_transformer(self) -> None:
        if self.repeats != 1:
            raise SpecError(f"repeats={self.repeats}: a mobilevit block is one MBConv layer and one MobileViT block (r1)")
        for name, low, high in (("dim", 8, 1024), ("depth", 1, 12), ("heads", 1, 16), ("patch", 1, 8), ("mlp", 1, 8)):
            value = getattr(self, name)
            if not isinstance(value, int) or not low <= value <= high:
                raise SpecError(f"{name}={value!r} of a mobilevit block must be an integer in {low}..{high}")
        if self.dim % self.heads:
            raise SpecError(f"heads={self.heads} must divide the transformer width dim={self.dim}")
        if self.attention not in ATTENTIONS:
            raise SpecError(f"attention={self.attention!r} is not one of {', '.join(ATTENTIONS)}")
        if (self.attention == "external") != (self.memory > 0):
            raise SpecError(f"memory={self.memory}: external attention needs memory units (eaS), self-attention none")
        if self.se or self.skip != "identity":
            raise SpecError(f"a mobilevit block takes no se/skip tokens (se={self.se}, skip={self.skip!r})")

    def to_string(self) -> str:
        if self.op == "head":
            return f"head_c{self.out_ch}"
        parts = [self.op, f"r{self.repeats}", f"k{self.kernel}", f"s{self.stride}"]
        if self.op in EXPANDING_OPS:
            parts.append(f"e{self.expand}")
        parts.append(f"c{self.out_ch}")
        if self.se:
            parts.append(f"se{_format_ratio(self.se)}")
        if _SKIP_TOKENS[self.skip]:
            parts.append(_SKIP_TOKENS[self.skip])
        if self.op in TRANSFORMER_OPS:
            parts += [f"d{self.dim}", f"l{self.depth}", f"h{self.heads}", f"p{self.patch}", f"m{self.mlp}"]
            parts.append("mhsa" if self.attention == "mhsa" else f"ea{self.memory}")
        return "_".join(parts)

    @classmethod
    def from_string(cls, text: str) -> BlockSpec:
        op, *tokens = text.strip().split("_")
        fields: dict[str, object] = {"op": op}
        if op == "head":
            fields["kernel"] = 1
        for token in tokens:
            key, value = _parse_token(token, block=text)
            if key in fields and not (op == "head" and key == "kernel"):
                raise SpecError(f"block {text!r} repeats the field {key!r}")
            fields[key] = value
        if "out_ch" not in fields:
            raise SpecError(f"block {text!r} has no channel count (cN)")
        if "memory" in fields:
            fields["attention"] = "external"
        return cls(**fields)


_TOKEN_PATTERNS = (
    (re.compile(r"r(\d+)"), "repeats", int),
    (re.compile(r"k(\d+)"), "kernel", int),
    (re.compile(r"s(\d+)"), "stride", int),
    (re.compile(r"e(\d+)"), "expand", int),
    (re.compile(r"c(\d+)"), "out_ch", int),
    (re.compile(r"se(\d*\.?\d+)"), "se", float),
    (re.compile(r"d(\d+)"), "dim", int),
    (re.compile(r"l(\d+)"), "depth", int),
    (re.compile(r"h(\d+)"), "heads", int),
    (re.compile(r"p(\d+)"), "patch", int),
    (re.compile(r"m(\d+)"), "mlp", int),
    (re.compile(r"ea(\d+)"), "memory", int),
)


def _parse_token(token: str, *, block: str) -> tuple[str, object]:
    if token == "noskip":
        return "skip", "none"
    if token == "poolskip":
        return "skip", "pool"
    if token == "mhsa":
        return "attention", "mhsa"
    for pattern, key, convert in _TOKEN_PATTERNS:
        match = pattern.fullmatch(token)
        if match:
            return key, convert(match.group(1))
    raise SpecError(f"token {token!r} of block {block!r} is not understood")


def _format_ratio(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class ArchSpec:
    """A whole network: stem, body blocks and head, in order."""

    blocks: tuple[BlockSpec, ...]

    def __post_init__(self) -> None:
        if not self.blocks:
            raise SpecError("an architecture needs at least one block")
        object.__setattr__(self, "blocks", tuple(self.blocks))
        for index, block in enumerate(self.blocks):
            if not isinstance(block, BlockSpec):
                raise SpecError(f"block {index} is {type(block).__name__}, not BlockSpec")
            if block.op == "head" and index != len(self.blocks) - 1:
                raise SpecError(f"head block must be last, found at position {index}")

    def to_string(self) -> str:
        return "-".join(block.to_string() for block in self.blocks)

    @classmethod
    def from_string(cls, text: str) -> ArchSpec:
        if not isinstance(text, str) or not text.strip():
            raise SpecError(f"architecture string {text!r} is empty")
        return cls(tuple(BlockSpec.from_string(part) for part in text.strip().split("-")))

    @property
    def arch_id(self) -> str:
        """A short stable hash of the canonical string: file names, cache keys, dedup."""
        return hashlib.sha256(self.to_string().encode()).hexdigest()[:12]

    def to_json(self) -> str:
        blocks = [dataclasses.asdict(block) for block in self.blocks]
        return json.dumps({"schema_version": SCHEMA_VERSION, "blocks": blocks}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise SpecError(f"architecture JSON is malformed: {error}") from None
        if not isinstance(document, dict) or set(document) != {"schema_version", "blocks"}:
            keys = sorted(document) if isinstance(document, dict) else type(document).__name__
            raise SpecError(f"architecture JSON must have exactly schema_version and blocks, got {keys}")
        if document["schema_version"] != SCHEMA_VERSION:
            raise SpecError(f"schema_version={document['schema_version']!r} is not supported (expected {SCHEMA_VERSION})")
        known = {field.name for field in dataclasses.fields(BlockSpec)}
        blocks = []
        for index, fields in enumerate(document["blocks"]):
            unknown = set(fields) - known
            if unknown:
                raise SpecError(f"block {index} has unknown fields {sorted(unknown)}")
            blocks.append(BlockSpec(**fields))
        return cls(tuple(blocks))


def feature_sizes(spec: ArchSpec, input_hw: int) -> list[int]:
    """Spatial size of the feature map *after* each block ('same' padding: ceil division)."""
    sizes, size = [], input_hw
    for block in spec.blocks:
        size = -(-size // block.stride)
        sizes.append(size)
    return sizes


def validate(spec: ArchSpec, input_hw: int) -> None:
    """Reject a spec that cannot become a sensible network at `input_hw` x `input_hw` input."""
    if input_hw < 8:
        raise SpecError(f"input size {input_hw} is too small; at least 8 pixels are needed")
    if spec.blocks[-1].op != "head":
        raise SpecError(f"the last block must be a head (head_cN), got {spec.blocks[-1].to_string()!r}")
    if len(spec.blocks) < 3:
        raise SpecError(f"an architecture needs a stem, at least one body block and a head, got {len(spec.blocks)} blocks")
    if spec.blocks[0].op != "conv":
        raise SpecError(f"the stem (block 0) must be a conv block, got op={spec.blocks[0].op!r}")
    sizes = feature_sizes(spec, input_hw)
    for index, (block, size) in enumerate(zip(spec.blocks, sizes, strict=True)):
        if block.op in TRANSFORMER_OPS and size % block.patch:
            raise SpecError(
                f"patch={block.patch} must divide the {size}x{size} feature map of block {index} (no silent resize in the graph)"
            )
    if sizes[-1] < 2:
        raise SpecError(
            f"the final feature map is {sizes[-1]}x{sizes[-1]} at input {input_hw}; at least 2x2 is needed "
            "before the head (too many stride-2 blocks)"
        )
