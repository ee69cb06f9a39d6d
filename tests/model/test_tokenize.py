"""DelimitedTokenizer's padded batches and ragged rows."""

from __future__ import annotations

import pytest
import torch

from cpt_embed import Encoder
from cpt_embed.model.tokenize import _bucket


def test_buckets_cover_the_tokens_with_at_most_a_32nd_more_and_few_sizes():
    sizes = {_bucket(n) for n in range(1, 4097)}
    assert all(n <= _bucket(n) <= n + n / 32 for n in range(1, 5000))
    assert len(sizes) < 300  # vs 4,096 row lengths unbucketed
    assert len({_bucket(n) for n in range(2048, 4097)}) == 33


def test_a_ragged_row_holds_the_padded_batch_s_tokens_end_to_end(tiny_bert):
    tokens = Encoder.load(tiny_bert).tokens
    sequences = tokens.encode(["a short text", "a much longer text than that one is", "x"], "query")
    padded = tokens.pad(sequences, "query")
    row = tokens.ragged(sequences, "query")
    real = sum(len(s) for s in sequences)
    assert row["input_ids"].shape == (1, _bucket(real))
    assert row["input_ids"][0, :real].tolist() == [t for s in sequences for t in s]
    assert (row["input_ids"][0, real:] == tokens.pad_id).all()
    for key in ("attention_mask", "pool_index", "first_index"):
        torch.testing.assert_close(row[key], padded[key])  # right padding: the same layout
    assert row["position_ids"][0, : len(sequences[0])].tolist() == list(range(len(sequences[0])))


@pytest.mark.parametrize("side_padding", ["right", "left"])
def test_a_padded_batch_puts_each_sequence_on_its_side_and_marks_its_ends(tiny_bert, side_padding):
    tokens = Encoder.load(tiny_bert, padding_side=side_padding).tokens
    sequences = tokens.encode(["a short text", "a much longer text than that one is", "x"], "query")
    batch = tokens.pad(sequences, "query")
    width = max(map(len, sequences))
    back = tokens.pool_offset("query")
    for row, seq in enumerate(sequences):
        start = width - len(seq) if side_padding == "left" else 0
        ids = [tokens.pad_id] * width
        ids[start : start + len(seq)] = seq
        assert batch["input_ids"][row].tolist() == ids
        mask = [int(start <= i < start + len(seq)) for i in range(width)]
        assert batch["attention_mask"][row].tolist() == mask
        assert batch["first_index"][row] == start
        assert batch["pool_index"][row] == start + len(seq) - back
        assert ids[start + len(seq) - back] == seq[-back]
    assert all(t.dtype == torch.long for t in batch.values())
