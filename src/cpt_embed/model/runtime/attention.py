"""Bidirectional attention for inference on CPU, registered with transformers' attention
interface as `cpt_cpu`.

PyTorch's CPU flash-attention kernel reaches 35-110 GFLOP/s for BERT-sized heads (head
dimension 32) on this project's machine: at 256 tokens all-MiniLM-L6-v2 spent nearly half
its time there. Two batched matrix products and a softmax over a few sequences at a time,
sized so that one group's scores stay in cache, run 1.4-1.5x faster up to 256 tokens
(`python benchmarks/cpu_kernels.py`, docs/benchmarks.md). Anything else (longer sequences,
gradients, causal or grouped-query attention, dropout, biases, GPUs, code being compiled)
goes to transformers' own SDPA path.

It also takes ragged rows: a batch's sequences end to end in one row, described by a
`Ragged` passed down through the model's keyword arguments. The linear layers, most of
the work, then compute no padding: a server's micro-batch of 64 random sentences carries
1.8x its real tokens when padded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

NAME = "cpt_cpu"
# The keyword argument that carries a `Ragged` from the model's forward to its attention.
RAGGED = "cpt_ragged"
# Attention scores per group of sequences (heads x queries x keys): about 2 MiB in
# bfloat16, which stays in a core's L2 cache.
_SCORES_PER_GROUP = 1 << 20
# Ragged rows of sequences this long on average attend one sequence at a time, each on its
# own tokens: no re-padding, no mask, no copies back; shorter ones re-pad (one call per
# group of sequences, not per sequence).
EACH_FROM_TOKENS = 128


def sdpa():
    """transformers' own SDPA attention function."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward


@dataclass(frozen=True)
class Ragged:
    """Where each sequence of a ragged row lies. A batch runs as one row (1, tokens) of the
    sequences end to end, so linear layers see no padding; attention re-pads: `index`
    (batch, width) holds each sequence's token places in the row (0 past its end), `valid`
    marks the real ones, `flat` is each row token's place in (batch * width), `positions`
    its position in its sequence, `lengths` the sequences' lengths and `sequence` the
    sequence of each real token."""

    index: torch.Tensor
    valid: torch.Tensor
    flat: torch.Tensor
    positions: torch.Tensor
    lengths: torch.Tensor
    sequence: torch.Tensor
    full: bool  # all sequences as long as the longest: nothing to mask
    sizes: tuple[int, ...]  # `lengths` as Python ints

    @classmethod
    def of(cls, lengths: Sequence[int], total: int = 0) -> Ragged:
        """The layout of sequences of these lengths, in this order, in a row of `total`
        tokens (at least their sum); the tokens past the last sequence belong to none
        (position 0; their outputs are left undefined: nothing reads them)."""
        sizes = torch.tensor(lengths, dtype=torch.long)
        width = int(sizes.max())
        columns = torch.arange(width)
        valid = columns[None, :] < sizes[:, None]
        starts = torch.cumsum(sizes, 0) - sizes
        index = (starts[:, None] + columns[None, :]).masked_fill_(~valid, 0)
        real = valid.flatten().nonzero().squeeze(1)
        tail = real.new_zeros(max(0, total - len(real)))
        flat = torch.cat([real, tail])
        positions = torch.cat([columns.repeat(len(lengths))[real], tail])
        sequence = torch.repeat_interleave(torch.arange(len(lengths)), sizes)
        full = bool(valid.all())
        return cls(index, valid, flat, positions, sizes, sequence, full, tuple(lengths))

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.index, self.valid, self.flat, self.positions, self.lengths, self.sequence)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Ragged:
        """The same layout with its tensors on `device`."""
        moved = (t.to(device, non_blocking=non_blocking) for t in self._tensors())
        return Ragged(*moved, self.full, self.sizes)

    def pin_memory(self) -> Ragged:
        """The same layout in page-locked memory, for non-blocking copies to a GPU."""
        return Ragged(*(t.pin_memory() for t in self._tensors()), self.full, self.sizes)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(1, heads, tokens, dim) of the row as (batch, heads, width, dim), zeros past each
        sequence's end. A copy into place, whose gradient is a gather (an indexing gather's
        gradient would scatter-add, slowly on CPU)."""
        heads, dim = x.shape[1], x.shape[3]
        batch, width = self.valid.shape
        n = len(self.sequence)
        rows = x[0, :, :n].transpose(0, 1)
        out = rows.new_zeros(batch * width, heads, dim).index_copy(0, self.flat[:n], rows)
        return out.view(batch, width, heads, dim).transpose(1, 2)

    def unpad(self, out: torch.Tensor) -> torch.Tensor:
        """(batch, width, heads, dim) attention outputs as the row's (1, tokens, heads, dim)."""
        batch, width, heads, dim = out.shape
        return out.reshape(batch * width, heads, dim).index_select(0, self.flat).unsqueeze(0)


def cpu_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """softmax(q·kᵀ·scaling + mask)·v for (batch, heads, tokens, head_dim) inputs, returned as
    (batch, tokens, heads, head_dim) as transformers' attention functions return it; with
    a `Ragged` in kwargs[RAGGED], each sequence of the ragged row attends to itself."""
    ragged = kwargs.pop(RAGGED, None)
    ours = (
        query.device.type == "cpu"
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and not dropout
        and not is_causal
        and not getattr(module, "is_causal", False)
        and key.shape[1] == query.shape[1]
        # sliding windows (ModernBERT's local layers) mask more than padding
        and not any(
            kwargs.get(k) is not None
            for k in ("position_bias", "softcap", "sinks", "sliding_window")
        )
        and (attention_mask is None or attention_mask.dim() == 4)
    )
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    if ragged is not None:
        if not ours or query.shape[0] != 1:
            raise ValueError(
                "ragged rows run only through cpu_attention's inference path "
                "(CPU, no gradients, bidirectional, one ragged row)"
            )
        return _ragged(query, key, value, ragged, scaling)
    # one sequence's scores must fit in cache; past that (512 tokens) flash is faster
    if not ours or query.shape[1] * query.shape[2] * key.shape[2] > _SCORES_PER_GROUP:
        return sdpa()(
            module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs
        )
    return _grouped(query, key, value, attention_mask, scaling), None


def _grouped(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
) -> torch.Tensor:
    batch, heads, tokens, dim = query.shape
    group = max(1, _SCORES_PER_GROUP // (heads * tokens * key.shape[2]))
    out = query.new_empty(batch, tokens, heads, dim)
    for start in range(0, batch, group):
        rows = slice(start, start + group)
        scores = torch.matmul(query[rows], key[rows].transpose(-1, -2)).mul_(scaling)
        if attention_mask is not None:
            mask = attention_mask[rows]
            if mask.dtype == torch.bool:
                scores.masked_fill_(~mask, float("-inf"))
            else:
                scores.add_(mask)
        weights = torch.softmax(scores, dim=-1)
        out[rows] = torch.matmul(weights, value[rows]).transpose(1, 2)
    return out


def _ragged(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    ragged: Ragged,
    scaling: float,
) -> tuple[torch.Tensor, None]:
    """Attention of the sequences in one ragged row, one at a time or on their re-padded
    (batch, heads, width, head_dim) layout; returned as a ragged row again, (1, tokens,
    heads, head_dim)."""
    if attends_each(ragged.sizes):
        return _each(query, key, value, ragged.sizes, scaling), None
    q, k, v = ragged.pad(query), ragged.pad(key), ragged.pad(value)
    mask = None if ragged.full else ragged.valid[:, None, None, :]
    return ragged.unpad(attend(q, k, v, mask, scaling)), None


def attends_each(lengths: Sequence[int]) -> bool:
    """True where sequences of these lengths in a ragged row attend one at a time: long
    enough on average (EACH_FROM_TOKENS) for per-sequence calls to cost less than
    re-padding."""
    return sum(lengths) >= EACH_FROM_TOKENS * len(lengths)


def _each(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    sizes: tuple[int, ...],
    scaling: float,
) -> torch.Tensor:
    """Attention of each sequence of a ragged row (1, heads, tokens, head_dim) on its own
    tokens, as (1, tokens, heads, head_dim); tokens past the last sequence get zeros. A
    sequence whose scores would not stay in cache goes to torch's SDPA."""
    heads = query.shape[1]
    out = query.new_empty(1, query.shape[2], heads, query.shape[3])
    out[0, sum(sizes) :].zero_()
    # the queries scaled, not the scores: sequence length / head_dim times fewer values
    query = query[0] * scaling
    key, value = key[0], value[0]
    start = 0
    for size in sizes:
        span = slice(start, start + size)
        if heads * size * size > _SCORES_PER_GROUP:
            q, k, v = query[None, :, span], key[None, :, span], value[None, :, span]
            attended = F.scaled_dot_product_attention(q, k, v, scale=1.0)[0]
        else:
            weights = torch.softmax(torch.matmul(query[:, span], key[:, span].mT), dim=-1)
            attended = torch.matmul(weights, value[:, span])
        out[0, span] = attended.transpose(0, 1)
        start += size
    return out


def attend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    ragged: Ragged | None = None,
) -> torch.Tensor:
    """cpu_attention's inference path for callers of their own (runtime/bert.py): inputs
    (batch, heads, tokens, head_dim) and a boolean mask broadcast to the scores, or one
    ragged row (1, heads, tokens, head_dim) and its `Ragged`; the output as
    (batch, tokens, heads, head_dim). Groups that keep the scores in cache, SDPA past them."""
    if ragged is not None:
        return _ragged(query, key, value, ragged, scaling)[0]
    if query.shape[1] * query.shape[2] * key.shape[2] <= _SCORES_PER_GROUP:
        return _grouped(query, key, value, mask, scaling)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling)
    return out.transpose(1, 2)


def use_cpu_attention(backbone: nn.Module) -> bool:
    """Switch a transformers model from SDPA to `cpu_attention`; False where the model does
    not use SDPA or cannot switch (its attention is then left as it was)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    config = getattr(backbone, "config", None)
    # "cpt_packed" (packed.py) is SDPA plus packed rows for training
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "cpt_packed"):
        return False
    if not getattr(backbone, "_can_set_attn_implementation", lambda: False)():
        return False
    AttentionInterface.register(NAME, cpu_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    backbone.set_attn_implementation(NAME)
    return config._attn_implementation == NAME
