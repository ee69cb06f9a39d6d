"""The fast CPU dropout: keep_mask keeps each element with probability 1 - p (every 16-bit
part of each random word alike), follows the global RNG state, and dropout scales what it
keeps; FastDropout is the identity in eval mode and use_fast_dropout swaps every active
nn.Dropout of a model without changing its eval outputs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cpt_embed.model.runtime.dropout import FastDropout, dropout, keep_mask, use_fast_dropout

_N = 1 << 20
_CPU = torch.device("cpu")


def _bound(p: float, n: int) -> float:
    """Six standard deviations of a rate over n draws, plus the 1/65536 quantisation of p."""
    return 6 * math.sqrt(p * (1 - p) / n) + 1 / 65536


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_keeps_about_one_minus_p(p):
    torch.manual_seed(0)
    mask = keep_mask((_N // 64, 64), p, _CPU)
    assert mask.dtype == torch.bool and mask.shape == (_N // 64, 64)
    assert abs(mask.float().mean().item() - (1 - p)) < _bound(p, _N)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_every_16_bit_part_of_a_word_is_used_alike(p):
    torch.manual_seed(1)
    dropped = ~keep_mask((_N,), p, _CPU)
    parts = dropped.view(-1, 4).float()  # element 4i + j: part j of word i
    for j in range(4):
        assert abs(parts[:, j].mean().item() - p) < _bound(p, _N // 4), j
    # and the parts are independent: two of one word are dropped together at rate p^2
    for a, b in ((0, 1), (1, 2), (2, 3), (0, 3)):
        both = (parts[:, a] * parts[:, b]).mean().item()
        assert abs(both - p * p) < _bound(p * p, _N // 4), (a, b)


def test_shapes_whose_size_is_not_a_multiple_of_four():
    torch.manual_seed(0)
    for shape in [(1,), (3,), (5, 7), (2, 3, 5)]:
        assert keep_mask(shape, 0.3, _CPU).shape == shape
    assert keep_mask((1000, 3), 0.0, _CPU).all()


def test_the_same_rng_state_gives_the_same_mask():
    torch.manual_seed(7)
    first = keep_mask((4096,), 0.3, _CPU)
    torch.manual_seed(7)
    assert torch.equal(keep_mask((4096,), 0.3, _CPU), first)
    torch.manual_seed(8)
    assert not torch.equal(keep_mask((4096,), 0.3, _CPU), first)
    state = torch.get_rng_state()
    again = keep_mask((4096,), 0.3, _CPU)
    assert not torch.equal(keep_mask((4096,), 0.3, _CPU), again)  # the draws go on
    torch.set_rng_state(state)
    assert torch.equal(keep_mask((4096,), 0.3, _CPU), again)  # a restored state replays


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_zeroes_dropped_and_scales_kept(p):
    torch.manual_seed(0)
    x = torch.rand(_N // 256, 256) + 0.5  # no zeros of its own
    original = x.clone()
    y = dropout(x, p)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    assert abs(1 - kept.float().mean().item() - p) < _bound(p, _N)
    assert torch.equal(x, original)  # the input is left alone
    ones = dropout(torch.ones(_N), p)
    assert abs(ones.mean().item() - 1) < _bound(p, _N) / (1 - p)


def test_p_zero_returns_the_input_and_p_one_zeroes_it():
    x = torch.randn(10, 10)
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_back_propagates_through_its_mask(p):
    torch.manual_seed(3)
    x = (torch.rand(64, 128) + 0.5).requires_grad_()
    y = dropout(x, p)
    upstream = torch.randn(64, 128)
    (y * upstream).sum().backward()
    mask = (y != 0).float()
    assert 0 < mask.mean() < 1
    torch.testing.assert_close(x.grad, upstream * mask / (1 - p))


def test_fast_dropout_is_the_identity_in_eval_mode():
    layer = FastDropout(0.5)
    x = torch.randn(100, 100)
    assert torch.equal(layer.eval()(x), x)
    torch.manual_seed(0)
    trained = layer.train()(x)
    assert (trained == 0).any() and not torch.equal(trained, x)
    assert "p=0.5" in repr(layer)


def test_use_fast_dropout_replaces_every_active_dropout(tiny_bert):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tiny_bert)
    model.eval()
    active = [m.p for m in model.modules() if type(m) is nn.Dropout and m.p > 0]
    assert active  # tiny_bert has dropout 0.1
    model.encoder.layer[0].output.dropout = nn.Dropout(0.0)  # an inactive one stays
    active = [m.p for m in model.modules() if type(m) is nn.Dropout and m.p > 0]
    ids = torch.randint(1000, 2000, (3, 11), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).last_hidden_state

    assert use_fast_dropout(model) == len(active)
    assert not [m for m in model.modules() if type(m) is nn.Dropout and m.p > 0]
    assert sorted(m.p for m in model.modules() if isinstance(m, FastDropout)) == sorted(active)
    assert model.encoder.layer[0].output.dropout.p == 0.0
    model.eval()
    with torch.no_grad():
        after = model(input_ids=ids, attention_mask=mask).last_hidden_state
        assert torch.equal(after, before)
        model.train()
        torch.manual_seed(0)
        trained = model(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.manual_seed(0)
        assert torch.equal(model(input_ids=ids, attention_mask=mask).last_hidden_state, trained)
    assert not torch.allclose(trained, before, atol=1e-3)  # the new layers drop in training
    assert use_fast_dropout(model) == 0  # nothing left to replace


def test_use_fast_dropout_keeps_an_eval_model_in_eval_mode():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    model = BertModel(config).eval()
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(input_ids=ids).last_hidden_state
        assert use_fast_dropout(model) > 0
        after = model(input_ids=ids).last_hidden_state
    assert not any(m.training for m in model.modules() if isinstance(m, FastDropout))
    assert torch.equal(after, before)
