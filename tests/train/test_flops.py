"""Model FLOPs: the parameters that multiply (embedding tables left out), the forward cost
2 N sum(n) + 4 L d sum(n^2) by hand, and the device peak: a datasheet table matched in
order for GPUs (the more specific name first), a measured product elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cpt_embed.train import flops
from cpt_embed.train.flops import GPU_PEAKS, forward_flops, matmul_params, peak_flops


def test_matmul_params_of_a_small_model_by_hand():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 3), nn.LayerNorm(3))
    assert matmul_params(model) == (4 * 3 + 3) + (3 + 3)


def test_matmul_params_leave_out_every_embedding_table():
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=500,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    model = BertModel(config)
    tables = (
        config.vocab_size + config.max_position_embeddings + config.type_vocab_size
    ) * config.hidden_size
    total = sum(p.numel() for p in model.parameters())
    assert matmul_params(model) == total - tables
    outside = sum(
        p.numel()
        for module in model.modules()
        if not isinstance(module, nn.Embedding)
        for p in module.parameters(recurse=False)
    )
    assert matmul_params(model) == outside


def test_forward_flops_by_hand():
    lengths = [np.array([1, 2]), np.array([3]), np.array([], dtype=np.int64)]
    # tokens 1 + 2 + 3 = 6, squares 1 + 4 + 9 = 14
    assert forward_flops(10, 2, 4, lengths) == 2 * 10 * 6 + 4 * 2 * 4 * 14
    assert forward_flops(1000, 6, 384, [[128] * 4]) == 2 * 1000 * 512 + 4 * 6 * 384 * 4 * 128**2
    assert forward_flops(5, 1, 1, []) == 0


def test_forward_flops_do_not_overflow_on_large_batches():
    lengths = [np.full(4096, 8192, dtype=np.int32)]  # int32 squares would overflow
    expected = 2.0 * 1e9 * 4096 * 8192 + 4.0 * 32 * 4096 * 4096 * 8192**2
    assert forward_flops(int(1e9), 32, 4096, lengths) == pytest.approx(expected, rel=1e-12)


def _fake_gpu(monkeypatch, name: str) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA L40S", 362e12),
        ("NVIDIA L40", 181e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA A10G", 70e12),
        ("NVIDIA A10", 125e12),
        ("NVIDIA GeForce RTX 4090", 165e12),
    ],
)
def test_gpu_peaks_come_from_the_table_most_specific_first(monkeypatch, name, peak):
    _fake_gpu(monkeypatch, name)
    got, source = peak_flops(torch.device("cuda", 0), torch.bfloat16)
    assert got == peak
    assert name in source and "datasheet" in source


@pytest.mark.parametrize("part, peak", GPU_PEAKS)
def test_every_table_entry_is_reachable(monkeypatch, part, peak):
    _fake_gpu(monkeypatch, f"NVIDIA {part}")
    assert peak_flops(torch.device("cuda"), torch.bfloat16)[0] == peak


def test_an_unknown_gpu_is_measured(monkeypatch):
    _fake_gpu(monkeypatch, "Some Future GPU 9000")
    seen = []
    monkeypatch.setattr(
        flops, "measured_peak", lambda device, dtype: seen.append((device, dtype)) or 5e12
    )
    got, source = peak_flops(torch.device("cuda"), torch.bfloat16)
    assert got == 5e12 and "measured" in source and "bfloat16" in source
    assert seen == [(torch.device("cuda"), torch.bfloat16)]


def test_cpu_peak_is_measured():
    peak, source = peak_flops(torch.device("cpu"), torch.float32)
    assert peak > 1e8  # any CPU multiplies faster than 0.1 GFLOP/s
    assert "measured" in source and "float32" in source and "cpu" in source


def test_measured_peak_is_a_plausible_rate():
    peak = flops.measured_peak(torch.device("cpu"), torch.float32, size=256)
    assert 1e8 < peak < 1e14


def test_measuring_the_peak_draws_nothing_from_the_global_generator():
    """A resumed process measures its peak on its first log line, mid-run: drawing from the
    global generator there gave it other dropout masks than the uninterrupted run's."""
    torch.manual_seed(0)
    state = torch.get_rng_state()
    flops.measured_peak(torch.device("cpu"), torch.float32, size=64)
    assert torch.equal(torch.get_rng_state(), state)
