"""Model FLOPs and the device's peak, for tokens/s and model FLOPs utilisation (MFU) on
every log line.

A forward pass over sequences of n_i tokens costs 2 N sum(n_i) FLOPs in the matrix products
of its weights (N: the parameters outside embedding tables, which are looked up, not
multiplied) plus 4 L d sum(n_i^2) in attention (scores and their weighted sum, L layers of
width d); a backward pass twice the forward, and gradient caching one forward more: a step
costs 3 (4 when cached) forwards of both sides. Padding and the attention a causal model
masks out are not counted: MFU measures useful work (PaLM, Appendix B). The peak is the
device's dense bfloat16 rate: a datasheet table for common GPUs, a measured matrix product
elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

# Dense bfloat16 tensor-core FLOP/s from the vendors' datasheets (SXM parts unless named),
# matched against torch.cuda.get_device_name in this order.
GPU_PEAKS = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H800", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
)


def matmul_params(backbone: nn.Module) -> int:
    """Parameters outside embedding tables: those of the matrix products (and norms)."""
    tables = sum(m.weight.numel() for m in backbone.modules() if isinstance(m, nn.Embedding))
    return sum(p.numel() for p in backbone.parameters()) - tables


def forward_flops(params: int, layers: int, width: int, lengths: Iterable[np.ndarray]) -> float:
    """FLOPs of one forward pass over sequences of these lengths (all sides)."""
    tokens = squares = 0.0
    for side in lengths:
        side = np.asarray(side, dtype=np.float64)
        tokens += side.sum()
        squares += (side * side).sum()
    return 2.0 * params * tokens + 4.0 * layers * width * squares


def peak_flops(device: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    """The device's peak FLOP/s for `dtype` products and where the figure comes from."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for part, peak in GPU_PEAKS:
            if part in name:
                return peak, f"{name} datasheet, dense bf16"
    measured = measured_peak(device, dtype)
    return measured, f"measured {str(dtype).removeprefix('torch.')} matmul on {device.type}"


def measured_peak(device: torch.device, dtype: torch.dtype, size: int = 2048) -> float:
    """FLOP/s of a square matrix product at this size, best of a few (about 0.2 s on CPU).
    Its operands come from a generator of its own: drawing them from the global one, on the
    first log line of a process, gave a resumed run other dropout masks than the run it
    continues."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, generator=generator).to(dtype)
    b = torch.randn(size, size, device=device, generator=generator).to(dtype)
    best = float("inf")
    for _ in range(4):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2.0 * size**3 / best
