"""Pooling of token hidden states into one vector per text."""

from __future__ import annotations

import torch

from cpt_embed.errors import InputError
from cpt_embed.model.config import Pooling
from cpt_embed.model.runtime.attention import Ragged


def pool(
    hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    pool_index: torch.Tensor,
    first_index: torch.Tensor,
    mode: Pooling,
) -> torch.Tensor:
    """One vector per row of `hidden` (batch, tokens, dim).

    `eos` reads the position `pool_index` (the closing delimiter), `cls` the first real
    token, `mean` the average over real tokens.
    """
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if mode == "eos":
        return hidden[rows, pool_index.to(hidden.device)]
    if mode == "cls":
        return hidden[rows, first_index.to(hidden.device)]
    if mode == "mean":
        mask = attention_mask.to(hidden.device).unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    raise InputError(f"unknown pooling {mode!r}; use eos, mean or cls")


def pool_row(
    hidden: torch.Tensor,
    ragged: Ragged,
    pool_index: torch.Tensor,
    first_index: torch.Tensor,
    mode: Pooling,
) -> torch.Tensor:
    """One vector per sequence of a ragged row, from the row's hidden states (tokens, dim):
    what `pool` gives the same sequences padded, without re-padding the hidden states
    (whose gradient would scatter-add, slowly on CPU)."""
    starts = ragged.index[:, 0]
    if mode == "eos":
        return hidden[starts + pool_index.to(hidden.device)]
    if mode == "cls":
        return hidden[starts + first_index.to(hidden.device)]
    if mode == "mean":
        real = hidden[: len(ragged.sequence)]
        sums = hidden.new_zeros(len(starts), hidden.shape[-1]).index_add(0, ragged.sequence, real)
        return sums / ragged.lengths[:, None].to(hidden.dtype)
    raise InputError(f"unknown pooling {mode!r}; use eos, mean or cls")
