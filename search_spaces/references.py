"""Reference architectures adapted to 32x32 input, as strings of the block grammar.

MnasNet-A1, -B1 and -small follow MnasNet's released definitions (arXiv:1807.11626, tensorflow/tpu
`mnasnet_models.py`); MobileNetV2 follows Sandler et al. (arXiv:1801.04381). The CIFAR
adaptation is the same for all: the stride-2 of the second and sixth body blocks becomes 1, so a
32x32 image is reduced 8x (stem, blocks 3 and 4) and the head sees a 4x4 map. Channels and
layer counts are the papers' own. `mobilenetv2-0.5-s1` is MobileNetV2-0.5 on the search space's
default skeleton (stride-1 stem, the first downsampling in block 2): what the skeleton alone buys.

MobileViT-XXS follows Mehta & Rastegari (arXiv:2110.02178, table 4): MV2 expansion 2, channels
16-24-48-64-80, transformer widths 64/80/96 with depths 2/4/3, 4 heads, MLP ratio 2, 2x2 patches,
a 320-channel head. At 32x32 its three MobileViT stages run on 8x8, 4x4 and 4x4 maps (the paper's
run on 32x32, 16x16 and 8x8 at 256x256: strides 8 to 32 become 4 to 8 here).
"""

from __future__ import annotations

import dataclasses

from search_spaces.spec import ArchSpec

REFERENCES: dict[str, str] = {
    "mnasnet-a1": (
        "conv_r1_k3_s2_c32-dsconv_r1_k3_s1_c16_noskip-mbconv_r2_k3_s1_e6_c24-mbconv_r3_k5_s2_e3_c40_se0.25"
        "-mbconv_r4_k3_s2_e6_c80-mbconv_r2_k3_s1_e6_c112_se0.25-mbconv_r3_k5_s1_e6_c160_se0.25"
        "-mbconv_r1_k3_s1_e6_c320-head_c1280"
    ),
    "mnasnet-b1": (
        "conv_r1_k3_s2_c32-dsconv_r1_k3_s1_c16_noskip-mbconv_r3_k3_s1_e3_c24-mbconv_r3_k5_s2_e3_c40"
        "-mbconv_r3_k5_s2_e6_c80-mbconv_r2_k3_s1_e6_c96-mbconv_r4_k5_s1_e6_c192"
        "-mbconv_r1_k3_s1_e6_c320_noskip-head_c1280"
    ),
    "mnasnet-small": (
        "conv_r1_k3_s2_c8-dsconv_r1_k3_s1_c8-mbconv_r1_k3_s1_e3_c16-mbconv_r2_k3_s2_e6_c16"
        "-mbconv_r4_k5_s2_e6_c32_se0.25-mbconv_r3_k3_s1_e6_c32_se0.25-mbconv_r3_k5_s1_e6_c88_se0.25"
        "-mbconv_r1_k3_s1_e6_c144-head_c1280"
    ),
    "mobilenetv2-1.0": (
        "conv_r1_k3_s2_c32-dsconv_r1_k3_s1_c16-mbconv_r2_k3_s1_e6_c24-mbconv_r3_k3_s2_e6_c32"
        "-mbconv_r4_k3_s2_e6_c64-mbconv_r3_k3_s1_e6_c96-mbconv_r3_k3_s1_e6_c160"
        "-mbconv_r1_k3_s1_e6_c320-head_c1280"
    ),
    # the width multipliers Keras publishes (channels rounded as keras.applications.MobileNetV2 rounds them):
    # the hand-designed family a user picks a size from, so a found model is judged against its frontier
    "mobilenetv2-0.75": (
        "conv_r1_k3_s2_c24-dsconv_r1_k3_s1_c16-mbconv_r2_k3_s1_e6_c24-mbconv_r3_k3_s2_e6_c24"
        "-mbconv_r4_k3_s2_e6_c48-mbconv_r3_k3_s1_e6_c72-mbconv_r3_k3_s1_e6_c120"
        "-mbconv_r1_k3_s1_e6_c240-head_c1280"
    ),
    "mobilenetv2-0.35": (
        "conv_r1_k3_s2_c16-dsconv_r1_k3_s1_c8-mbconv_r2_k3_s1_e6_c8-mbconv_r3_k3_s2_e6_c16"
        "-mbconv_r4_k3_s2_e6_c24-mbconv_r3_k3_s1_e6_c32-mbconv_r3_k3_s1_e6_c56"
        "-mbconv_r1_k3_s1_e6_c112-head_c1280"
    ),
    "mobilenetv2-0.5": (
        "conv_r1_k3_s2_c16-dsconv_r1_k3_s1_c8-mbconv_r2_k3_s1_e6_c16-mbconv_r3_k3_s2_e6_c16"
        "-mbconv_r4_k3_s2_e6_c32-mbconv_r3_k3_s1_e6_c48-mbconv_r3_k3_s1_e6_c80"
        "-mbconv_r1_k3_s1_e6_c160-head_c1280"
    ),
    # MobileNetV2-0.5 with the search space's default stride-1 stem (the first downsampling moved to the
    # first 16-channel block): what the skeleton alone buys, apart from what the search finds
    "mobilenetv2-0.5-s1": (
        "conv_r1_k3_s1_c16-dsconv_r1_k3_s1_c8-mbconv_r2_k3_s2_e6_c16-mbconv_r3_k3_s2_e6_c16"
        "-mbconv_r4_k3_s2_e6_c32-mbconv_r3_k3_s1_e6_c48-mbconv_r3_k3_s1_e6_c80"
        "-mbconv_r1_k3_s1_e6_c160-head_c1280"
    ),
    "mobilevit-xxs": (
        "conv_r1_k3_s2_c16-mbconv_r1_k3_s1_e2_c16-mbconv_r3_k3_s2_e2_c24"
        "-mobilevit_r1_k3_s1_e2_c48_d64_l2_h4_p2_m2_mhsa-mobilevit_r1_k3_s2_e2_c64_d80_l4_h4_p2_m2_mhsa"
        "-mobilevit_r1_k3_s1_e2_c80_d96_l3_h4_p2_m2_mhsa-head_c320"
    ),
}


#: blocks whose stride-2 the CIFAR adaptation removed; the "imagenet" layout restores them
CIFAR_UNSTRIDED_BLOCKS: dict[str, tuple[int, ...]] = {
    "mnasnet-a1": (2, 6),
    "mnasnet-b1": (2, 6),
    "mnasnet-small": (2, 6),
    "mobilenetv2-1.0": (2, 6),
    "mobilenetv2-0.75": (2, 6),
    "mobilenetv2-0.35": (2, 6),
    "mobilenetv2-0.5": (2, 6),
    "mobilenetv2-0.5-s1": (0, 6),  # its stem's stride was moved to block 2, where MobileNetV2 strides anyway
    "mobilevit-xxs": (3, 5),
}
LAYOUTS = ("cifar", "imagenet")


def reference(name: str, *, layout: str = "cifar") -> ArchSpec:
    """A reference as adapted to 32x32 input ("cifar"), or with the papers' own strides
    ("imagenet": 32x downsampling, for 224x224 input, where the papers' latencies were measured)."""
    if name not in REFERENCES:
        raise KeyError(f"unknown reference {name!r}; known: {', '.join(REFERENCES)}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is not one of {', '.join(LAYOUTS)}")
    spec = ArchSpec.from_string(REFERENCES[name])
    if layout == "imagenet":
        blocks = list(spec.blocks)
        for index in CIFAR_UNSTRIDED_BLOCKS[name]:
            blocks[index] = dataclasses.replace(blocks[index], stride=2)
        spec = ArchSpec(tuple(blocks))
    return spec
