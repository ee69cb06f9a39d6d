"""Length-sorted batches under a token budget, and the choice per batch between a ragged
row and a padded batch."""

from __future__ import annotations

import numpy as np
import pytest

from cpt_embed import Encoder
from cpt_embed.model.runtime import attention, batching
from cpt_embed.model.runtime.batching import length_batches, padding_share, takes_ragged
from cpt_embed.model.tokenize import DelimitedTokenizer


def test_token_budget_batches_cover_every_text_once():
    lengths = [5, 40, 12, 40, 3, 7, 100, 12]
    batches = length_batches(lengths, batch_size=3, max_tokens=60)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 3
        assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)
        assert len(batch) == 1 or len(batch) * lengths[batch[0]] <= 60
    assert batches[0] == [6]  # longer than the budget: alone
    assert length_batches(lengths, batch_size=100, max_tokens=None) == [
        sorted(range(len(lengths)), key=lambda i: -lengths[i])
    ]


def test_padding_share():
    assert padding_share([[1, 2], [3, 4]]) == 0
    assert padding_share([[1, 2, 3, 4], [5]]) == pytest.approx(3 / 8)


def test_long_sequences_run_ragged_without_padding(monkeypatch):
    monkeypatch.setattr(attention, "EACH_FROM_TOKENS", 3)
    assert takes_ragged([[1, 2, 3], [4, 5, 6]])  # no padding, but long enough to attend alone
    assert not takes_ragged([[1, 2], [4, 5]])
    assert takes_ragged([[1, 2, 3, 4, 5, 6], [4]])  # half padding


@pytest.mark.parametrize(
    "policy, each_from, ragged_calls", [(0.0, 1 << 30, 1), (2.0, 1 << 30, 0), (2.0, 1, 1)]
)
def test_a_batch_runs_ragged_where_its_padding_reaches_the_policy(
    tiny_bert_no_dropout, monkeypatch, policy, each_from, ragged_calls
):
    texts = ["one", "a much longer text than the first one, with many more words in it"]
    encoder = Encoder.load(tiny_bert_no_dropout)
    expected = encoder.encode(texts, dtype="bf16")
    calls = []
    real = DelimitedTokenizer.ragged
    monkeypatch.setattr(
        DelimitedTokenizer, "ragged", lambda self, *a: calls.append(a) or real(self, *a)
    )
    monkeypatch.setattr(batching, "RAGGED_FROM_PADDING", policy)
    monkeypatch.setattr(attention, "EACH_FROM_TOKENS", each_from)
    vectors = encoder.encode(texts, dtype="bf16")
    assert len(calls) == ragged_calls
    np.testing.assert_allclose(vectors, expected, atol=2e-2)
