"""Dropout for training on CPU at a third of PyTorch's cost.

PyTorch's CPU dropout draws one random number per element (bernoulli_): in a gradient-cached
training step of all-MiniLM-L6-v2 that was 8-13% of the time, paid twice, since the cached
step replays each chunk's masks by re-running the RNG from the chunk's saved state. Keeping
the masks instead would cost memory that grows with the batch (for MiniLM at 64 tokens about
0.15 MB per pair, bit-packed, with the attention-probability masks), against training's
promise that memory does not grow with the batch. So the masks stay replayed, but cheaply:
`keep_mask` cuts each 64-bit word of PyTorch's generator into four 16-bit numbers, one per
element, kept where above p * 65536 (p to within 1/65536). It draws from the same global
generator, so restoring its state replays the same masks. GPUs keep their own dropout
(fused into the kernels there).
"""

from __future__ import annotations

import torch
from torch import nn

_LEVELS = 1 << 16


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device) -> torch.Tensor:
    """A bool tensor of `shape`, each element True with probability 1 - p (to 1/65536)."""
    count = 1
    for size in shape:
        count *= size
    words = torch.empty(-(-count // 4), dtype=torch.int64, device=device).random_(-(2**63), None)
    levels = words.view(torch.int16)[:count].view(shape)
    return levels >= round(p * _LEVELS) - _LEVELS // 2


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout of `x` with `keep_mask`: dropped elements 0, kept ones / (1 - p)."""
    if p <= 0:
        return x
    if p >= 1:
        return torch.zeros_like(x)
    return x.masked_fill(~keep_mask(x.shape, p, x.device), 0).mul_(1.0 / (1.0 - p))


class FastDropout(nn.Module):
    """nn.Dropout with `dropout`'s masks."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p) if self.training else x

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_fast_dropout(model: nn.Module) -> int:
    """Put FastDropout in place of `model`'s nn.Dropout layers (CPU models only, where it
    pays); the number replaced."""
    if next(model.parameters()).device.type != "cpu":
        return 0
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Dropout and child.p > 0:
                setattr(module, name, FastDropout(child.p).train(child.training))
                replaced += 1
    return replaced
