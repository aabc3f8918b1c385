"""Reference architectures adapted to 32x32 input, as strings of the block grammar.

MnasNet-A1, -B1 and -small follow MnasNet's released definitions (arXiv:1807.11626, tensorflow/tpu
`mnasnet_models.py`); MobileNetV2 follows Sandler et al. (arXiv:1801.04381). The CIFAR
adaptation is the same for all: the stride-2 of the second and sixth body blocks becomes 1, so a
32x32 image is reduced 8x (stem, blocks 3 and 4) and the head sees a 4x4 map. Channels and
layer counts are the papers' own.
"""

from __future__ import annotations

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
    "mobilenetv2-0.5": (
        "conv_r1_k3_s2_c16-dsconv_r1_k3_s1_c8-mbconv_r2_k3_s1_e6_c16-mbconv_r3_k3_s2_e6_c16"
        "-mbconv_r4_k3_s2_e6_c32-mbconv_r3_k3_s1_e6_c48-mbconv_r3_k3_s1_e6_c80"
        "-mbconv_r1_k3_s1_e6_c160-head_c1280"
    ),
}


def reference(name: str) -> ArchSpec:
    if name not in REFERENCES:
        raise KeyError(f"unknown reference {name!r}; known: {', '.join(REFERENCES)}")
    return ArchSpec.from_string(REFERENCES[name])
