"""Cutting one side of a batch (its queries, documents or hard negatives) into chunks for
the forward passes: the side is tokenized once, its texts ordered by length and cut where
the padding saved outweighs the cost of one more pass, and each chunk padded only to its
own longest text. The loss still sees the rows in their own order (`cut_side` returns
where each row went)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cpt_embed.model import Encoder
from cpt_embed.train.grad_cache import Batch

# The fixed cost of one more forward and backward pass, in padded tokens: a side is cut into
# chunks of similar length where the padding saved outweighs it. The CPU figure is measured
# with all-MiniLM-L6-v2; the other is an estimate (GPUs run small passes at the speed of
# their kernel launches, so they cut only where much padding is saved).
PASS_COST_TOKENS = {"cpu": 64, "other": 4096}


def cut_side(
    encoder: Encoder, texts: list[str], side: str, max_rows: int
) -> tuple[list[Batch], torch.Tensor]:
    """`texts` tokenized once as `side`, cut into chunks of at most `max_rows` texts of
    similar length (each padded to its own longest text), and the text each row of the
    chunks holds (row k of the chunks concatenated is texts[order[k]])."""
    whole = encoder.tokenize(texts, side)
    lengths = whole["attention_mask"].sum(1).tolist()
    cost = PASS_COST_TOKENS.get(encoder.device.type, PASS_COST_TOKENS["other"])
    groups = length_groups(lengths, max_rows, cost)
    left = encoder.config.padding_side == "left"
    chunks = [_rows(whole, group, max(lengths[i] for i in group), left) for group in groups]
    order = torch.tensor([i for group in groups for i in group])
    return chunks, order


def length_groups(lengths: Sequence[int], max_rows: int, pass_cost: int) -> list[list[int]]:
    """Row indices for forward passes: longest first, at most `max_rows` rows a group, with
    the fewest padded tokens plus `pass_cost` tokens for each pass (the fixed cost of one
    more forward and backward). An exact search over cuts between distinct lengths."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    widths, counts = np.unique(np.asarray(lengths), return_counts=True)
    widths, counts = widths[::-1], counts[::-1]  # longest first
    ends = np.concatenate([[0], np.cumsum(counts)])
    best = np.zeros(len(widths) + 1)
    start = np.zeros(len(widths) + 1, dtype=int)
    for j in range(1, len(widths) + 1):
        rows = ends[j] - ends[:j]  # a group from distinct length i up to j - 1
        cost = best[:j] + widths[:j] * rows + pass_cost * np.ceil(rows / max_rows)
        start[j] = int(np.argmin(cost))
        best[j] = cost[start[j]]
    groups, j = [], len(widths)
    while j:
        i = start[j]
        span = order[ends[i] : ends[j]]
        pieces = -(-len(span) // max_rows)
        groups[:0] = [p.tolist() for p in np.array_split(span, pieces)]
        j = i
    return groups


def _rows(batch: Batch, rows: list[int], width: int, left: bool) -> Batch:
    """Rows of a padded batch as a batch of their own, `width` tokens wide: the same tensors
    tokenizing those texts alone gives."""
    index = torch.tensor(rows, device=batch["input_ids"].device)
    shift = batch["input_ids"].shape[1] - width if left else 0
    out = {}
    for key, value in batch.items():
        value = value.index_select(0, index)
        # token tensors lose the padding columns; positions move with them
        out[key] = value[:, shift : shift + width] if value.ndim == 2 else value - shift
    return out
