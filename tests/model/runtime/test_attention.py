"""The CPU attention for inference against torch's scaled_dot_product_attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cpt_embed.model.runtime import attention
from cpt_embed.model.runtime.attention import RAGGED, Ragged, cpu_attention, use_cpu_attention


def _inputs(batch: int, tokens: int, dtype: torch.dtype, padded: bool):
    generator = torch.Generator().manual_seed(batch * 1000 + tokens)
    q, k, v = (torch.randn(batch, 4, tokens, 8, generator=generator, dtype=dtype) for _ in range(3))
    lengths = torch.randint(1, tokens + 1, (batch,), generator=generator)
    keep = torch.arange(tokens)[None, :] < lengths[:, None]  # (batch, keys)
    mask = keep[:, None, None, :].expand(batch, 1, tokens, tokens) if padded else None
    return q, k, v, mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("padded", [True, False])
@pytest.mark.parametrize("group", [1, 3, 1 << 20])
def test_equals_sdpa_for_every_group_size(monkeypatch, dtype, padded, group):
    # group: sequences per step: one, a size that leaves a remainder, all at once
    monkeypatch.setattr(attention, "_SCORES_PER_GROUP", group * 4 * 9 * 9)
    q, k, v, mask = _inputs(7, 9, dtype, padded)
    with torch.no_grad():
        ours, weights = cpu_attention(nn.Module(), q, k, v, mask, scaling=0.3)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3)
    assert weights is None and ours.shape == (7, 9, 4, 8)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(ours, expected.transpose(1, 2), atol=tolerance, rtol=tolerance)


def test_additive_float_masks_work_like_boolean_ones():
    q, k, v, mask = _inputs(5, 6, torch.float32, padded=True)
    additive = torch.zeros(mask.shape).masked_fill_(~mask, torch.finfo(torch.float32).min)
    with torch.no_grad():
        from_bool, _ = cpu_attention(nn.Module(), q, k, v, mask)
        from_float, _ = cpu_attention(nn.Module(), q, k, v, additive)
    torch.testing.assert_close(from_float, from_bool)


def test_gradients_and_causal_attention_go_to_sdpa(monkeypatch):
    calls = []
    monkeypatch.setattr(attention, "sdpa", lambda: lambda *a, **k: calls.append(a) or (None, None))
    q, k, v, mask = _inputs(2, 3, torch.float32, padded=True)
    cpu_attention(nn.Module(), q.requires_grad_(), k, v, mask)  # training
    causal = nn.Module()
    causal.is_causal = True
    with torch.no_grad():
        cpu_attention(causal, q, k, v, None)
        cpu_attention(nn.Module(), q, k, v, mask, dropout=0.1)
        cpu_attention(nn.Module(), q, k, v, mask, sliding_window=2)  # ModernBERT's local layers
    assert len(calls) == 4


def test_bert_switches_and_gives_the_same_hidden_states(tiny_bert):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tiny_bert).eval()
    ids = torch.randint(1000, 2000, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 2:] = 0
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).last_hidden_state
        assert use_cpu_attention(model)
        assert model.config._attn_implementation == attention.NAME
        ours = model(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(ours[real], expected[real], atol=1e-5, rtol=1e-5)


def test_models_not_on_sdpa_are_left_alone(tiny_bert):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tiny_bert, attn_implementation="eager")
    assert not use_cpu_attention(model)
    assert model.config._attn_implementation == "eager"


@pytest.mark.parametrize("each", [False, True])
@pytest.mark.parametrize("group", [1, 1 << 20])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_ragged_row_attends_within_each_sequence_as_sdpa_does_alone(
    monkeypatch, group, dtype, each
):
    # group 1: the re-padded sequences' scores (4 x 6 x 6) pass the cache-sized group and go
    # to torch's SDPA; each: the sequences attend one at a time, unpadded (the longest, with
    # group 1, through SDPA)
    monkeypatch.setattr(attention, "_SCORES_PER_GROUP", group * 4 * 6 * 6 - 1)
    monkeypatch.setattr(attention, "EACH_FROM_TOKENS", 1 if each else 1 << 30)
    lengths, total = [5, 1, 6, 3], 17  # two tokens past the last sequence, as buckets leave
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 4, total, 8, generator=generator, dtype=dtype) for _ in range(3))
    ragged = Ragged.of(lengths, total)
    with torch.no_grad():
        ours, _ = cpu_attention(nn.Module(), q, k, v, None, scaling=0.3, **{RAGGED: ragged})
    assert ours.shape == (1, total, 4, 8)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    start = 0
    for n in lengths:
        part = slice(start, start + n)
        alone = F.scaled_dot_product_attention(
            q[:, :, part], k[:, :, part], v[:, :, part], scale=0.3
        )
        torch.testing.assert_close(
            ours[:, part], alone.transpose(1, 2), atol=tolerance, rtol=tolerance
        )
        start += n
    if each:
        assert not ours[:, start:].any()
    assert ragged.positions.tolist() == [0, 1, 2, 3, 4, 0, 0, 1, 2, 3, 4, 5, 0, 1, 2, 0, 0]
    assert ragged.sizes == tuple(lengths)


def test_a_ragged_row_outside_inference_or_with_a_sliding_window_is_refused():
    ragged = Ragged.of([2, 1])
    q = torch.randn(1, 2, 3, 4, requires_grad=True)
    with pytest.raises(ValueError, match="ragged rows run only"):
        cpu_attention(nn.Module(), q, q, q, None, **{RAGGED: ragged})
    with torch.no_grad(), pytest.raises(ValueError, match="ragged rows run only"):
        cpu_attention(nn.Module(), q, q, q, None, sliding_window=2, **{RAGGED: ragged})
