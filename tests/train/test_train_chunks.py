"""Cutting a side into chunks: each chunk is what tokenizing its texts alone gives (padded,
or packed end to end), every text lands in one chunk, the padded cuts are the cheapest
(padding plus a cost per pass) and packed rows keep to their limits."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch

from cpt_embed import Encoder
from cpt_embed.train.chunks import ChunkPlan, length_groups, packed_groups, side_chunks


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("packed", [False, True])
def test_each_chunk_equals_its_texts_tokenized_alone(tiny_bert, padding_side, packed):
    encoder = Encoder.load(tiny_bert, device="cpu", padding_side=padding_side, max_length=32)
    texts = [f"text {i} " + "word " * (5 * i % 13) for i in range(10)]
    tokens = encoder.tokens
    side = side_chunks(
        tokens, tokens.encode(texts, "query"), "query", ChunkPlan(3, None, packed, 0)
    )
    assert len(side.chunks) > 1 and sorted(side.order.tolist()) == list(range(10))
    assert side.lengths.tolist() == [len(s) for s in tokens.encode(texts, "query")]
    rows = side.order.split([len(chunk["pool_index"]) for chunk in side.chunks])
    for chunk, texts_of_chunk in zip(side.chunks, rows, strict=True):
        assert len(texts_of_chunk) <= 3
        sequences = tokens.encode([texts[i] for i in texts_of_chunk], "query")
        alone = (
            tokens.ragged(sequences, "query")
            if packed
            else encoder.tokenize([texts[i] for i in texts_of_chunk], "query")
        )
        assert chunk.keys() == alone.keys()
        for key, value in alone.items():
            if key == "ragged":
                for part in ("index", "valid", "flat", "positions"):
                    assert torch.equal(getattr(chunk[key], part), getattr(value, part))
            else:
                torch.testing.assert_close(chunk[key], value, rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(10))
def test_packed_rows_hold_their_limits_longest_first(seed):
    rng = random.Random(seed)
    lengths = np.array([rng.randint(1, 40) for _ in range(rng.randint(1, 60))])
    max_rows, max_tokens = rng.choice([None, 1, 5]), rng.choice([None, 30, 100])
    groups = packed_groups(lengths, max_rows, max_tokens)
    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))
    flat = [int(lengths[i]) for group in groups for i in group]
    assert flat == sorted(flat, reverse=True)
    for group in groups:
        assert max_rows is None or len(group) <= max_rows
        tokens = sum(int(lengths[i]) for i in group)
        assert max_tokens is None or tokens <= max_tokens or len(group) == 1


def _cost(lengths: list[int], groups: list[list[int]], max_rows: int, pass_cost: int) -> int:
    return sum(
        max(lengths[i] for i in group) * len(group) + pass_cost * -(-len(group) // max_rows)
        for group in groups
    )


def _brute_force(lengths: list[int], max_rows: int, pass_cost: int) -> int:
    """The cheapest cost over every set of cuts between distinct lengths, longest first,
    with each run of lengths between two cuts padded to its longest."""
    widths = sorted(set(lengths), reverse=True)
    best = None
    for cuts in itertools.product([False, True], repeat=len(widths) - 1):
        cost, rows, width = 0, 0, widths[0]
        for k, w in enumerate(widths):
            rows += lengths.count(w)
            if k == len(widths) - 1 or cuts[k]:
                cost += width * rows + pass_cost * -(-rows // max_rows)
                rows = 0
                width = widths[k + 1] if k + 1 < len(widths) else 0
        best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(20))
def test_length_groups_are_the_cheapest_cuts_within_the_row_limit(seed):
    rng = random.Random(seed)
    widths = rng.sample(range(1, 60), rng.randint(1, 9))
    lengths = [rng.choice(widths) for _ in range(rng.randint(1, 30))]
    max_rows, pass_cost = rng.randint(1, 8), rng.choice([0, 16, 64, 4096])
    groups = length_groups(lengths, max_rows, pass_cost)
    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))
    assert all(0 < len(group) <= max_rows for group in groups)
    flat = [lengths[i] for group in groups for i in group]
    assert flat == sorted(flat, reverse=True)  # longest first
    # each group padded to its own longest text: at most what the best cuts cost
    assert _cost(lengths, groups, max_rows, pass_cost) <= _brute_force(lengths, max_rows, pass_cost)
