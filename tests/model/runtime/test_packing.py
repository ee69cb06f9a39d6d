"""Linear layers on weights pre-packed for oneDNN against F.linear: the inference copy's,
and training's (gradients too, packed again after every optimiser step)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cpt_embed.model.runtime.copy import mark_updated
from cpt_embed.model.runtime.packing import (
    PackedLinear,
    TrainingLinear,
    fuse_gelu,
    is_packed,
    pack_linears,
    plain_linears,
    use_training_linears,
)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")
def test_packed_linear_equals_f_linear():
    linear = nn.Linear(24, 40).to(torch.bfloat16).requires_grad_(False)
    x = torch.randn(3, 5, 24, dtype=torch.bfloat16)
    packed = PackedLinear.of(linear)
    exact = F.linear(x.float(), linear.weight.float(), linear.bias.float())
    for rows in (slice(None), slice(1, 4)):  # whole and a non-contiguous view
        torch.testing.assert_close(packed(x[:, rows]).float(), exact[:, rows], atol=2e-2, rtol=2e-2)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")
def test_packing_replaces_plain_linear_layers_only():
    class Scaled(nn.Linear):  # a subclass may do more than F.linear: left alone
        pass

    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), Scaled(8, 8)).to(torch.bfloat16)
    assert not is_packed(model)
    pack_linears(model)
    assert is_packed(model)
    assert [type(m).__name__ for m in model] == ["PackedLinear", "ReLU", "Scaled"]


needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")


def _bert(hidden_act: str) -> nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        hidden_act=hidden_act,
    )
    return BertModel(config).eval().requires_grad_(False)


@needs_onednn
def test_the_gelu_after_a_bert_feed_forward_product_is_folded_into_it():
    model = _bert("gelu")
    ids = torch.randint(0, 64, (3, 9), generator=torch.Generator().manual_seed(1))
    exact = model(input_ids=ids).last_hidden_state
    cast = copy.deepcopy(model).to(torch.bfloat16)
    pack_linears(cast)
    with torch.inference_mode():
        unfused = cast(input_ids=ids).last_hidden_state.float()
    assert fuse_gelu(cast) == 2
    blocks = [m for m in cast.modules() if type(m).__name__ == "BertIntermediate"]
    assert all(b.dense.gelu and isinstance(b.intermediate_act_fn, nn.Identity) for b in blocks)
    with torch.inference_mode():
        fused = cast(input_ids=ids).last_hidden_state.float()
    # as close to float32 as the unfused copy is, or closer
    assert (fused - exact).abs().max() <= (unfused - exact).abs().max() * 1.5
    torch.testing.assert_close(fused, exact, atol=0.1, rtol=0.05)


@needs_onednn
def test_other_activations_and_unpacked_layers_are_not_folded():
    tanh = _bert("gelu_new").to(torch.bfloat16)  # the tanh approximation: not oneDNN's erf GELU
    pack_linears(tanh)
    assert fuse_gelu(tanh) == 0
    unpacked = _bert("gelu").to(torch.bfloat16)  # plain nn.Linear layers
    assert fuse_gelu(unpacked) == 0


def _training_pair(seed: int = 0) -> tuple[nn.Linear, nn.Linear]:
    """An nn.Linear and a copy made TrainingLinear (its own parameters, the same values)."""
    torch.manual_seed(seed)
    plain = nn.Linear(24, 40)
    fast = copy.deepcopy(plain)
    assert use_training_linears(nn.Sequential(fast)) == 1 and isinstance(fast, TrainingLinear)
    return plain, fast


@needs_onednn
def test_training_linear_gives_f_linear_outputs_and_gradients():
    plain, fast = _training_pair()
    x = torch.randn(3, 5, 24)
    weights = torch.randn(3, 5, 40)
    inputs = []
    for layer in (plain, fast):
        xi = x.clone().requires_grad_()
        (layer(xi) * weights).sum().backward()
        inputs.append(xi.grad)
    torch.testing.assert_close(fast(x), plain(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(inputs[1], inputs[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast.bias.grad, plain.bias.grad, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the no-graph path (a cached step's first pass) agrees too
        torch.testing.assert_close(fast(x), plain(x), atol=1e-5, rtol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast: nn.Linear's own product
        assert fast(x).dtype == torch.bfloat16


@needs_onednn
@pytest.mark.parametrize("fused", [False, True])
def test_training_linear_packs_again_after_an_optimiser_step(fused):
    """Its packed weight follows every update: in-place ones bump the weight's version, and
    a fused AdamW step, which does not, is reported by mark_updated."""
    plain, fast = _training_pair()
    x = torch.randn(4, 24)
    optimisers = [torch.optim.AdamW(m.parameters(), lr=0.1, fused=fused) for m in (plain, fast)]
    for layer, optimiser in zip((plain, fast), optimisers, strict=True):
        layer(x).pow(2).sum().backward()
        optimiser.step()
    mark_updated(fast)
    torch.testing.assert_close(fast(x), plain(x), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(plain(x), _training_pair()[0](x))  # the step changed it


@needs_onednn
def test_copies_of_a_training_linear_pack_their_own_and_plain_linears_undoes_it():
    _, fast = _training_pair()
    x = torch.randn(2, 24)
    expected = fast(x)  # packs
    twin = copy.deepcopy(fast)  # oneDNN's packed tensors cannot be copied: packs anew
    torch.testing.assert_close(twin(x), expected)
    model = nn.Sequential(twin)
    plain_linears(model)
    assert type(model[0]) is nn.Linear and "_packed" not in model[0].__dict__
    torch.testing.assert_close(model[0](x), expected, atol=1e-5, rtol=1e-5)
