"""Layer integrated gradients of a cosine similarity: each token's share of it, taken at the
hidden states one layer of the backbone gives that token (explain.py says what for).

The path runs in a straight line from a baseline, in which every text token's hidden state
at that layer is the mean of them all (special tokens and delimiters keep theirs: the text
is there, its length too, but no token can be told from another), to the hidden states
themselves. Along it the states keep their size, away from zero, where the layer norms of
pre-norm models (Llama) jump; a few Gauss-Legendre points integrate it closely
(docs/explain.md). The layers below run once; the layers above run on every point of the
path in one batch, the path's two ends among them (the cosine at the input and at the
baseline). A side with one text token has nothing to tell apart: it scores 0.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cpt_embed.errors import InputError
from cpt_embed.model.runtime.devices import to_device

if TYPE_CHECKING:
    from cpt_embed.model.config import Side
    from cpt_embed.model.encoder import Encoder


def path_points(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Points on the path (0: the baseline, 1: the input) and their weights: the two ends
    (weight 0: they give the cosine there), then the `steps` points of the Gauss-Legendre
    rule on [0, 1]."""
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return np.concatenate([[0.0, 1.0], (nodes + 1) / 2]), np.concatenate([[0.0, 0.0], weights / 2])


def _site(backbone: nn.Module, layer: int) -> nn.Module:
    """The module whose output is layer `layer`'s hidden states: 0 the token embeddings,
    k the k-th Transformer layer."""
    if layer == 0:
        return backbone.get_input_embeddings()
    count = int(backbone.config.num_hidden_layers)
    for module in backbone.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module[layer - 1]
    raise InputError(
        f"cannot find the {count} layers of {type(backbone).__name__}; explain at layer 0 "
        "(the token embeddings)"
    )


@contextmanager
def _path_at(site: nn.Module, text: torch.Tensor, alphas: torch.Tensor) -> Iterator[dict]:
    """Meanwhile `site`'s output, the hidden states (1, tokens, dim) of one sequence, is
    replaced by the path's points (len(alphas), tokens, dim): the layers above run on all of
    them in one batch (their masks and positions, made for one row, broadcast). The dict
    yielded gets `rows` (a leaf that requires grad) and `delta` (input - baseline). Passes of
    other threads through `site` meanwhile (a server's `encode`) are left alone."""
    found: dict[str, torch.Tensor] = {}
    owner = threading.get_ident()

    def hook(module: nn.Module, args: tuple, output):
        if threading.get_ident() != owner:
            return None
        hidden = (output[0] if isinstance(output, tuple) else output).detach()
        mask = text[:, None].to(hidden.dtype)
        mean = (hidden[0] * mask).sum(0) / mask.sum().clamp(min=1)
        delta = (hidden[0] - mean) * mask
        rows = (hidden[0] - delta)[None] + alphas.to(hidden)[:, None, None] * delta[None]
        found["rows"], found["delta"] = rows.requires_grad_(True), delta
        return (rows, *output[1:]) if isinstance(output, tuple) else rows

    handle = site.register_forward_hook(hook)
    try:
        yield found
    finally:
        handle.remove()


@dataclass(frozen=True)
class Settings:
    """Where and how a side is explained: the layer, the Gauss-Legendre points and the
    compute dtype (below float32 under autocast, as training computes)."""

    layer: int
    steps: int
    dtype: torch.dtype

    def autocast(self, encoder: Encoder) -> torch.autocast:
        """The autocast context of `dtype` on the encoder's device (off for float32)."""
        enabled = self.dtype != torch.float32
        return torch.autocast(encoder.device.type, dtype=self.dtype, enabled=enabled)


def vector(encoder: Encoder, ids: list[int], side: Side, settings: Settings) -> torch.Tensor:
    """The side's vector, without gradients."""
    batch = to_device(encoder.tokens.pad([ids], side), encoder.device)
    with torch.no_grad(), settings.autocast(encoder):
        return encoder(batch)[0].float()


@dataclass(frozen=True)
class Shares:
    """Each token's share of the cosine, the cosine at the path's two ends and the side's
    vector (at the input)."""

    scores: np.ndarray
    at_input: float
    at_baseline: float
    vector: torch.Tensor


def attribute(
    encoder: Encoder,
    ids: list[int],
    special: list[bool],
    side: Side,
    target: torch.Tensor,
    settings: Settings,
) -> Shares:
    """Layer integrated gradients of cos(target, this side's vector) over the side's tokens
    at `settings.layer`: one forward pass of the layers below it, one of the layers above
    on every point of the path, and one backward pass through those."""
    alphas, weights = (torch.tensor(a, dtype=torch.float32) for a in path_points(settings.steps))
    text = torch.tensor([not s for s in special], device=encoder.device)
    batch = to_device(encoder.tokens.pad([ids], side), encoder.device)
    site = _site(encoder.backbone, settings.layer)
    with torch.enable_grad(), settings.autocast(encoder), _path_at(site, text, alphas) as path:
        vectors = encoder(batch).float()
        cosines = F.cosine_similarity(vectors, target[None].float(), dim=-1)
        (grads,) = torch.autograd.grad(cosines.sum(), path["rows"])
    weights = weights.to(grads.device)[:, None, None]
    scores = ((grads.float() * weights).sum(0) * path["delta"].float()).sum(-1)
    ends = cosines.detach().cpu()
    return Shares(
        scores.cpu().double().numpy(), float(ends[1]), float(ends[0]), vectors[1].detach()
    )
