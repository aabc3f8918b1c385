"""LiteRT latency of one MobileViT block at CIFAR feature-map sizes, side by side:
per-position attention over patches (MobileViT's unfold, [B*p*p, N, d]) vs joint attention over
all pixels (patch 1: N = H*W tokens), and multi-head self-attention vs external attention (EANet).

    python bench/attention_latency.py [--threads 1]

Each network is stem (1x1-stride conv) + one MobileViT block + a small head, built for an HxW
input so the block sees an HxW map; stem and head are identical across variants.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--depth", type=int, default=2)
    args = parser.parse_args()

    from latency import LatencyProtocol, measure_tflite
    from latency.convert import to_tflite
    from search_spaces import ArchSpec
    from search_spaces.keras_blocks import build

    protocol = LatencyProtocol(threads=args.threads, rounds=5, runs_per_round=60)
    variants = [("per-position (p=2)", 2), ("joint, all pixels (p=1)", 1)]
    attentions = [("self (MHSA)", "mhsa"), ("external (S=64)", "ea64")]
    print(
        f"one MobileViT block, 48 channels, transformer d={args.dim}, L={args.depth}, 4 heads, MLP x2; "
        f"LiteRT fp32, batch 1, {args.threads} thread(s); median of {protocol.rounds * protocol.runs_per_round} runs\n"
    )
    print(f"{'map':>6} {'attention':18} {'scheme':26} {'tokens':>13} {'median ms':>10} {'p90 ms':>8} {'cv':>6}")
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for size in (8, 16):
            for attention_name, token in attentions:
                for scheme, patch in variants:
                    block = f"mobilevit_r1_k3_s1_e2_c48_d{args.dim}_l{args.depth}_h4_p{patch}_m2_{token}"
                    spec = ArchSpec.from_string(f"conv_r1_k3_s1_c48-{block}-head_c64")
                    path = to_tflite(
                        build(spec, input_shape=(size, size, 3)), os.path.join(workdir, "m.tflite"), input_shape=(size, size, 3)
                    )
                    result = measure_tflite(path, protocol)
                    tokens = f"{patch * patch}x{(size // patch) ** 2}"
                    results[(size, token, patch)] = result.median_ms
                    print(
                        f"{size:>3}x{size:<2} {attention_name:18} {scheme:26} {tokens:>13} {result.median_ms:10.3f} "
                        f"{result.p90_ms:8.3f} {100 * result.cv:5.1f}%"
                    )
        print("\nratios (same run):")
        for size in (8, 16):
            for _, token in attentions:
                joint, per_position = results[(size, token, 1)], results[(size, token, 2)]
                print(f"  {size}x{size} {token:5}: joint / per-position = {joint / per_position:5.2f}")
            for patch in (2, 1):
                ratio = results[(size, "mhsa", patch)] / results[(size, "ea64", patch)]
                print(f"  {size}x{size} p={patch}: self / external = {ratio:5.2f}")


if __name__ == "__main__":
    main()
