"""Packed rows for training: which models switch to them (the probe), and for those that do,
embeddings and parameter gradients of a packed row equal those of the padded batch, for
every pooling; packed_attention refuses what it cannot mask."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cpt_embed import Encoder
from cpt_embed.model.runtime.attention import RAGGED, Ragged
from cpt_embed.model.runtime.packed import NAME, enable_packed_training, packed_attention

_TEXTS = [
    "a short one",
    "def add(a, b):\n    return a + b",
    "x",
    "Contrastive pre-training learns embeddings from pairs of neighbouring texts, "
    "and this one is the longest of the lot by far.",
    "The quick brown fox jumps over the lazy dog.",
]


def _tiny(kind: str) -> nn.Module:
    from transformers import (
        BertConfig,
        BertModel,
        LlamaConfig,
        LlamaModel,
        RobertaConfig,
        RobertaModel,
    )

    torch.manual_seed(0)
    common = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, intermediate_size=64)
    if kind == "bert":
        return BertModel(BertConfig(**common, num_attention_heads=2))
    if kind == "llama":  # grouped-query attention: fewer key/value heads than heads
        return LlamaModel(LlamaConfig(**common, num_attention_heads=4, num_key_value_heads=2))
    # RoBERTa numbers positions from padding_idx + 1, counting only non-padding tokens
    return RobertaModel(RobertaConfig(**common, num_attention_heads=2, max_position_embeddings=140))


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_bert_and_gqa_llama_switch_to_packed_rows(kind):
    model = _tiny(kind)
    assert model.config._attn_implementation == "sdpa"
    assert enable_packed_training(model)
    assert model.config._attn_implementation == NAME
    assert all(p.grad is None for p in model.parameters())  # the probe left no gradients
    assert model.training  # the probe's eval() is undone


def test_roberta_positions_keep_it_padded_and_as_it_was():
    model = _tiny("roberta")
    before = model.config._attn_implementation
    assert not enable_packed_training(model)
    assert model.config._attn_implementation == before == "sdpa"
    assert all(p.grad is None for p in model.parameters())


def test_a_model_already_switched_stays_switched():
    model = _tiny("bert")
    assert enable_packed_training(model) and enable_packed_training(model)
    assert model.config._attn_implementation == NAME


def test_the_probe_leaves_existing_gradients_alone(tiny_llama):
    encoder = Encoder.load(tiny_llama, device="cpu")
    weight = encoder.backbone.get_input_embeddings().weight
    weight.grad = torch.full_like(weight, 3.0)
    assert enable_packed_training(encoder.backbone)
    assert torch.equal(weight.grad, torch.full_like(weight, 3.0))
    others = [p for p in encoder.backbone.parameters() if p is not weight]
    assert all(p.grad is None for p in others)


@pytest.fixture(scope="module", params=["tiny_bert_no_dropout", "tiny_llama"])
def packed_encoder(request) -> Encoder:
    """An Encoder switched to packed rows, in training mode (neither tiny model has
    dropout, so training mode is deterministic)."""
    encoder = Encoder.load(request.getfixturevalue(request.param), device="cpu", max_length=48)
    assert enable_packed_training(encoder.backbone)
    return encoder.train()


def _weighted_sum_grads(encoder: Encoder, batch: dict, weights: torch.Tensor):
    encoder.zero_grad(set_to_none=True)
    embeddings = encoder(batch)
    (embeddings * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}
    return embeddings.detach(), grads


@pytest.mark.parametrize("side", ["query", "document"])
@pytest.mark.parametrize("pooling", ["mean", "cls", "eos"])
def test_packed_rows_equal_padded_batches(packed_encoder, pooling, side, monkeypatch):
    encoder = packed_encoder
    monkeypatch.setattr(encoder.config, "pooling", pooling)
    sequences = encoder.tokens.encode(_TEXTS, side)
    lengths = [len(s) for s in sequences]
    assert len(set(lengths)) == len(lengths)  # texts of different lengths
    packed = encoder.tokens.ragged(sequences, side)
    assert packed["input_ids"].shape[0] == 1 and isinstance(packed["ragged"], Ragged)
    padded = encoder.tokens.pad(sequences, side)

    weights = torch.randn(len(_TEXTS), encoder.dim, generator=torch.Generator().manual_seed(1))
    want, want_grads = _weighted_sum_grads(encoder, padded, weights)
    got, got_grads = _weighted_sum_grads(encoder, packed, weights)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert got_grads.keys() == want_grads.keys() and len(want_grads) > 10
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    # and each text alone gives its own embedding (no text sees another)
    for i in (0, 3):
        alone = encoder(encoder.tokens.pad([sequences[i]], side)).detach()
        torch.testing.assert_close(got[i], alone[0], atol=1e-5, rtol=0)


def _attention_inputs(batch: int = 1):
    generator = torch.Generator().manual_seed(0)
    ragged = Ragged.of([3, 5], 8)
    q, k, v = (torch.randn(batch, 2, 8, 4, generator=generator) for _ in range(3))
    return ragged, q, k, v


def test_packed_attention_refuses_sliding_windows():
    ragged, q, k, v = _attention_inputs()
    with pytest.raises(ValueError, match="one row and plain attention"):
        packed_attention(nn.Module(), q, k, v, None, sliding_window=4, **{RAGGED: ragged})


def test_packed_attention_refuses_more_than_one_row():
    ragged, q, k, v = _attention_inputs(batch=2)
    with pytest.raises(ValueError, match="one row"):
        packed_attention(nn.Module(), q, k, v, None, **{RAGGED: ragged})


def test_packed_attention_attends_within_each_sequence():
    ragged, q, k, v = _attention_inputs()
    out, weights = packed_attention(nn.Module(), q, k, v, None, **{RAGGED: ragged})
    assert weights is None and out.shape == (1, 8, 2, 4)
    for start, length in ((0, 3), (3, 5)):
        part = slice(start, start + length)
        alone = torch.nn.functional.scaled_dot_product_attention(
            q[:, :, part], k[:, :, part], v[:, :, part]
        )
        torch.testing.assert_close(out[:, part], alone.transpose(1, 2), atol=1e-6, rtol=1e-5)
