"""Linear layers on weights pre-packed for oneDNN against F.linear."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cpt_embed.model.runtime.packing import PackedLinear, is_packed, pack_linears


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")
def test_packed_linear_equals_f_linear():
    linear = nn.Linear(24, 40).to(torch.bfloat16).requires_grad_(False)
    x = torch.randn(3, 5, 24, dtype=torch.bfloat16)
    packed = PackedLinear(linear)
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
