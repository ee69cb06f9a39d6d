"""Cutting one side of a batch (its queries, documents or hard negatives) into chunks for
the forward passes, from token id sequences: longest first, so that each chunk holds
sequences of similar length.

Packed (where the model takes packed rows, model/runtime/packed.py): a chunk is its
sequences end to end in one row of at most `max_tokens` tokens (and `max_rows`
sequences), so no layer but attention sees padding. Padded (elsewhere): each chunk padded to
its own longest sequence, cut where the padding saved outweighs the cost of one more pass.
Either way the loss sees the rows in their own order (`Side.order` says where each row
went).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cpt_embed.model.tokenize import DelimitedTokenizer

Batch = dict[str, object]
# The fixed cost of one more forward and backward pass, in padded tokens: a side is cut into
# chunks of similar length where the padding saved outweighs it. The CPU figure is measured
# with all-MiniLM-L6-v2; the other is an estimate (GPUs run small passes at the speed of
# their kernel launches, so they cut only where much padding is saved).
PASS_COST_TOKENS = {"cpu": 64, "other": 4096}


@dataclass(frozen=True)
class ChunkPlan:
    """How a side is cut: at most `max_rows` sequences and `max_tokens` tokens a chunk
    (None: no limit), packed rows or padded chunks."""

    max_rows: int | None
    max_tokens: int | None
    packed: bool
    pass_cost: int = PASS_COST_TOKENS["cpu"]


@dataclass
class Side:
    """One side of a step's batch as its chunks; row k of the chunks concatenated holds
    text order[k]; `lengths` are the texts' token counts (in text order)."""

    chunks: list[Batch]
    order: torch.Tensor
    lengths: np.ndarray

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum())


def side_chunks(
    tokens: DelimitedTokenizer, sequences: Sequence[Sequence[int]], side: str, plan: ChunkPlan
) -> Side:
    """`sequences` (token ids of one side, delimiters included) as chunks by `plan`."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    if plan.packed:
        groups = packed_groups(lengths, plan.max_rows, plan.max_tokens)
    else:
        longest = int(lengths.max())
        rows = plan.max_rows or len(lengths)
        if plan.max_tokens:
            rows = max(1, min(rows, plan.max_tokens // longest))
        groups = length_groups(lengths.tolist(), rows, plan.pass_cost)
    build = tokens.ragged if plan.packed else tokens.pad
    chunks = [build([sequences[i] for i in group], side) for group in groups]
    order = torch.tensor([i for group in groups for i in group], dtype=torch.long)
    return Side(chunks, order, lengths)


def packed_groups(
    lengths: np.ndarray, max_rows: int | None, max_tokens: int | None
) -> list[list[int]]:
    """Row indices for packed rows: longest first, each row filled while it holds at most
    `max_rows` sequences and `max_tokens` tokens (a longer sequence goes alone)."""
    groups: list[list[int]] = []
    filled = 0
    for i in np.argsort(-lengths, kind="stable").tolist():
        n = int(lengths[i])
        full = groups and (
            (max_rows is not None and len(groups[-1]) >= max_rows)
            or (max_tokens is not None and filled + n > max_tokens)
        )
        if not groups or full:
            groups.append([])
            filled = 0
        groups[-1].append(i)
        filled += n
    return groups


def length_groups(lengths: Sequence[int], max_rows: int, pass_cost: int) -> list[list[int]]:
    """Row indices for padded forward passes: longest first, at most `max_rows` rows a
    group, with the fewest padded tokens plus `pass_cost` tokens for each pass (the fixed
    cost of one more forward and backward). An exact search over cuts between distinct
    lengths."""
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
