"""MnasNet's factorized hierarchical search space (Tan et al., arXiv:1807.11626, section 4.1).

The network is a fixed MobileNetV2-like skeleton of 7 blocks; each block independently chooses its
conv op, kernel, squeeze-excite ratio, skip op, filter multiplier and layer-count offset, and all
layers of a block repeat the same choice. Strides are adapted to 32x32 input: the stem (or, with a
stride-1 stem, block 2) and blocks 3 and 4 halve the map (32 -> 16 -> 8 -> 4); ImageNet's extra
stride-2 in blocks 2 and 6 is dropped, the usual CIFAR adaptation, so the head sees a 4x4 map.

With `mobilevit=True` (``--space mnasnet-mobilevit``) the blocks whose feature maps are 8x8 or
smaller may also choose a MobileViT block (Mehta & Rastegari, arXiv:2110.02178), with its
transformer width, depth, heads, patch, MLP ratio and attention kind (self or external, EANet
arXiv:2105.02358) searched too.

`MnasNetSpace.sample(trial)` is Optuna define-by-run: flat, stable parameter names (``b3_op``),
and every parameter suggested on every trial, since NSGA-II and multivariate TPE only model
parameters present in all trials.
"""

from __future__ import annotations

from dataclasses import dataclass

from search_spaces.spec import ArchSpec, BlockSpec

#: conv-op choices -> (op, expansion ratio)
CONV_OPS: dict[str, tuple[str, int]] = {
    "conv": ("conv", 1),
    "dsconv": ("dsconv", 1),
    "mbconv3": ("mbconv", 3),
    "mbconv6": ("mbconv", 6),
}
KERNELS = (3, 5)
SE_RATIOS = (0.0, 0.25)
SKIP_OPS = ("identity", "pool", "none")
FILTER_MULTIPLIERS = (0.75, 1.0, 1.25)
LAYER_OFFSETS = (-1, 0, 1)
VIT_DIMS = (32, 64, 96)
VIT_DEPTHS = (1, 2, 3, 4)
VIT_HEADS = (1, 2, 4)
VIT_MLP_RATIOS = (2, 4)
VIT_ATTENTIONS = ("mhsa", "external")
VIT_EXPAND = 2  # the MBConv before each MobileViT block, as in MobileViT-XXS
EA_MEMORY = 64  # EANet's S
VIT_MAX_MAP = 8  # transformers only where the map is this small or smaller (MobileViT: 1/8 of the input and below)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of `divisor`, never dropping more than 10 % (MobileNet rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


@dataclass(frozen=True)
class Skeleton:
    """The fixed backbone the space varies: per-block base filters, layers and strides."""

    stem_ch: int = 32
    stem_stride: int = 2
    filters: tuple[int, ...] = (16, 24, 32, 64, 96, 160, 320)
    layers: tuple[int, ...] = (1, 2, 3, 4, 3, 3, 1)
    strides: tuple[int, ...] = (1, 1, 2, 2, 1, 1, 1)
    head_ch: int = 1280

    @classmethod
    def for_stem_stride(cls, stem_stride: int) -> Skeleton:
        """Stride 2 in the stem (MobileNetV2's own layout, 32 -> 16 at once), or stride 1 in the
        stem with the first downsampling moved to block 2: the stem and block 1 then see the full
        32 x 32 image. Measured on MobileNetV2-0.5 (30 epochs, same recipe): +2.1 points of
        validation accuracy for +6 % multiply-adds and +11 % latency (README)."""
        if stem_stride == 2:
            return cls()
        if stem_stride == 1:
            return cls(stem_stride=1, strides=(1, 2, 2, 2, 1, 1, 1))
        raise ValueError(f"stem-stride={stem_stride!r} must be 1 or 2")

    def __post_init__(self) -> None:
        if not len(self.filters) == len(self.layers) == len(self.strides):
            raise ValueError(
                f"skeleton needs as many filters ({len(self.filters)}) as layers ({len(self.layers)}) "
                f"and strides ({len(self.strides)})"
            )


@dataclass(frozen=True)
class MnasNetSpace:
    """The searchable space: a skeleton scaled by `width` (MnasNet's depth multiplier)."""

    width: float = 0.5
    skeleton: Skeleton = Skeleton()
    mobilevit: bool = False
    input_hw: int = 32

    @property
    def name(self) -> str:
        return "mnasnet-mobilevit" if self.mobilevit else "mnasnet"

    def vit_patches(self, index: int) -> tuple[int, ...]:
        """Patch sizes block `index` may use: those dividing its map; () if it cannot be MobileViT."""
        if not self.mobilevit:
            return ()
        size = -(-self.input_hw // self.skeleton.stem_stride)
        for stride in self.skeleton.strides[:index]:
            size = -(-size // stride)
        if size > VIT_MAX_MAP:
            return ()
        return tuple(p for p in (2, 4) if size % p == 0 and size // p >= 2)

    def __post_init__(self) -> None:
        if not 0.1 <= self.width <= 2.0:
            raise ValueError(f"width={self.width} must lie in [0.1, 2.0]")

    @property
    def num_blocks(self) -> int:
        return len(self.skeleton.filters)

    def op_choices(self, index: int) -> list[str]:
        return [*CONV_OPS, "mobilevit"] if self.vit_patches(index) else list(CONV_OPS)

    def choices(self) -> dict[str, tuple]:
        """Every parameter `sample` suggests, with its choices, in the order it suggests them."""
        found = {}
        for index in range(1, self.num_blocks + 1):
            found |= {
                f"b{index}_op": tuple(self.op_choices(index)),
                f"b{index}_kernel": KERNELS,
                f"b{index}_se": SE_RATIOS,
                f"b{index}_skip": SKIP_OPS,
                f"b{index}_filters": FILTER_MULTIPLIERS,
                f"b{index}_layers": LAYER_OFFSETS,
            }
            if self.vit_patches(index):
                found |= {
                    f"b{index}_vit_dim": VIT_DIMS,
                    f"b{index}_vit_depth": VIT_DEPTHS,
                    f"b{index}_vit_heads": VIT_HEADS,
                    f"b{index}_vit_patch": self.vit_patches(index),
                    f"b{index}_vit_mlp": VIT_MLP_RATIOS,
                    f"b{index}_vit_attention": VIT_ATTENTIONS,
                }
        return found

    def from_params(self, params: dict) -> ArchSpec:
        import optuna

        return self.sample(optuna.trial.FixedTrial(params))

    def parse(self, text: str) -> ArchSpec:
        return ArchSpec.from_string(text)

    def sample(self, trial) -> ArchSpec:
        """Draw one architecture from an Optuna trial (or rebuild it from a FixedTrial)."""
        body = []
        for index in range(1, self.num_blocks + 1):
            choice = {
                "op": trial.suggest_categorical(f"b{index}_op", self.op_choices(index)),
                "kernel": trial.suggest_categorical(f"b{index}_kernel", list(KERNELS)),
                "se": trial.suggest_categorical(f"b{index}_se", list(SE_RATIOS)),
                "skip": trial.suggest_categorical(f"b{index}_skip", list(SKIP_OPS)),
                "filters": trial.suggest_categorical(f"b{index}_filters", list(FILTER_MULTIPLIERS)),
                "layers": trial.suggest_categorical(f"b{index}_layers", list(LAYER_OFFSETS)),
            }
            if self.vit_patches(index):  # suggested whatever the op, so every trial has every parameter
                choice["vit"] = {
                    "dim": trial.suggest_categorical(f"b{index}_vit_dim", list(VIT_DIMS)),
                    "depth": trial.suggest_categorical(f"b{index}_vit_depth", list(VIT_DEPTHS)),
                    "heads": trial.suggest_categorical(f"b{index}_vit_heads", list(VIT_HEADS)),
                    "patch": trial.suggest_categorical(f"b{index}_vit_patch", list(self.vit_patches(index))),
                    "mlp": trial.suggest_categorical(f"b{index}_vit_mlp", list(VIT_MLP_RATIOS)),
                    "attention": trial.suggest_categorical(f"b{index}_vit_attention", list(VIT_ATTENTIONS)),
                }
            body.append(self.block(index, **choice))
        return self.assemble(body)

    def block(
        self, index: int, *, op: str, kernel: int, se: float, skip: str, filters: float, layers: int, vit: dict | None = None
    ) -> BlockSpec:
        """Block `index` (1-based) of the skeleton with one set of choices applied."""
        sk = self.skeleton
        out_ch = make_divisible(sk.filters[index - 1] * self.width * filters)
        if op == "mobilevit":  # one MBConv + one MobileViT block; SE, skip and layer offset do not apply
            memory = EA_MEMORY if vit["attention"] == "external" else 0
            return BlockSpec(
                op="mobilevit",
                out_ch=out_ch,
                kernel=kernel,
                stride=sk.strides[index - 1],
                expand=VIT_EXPAND,
                memory=memory,
                **vit,
            )
        kind, expand = CONV_OPS[op]
        return BlockSpec(
            op=kind,
            out_ch=out_ch,
            # A block keeps at least one layer: dropping it would also drop its stride.
            repeats=max(1, sk.layers[index - 1] + layers),
            kernel=kernel,
            stride=sk.strides[index - 1],
            expand=expand,
            se=se,
            skip=skip,
        )

    def assemble(self, body: list[BlockSpec]) -> ArchSpec:
        sk = self.skeleton
        stem = BlockSpec(op="conv", out_ch=make_divisible(sk.stem_ch * self.width), kernel=3, stride=sk.stem_stride)
        head = BlockSpec(op="head", out_ch=make_divisible(sk.head_ch * max(self.width, 1.0)), kernel=1)
        return ArchSpec((stem, *body, head))

    def _vit_params(self, index: int, block: BlockSpec | None = None) -> dict:
        if not self.vit_patches(index):
            return {}
        vit = block if block is not None and block.op == "mobilevit" else None
        return {
            f"b{index}_vit_dim": min(VIT_DIMS, key=lambda d: abs(d - vit.dim)) if vit else 64,
            f"b{index}_vit_depth": min(max(vit.depth, 1), 4) if vit else 2,
            f"b{index}_vit_heads": min(VIT_HEADS, key=lambda h: abs(h - vit.heads)) if vit else 4,
            f"b{index}_vit_patch": min(self.vit_patches(index), key=lambda p: abs(p - vit.patch)) if vit else 2,
            f"b{index}_vit_mlp": min(VIT_MLP_RATIOS, key=lambda m: abs(m - vit.mlp)) if vit else 2,
            f"b{index}_vit_attention": vit.attention if vit else "mhsa",
        }

    def default_params(self) -> dict:
        """The skeleton itself (MobileNetV2-like choices): a sensible first trial."""
        params = {}
        for index in range(1, self.num_blocks + 1):
            params |= {
                f"b{index}_op": "dsconv" if index == 1 else "mbconv6",
                f"b{index}_kernel": 3,
                f"b{index}_se": 0.0,
                f"b{index}_skip": "identity",
                f"b{index}_filters": 1.0,
                f"b{index}_layers": 0,
            } | self._vit_params(index)
        return params

    def project(self, spec: ArchSpec) -> dict:
        """The space's parameters nearest to `spec` (same 7-block layout): seeds a search with a
        known design. MnasNet-A1, found in this space, projects exactly up to width and strides."""
        body = spec.blocks[1:-1]
        if len(body) != self.num_blocks:
            raise ValueError(f"cannot project {len(body)} body blocks onto a {self.num_blocks}-block space")
        params = {}
        for index, block in enumerate(body, start=1):
            base_ch = self.skeleton.filters[index - 1] * self.width
            if block.op in ("conv", "dsconv"):
                op = block.op
            elif block.op == "mobilevit" and self.vit_patches(index):
                op = "mobilevit"
            else:
                op = "mbconv3" if block.expand <= 4 else "mbconv6"
            params |= {
                f"b{index}_op": op,
                f"b{index}_kernel": min(KERNELS, key=lambda k: abs(k - block.kernel)),
                f"b{index}_se": min(SE_RATIOS, key=lambda s: abs(s - block.se)),
                f"b{index}_skip": block.skip,
                f"b{index}_filters": min(FILTER_MULTIPLIERS, key=lambda m: abs(m * base_ch - block.out_ch)),
                f"b{index}_layers": max(-1, min(1, block.repeats - self.skeleton.layers[index - 1])),
            } | self._vit_params(index, block)
        return params
