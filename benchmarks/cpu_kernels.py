"""The kernels behind cpt-embed's CPU encode speed, against the ones sentence-transformers
runs (torch's F.linear and scaled_dot_product_attention), at all-MiniLM-L6-v2's shapes.

    python benchmarks/cpu_kernels.py [--threads 2] [--repeats 20]

Prints a Markdown table: GFLOP/s of F.linear vs PackedLinear (weights pre-packed for oneDNN)
in bfloat16, of F.linear then F.gelu vs PackedLinear with the GELU folded in, of SDPA vs
cpt-embed's cpu_attention in bfloat16, and of torch._int_mm (int8, not used: it fails the
0.999 cosine guard, docs/benchmarks.md) for scale.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cpt_embed.model.runtime.attention import cpu_attention
from cpt_embed.model.runtime.packing import PackedLinear

HIDDEN, FFN, HEADS = 384, 1536, 12


def rate(flops: int, repeats: int, call: Callable[..., object], *args: object) -> float:
    """FLOP/s of `call(*args)`: the median of `repeats` calls after two warm-up calls."""
    call(*args), call(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(*args)
        times.append(time.perf_counter() - start)
    return flops / statistics.median(times)


def linear_rows(repeats: int) -> list[tuple[str, float, float]]:
    rows = []
    for tokens in (1024, 4096):
        for fan_in, fan_out in ((HIDDEN, HIDDEN), (HIDDEN, FFN), (FFN, HIDDEN)):
            layer = nn.Linear(fan_in, fan_out).to(torch.bfloat16).requires_grad_(False)
            packed = PackedLinear.of(layer)
            x = torch.randn(tokens, fan_in, dtype=torch.bfloat16)
            flops = 2 * tokens * fan_in * fan_out
            peer = rate(flops, repeats, F.linear, x, layer.weight, layer.bias)
            ours = rate(flops, repeats, packed, x)
            rows.append((f"linear {tokens} x {fan_in} -> {fan_out}", peer, ours))
    return rows


def _linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.gelu(F.linear(x, weight, bias))


def gelu_rows(repeats: int) -> list[tuple[str, float, float]]:
    """The feed-forward product and its GELU: F.linear then F.gelu (sentence-transformers)
    against PackedLinear with the GELU folded in (fuse_gelu), FLOPs of the product alone."""
    rows = []
    for tokens in (1024, 4096):
        layer = nn.Linear(HIDDEN, FFN).to(torch.bfloat16).requires_grad_(False)
        fused = PackedLinear.of(layer)
        fused.gelu = True
        x = torch.randn(tokens, HIDDEN, dtype=torch.bfloat16)
        flops = 2 * tokens * HIDDEN * FFN
        peer = rate(flops, repeats, _linear_gelu, x, layer.weight, layer.bias)
        ours = rate(flops, repeats, fused, x)
        rows.append((f"linear + GELU {tokens} x {HIDDEN} -> {FFN}", peer, ours))
    return rows


def attention_rows(repeats: int) -> list[tuple[str, float, float]]:
    rows = []
    for batch, tokens in ((128, 32), (64, 64), (16, 256), (8, 512)):
        q, k, v = (
            torch.randn(batch, HEADS, tokens, HIDDEN // HEADS, dtype=torch.bfloat16)
            for _ in range(3)
        )
        mask = torch.ones(batch, 1, tokens, tokens, dtype=torch.bool)
        mask[:, :, :, tokens - tokens // 8 :] = False  # some padding, as in real batches
        flops = 4 * batch * HEADS * tokens * tokens * (HIDDEN // HEADS)
        peer = rate(flops, repeats, F.scaled_dot_product_attention, q, k, v, mask)
        ours = rate(flops, repeats, cpu_attention, nn.Module(), q, k, v, mask)
        rows.append((f"attention {batch} x {tokens} tokens", peer, ours))
    return rows


def int8_row(repeats: int) -> str:
    a = torch.randint(-127, 128, (4096, HIDDEN), dtype=torch.int8)
    b = torch.randint(-127, 128, (HIDDEN, FFN), dtype=torch.int8)
    flops = 2 * 4096 * HIDDEN * FFN
    ops = rate(flops, repeats, torch._int_mm, a, b)
    return f"torch._int_mm 4096 x {HIDDEN} -> {FFN}: {ops / 1e9:,.0f} GOP/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with torch.inference_mode():
        rows = linear_rows(args.repeats) + gelu_rows(args.repeats) + attention_rows(args.repeats)
        extra = int8_row(args.repeats)
    print(f"bfloat16, {args.threads} threads, GFLOP/s (median of {args.repeats})\n")
    print("| shape | torch (sentence-transformers) | cpt-embed | ours / torch |")
    print("|---|---:|---:|---:|")
    for name, peer, ours in rows:
        print(f"| {name} | {peer / 1e9:,.0f} | {ours / 1e9:,.0f} | {ours / peer:.2f}x |")
    print(f"\n{extra}")


if __name__ == "__main__":
    main()
