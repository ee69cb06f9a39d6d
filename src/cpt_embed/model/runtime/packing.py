"""Linear layers on weights pre-packed for oneDNN, put in place of a CPU copy's nn.Linear.

F.linear re-lays the weights out for oneDNN on every call; packing them once, as inductor's
freezing does, saves that work on every forward pass (docs/benchmarks.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PackedLinear(nn.Module):
    """nn.Linear on a weight reordered once into oneDNN's blocked layout, as inductor's
    freezing does: 1.0-1.5x faster bfloat16 matrix products on CPU than F.linear."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def pack_linears(backbone: nn.Module) -> None:
    """Put PackedLinear layers in place of `backbone`'s nn.Linear ones, in place; a layer
    stays as it is where oneDNN cannot run it or disagrees with F.linear on a probe."""
    if not torch.backends.mkldnn.is_available():
        return
    with torch.no_grad():
        for module in list(backbone.modules()):
            for name, child in list(module.named_children()):
                if type(child) is not nn.Linear:
                    continue
                try:
                    fast = PackedLinear(child)
                    x = torch.randn(2, 3, child.in_features, dtype=child.weight.dtype)
                    got = fast(x).float()
                except RuntimeError:  # oneDNN without this dtype or shape
                    continue
                expected = F.linear(x, child.weight, child.bias).float()
                if (got - expected).abs().max() <= 1e-2 * expected.abs().max():
                    setattr(module, name, fast)


def is_packed(backbone: nn.Module) -> bool:
    """True for a copy with PackedLinear layers: on CPU it runs faster in eager mode than
    torch.compile makes it (docs/benchmarks.md), so `encode` does not compile it."""
    return any(isinstance(m, PackedLinear) for m in backbone.modules())
