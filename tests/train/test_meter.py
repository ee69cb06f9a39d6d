"""The Meter's log-line rates on a controlled clock and peak: pairs/s, tokens/s and MFU from
known counts over known seconds, 4 forward passes for a cached step and 3 for one in one
graph, the waited share, run totals over every step, and the summary line."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cpt_embed import Encoder
from cpt_embed.train import loop as loop_module
from cpt_embed.train import meter as meter_module
from cpt_embed.train.batch import StepBatch
from cpt_embed.train.chunks import Side
from cpt_embed.train.config import TrainConfig
from cpt_embed.train.flops import matmul_params
from cpt_embed.train.loop import Trainer
from cpt_embed.train.meter import Meter

PEAK = 1e9


class _Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def encoder(tiny_bert) -> Encoder:
    return Encoder.load(tiny_bert, device="cpu")


@pytest.fixture
def clock(monkeypatch) -> _Clock:
    clock = _Clock()
    monkeypatch.setattr(meter_module, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    monkeypatch.setitem(meter_module._PEAKS, ("cpu", torch.float32), (PEAK, "a test peak"))
    return clock


def _batch(*sides: list[int]) -> StepBatch:
    return StepBatch(
        [Side([], torch.arange(len(s)), np.array(s, dtype=np.int64)) for s in sides],
        pairs=len(sides[0]),
    )


def _row(meter: Meter) -> dict[str, float]:
    step = {"loss": torch.tensor(1.5), "grad_norm": torch.tensor(0.25)}
    loss_fn = SimpleNamespace(scale=torch.tensor(20.0))
    scheduler = SimpleNamespace(get_last_lr=lambda: [1e-4])
    return meter.row(step, loss_fn, scheduler)


def _forward(encoder: Encoder, *sides: list[int]) -> float:
    """2 N sum(n) + 4 L d sum(n^2) over every text of the step, by hand."""
    config = encoder.backbone.config
    n = matmul_params(encoder.backbone)
    tokens = sum(sum(side) for side in sides)
    squares = sum(x * x for side in sides for x in side)
    return 2 * n * tokens + 4 * config.num_hidden_layers * config.hidden_size * squares


def test_a_row_reports_rates_over_its_seconds(encoder, clock):
    meter = Meter(encoder, "float32")
    xs, ys = [5, 9, 3, 7], [11, 4, 6, 8]
    clock.now += 1.0
    meter.add(_batch(xs, ys), global_pairs=4, cached=False)
    clock.now += 1.0
    meter.add(_batch(xs, ys), global_pairs=4, cached=False)
    meter.waited(0.5)
    clock.now += 2.0  # 4 s since the meter started
    row = _row(meter)
    assert row["loss"] == 1.5 and row["grad_norm"] == 0.25
    assert row["scale"] == 20.0 and row["lr"] == 1e-4
    assert row["pairs_per_s"] == pytest.approx(8 / 4)
    assert row["tokens_per_s"] == pytest.approx(2 * (24 + 29) / 4)
    assert row["mfu"] == pytest.approx(2 * 3 * _forward(encoder, xs, ys) / 4 / PEAK)
    assert row["waiting"] == pytest.approx(0.5 / 4)


def test_a_cached_step_counts_four_forward_passes(encoder, clock):
    meter = Meter(encoder, "float32")
    sides = ([20, 3], [7, 7], [1, 30, 2, 4])  # hard negatives as a third side
    meter.add(_batch(*sides), global_pairs=2, cached=True)
    clock.now += 2.0
    cached = _row(meter)
    assert cached["mfu"] == pytest.approx(4 * _forward(encoder, *sides) / 2 / PEAK)
    meter.add(_batch(*sides), global_pairs=2, cached=False)
    clock.now += 2.0
    whole = _row(meter)
    assert whole["mfu"] == pytest.approx(3 * _forward(encoder, *sides) / 2 / PEAK)
    assert whole["tokens_per_s"] == cached["tokens_per_s"] == pytest.approx(74 / 2)


def test_each_row_covers_the_steps_since_the_last_and_totals_all(encoder, clock):
    meter = Meter(encoder, "float32")
    assert meter.totals() == {} and meter.summary_line() == "no steps run"
    meter.add(_batch([4, 4], [6, 6]), global_pairs=2, cached=False)
    meter.waited(1.0)
    clock.now += 4.0
    first = _row(meter)
    for _ in range(3):
        meter.add(_batch([10, 10], [10, 10]), global_pairs=2, cached=True)
    meter.waited(0.5)
    clock.now += 2.0
    second = _row(meter)
    assert first["pairs_per_s"] == pytest.approx(2 / 4) and first["waiting"] == 0.25
    assert second["pairs_per_s"] == pytest.approx(6 / 2) and second["waiting"] == 0.25
    assert second["tokens_per_s"] == pytest.approx(3 * 40 / 2)

    totals = meter.totals()
    assert totals["pairs_per_s"] == pytest.approx(8 / 6, abs=1e-4)
    assert totals["tokens_per_s"] == pytest.approx((20 + 120) / 6, abs=1e-4)
    flops = 3 * _forward(encoder, [4, 4], [6, 6]) + 3 * 4 * _forward(encoder, [10, 10], [10, 10])
    assert totals["mfu"] == pytest.approx(flops / 6 / PEAK, abs=1e-4)
    assert totals["waiting"] == pytest.approx(1.5 / 6, abs=1e-4)
    assert totals["peak"] == "a test peak"
    json.dumps(totals)  # stored in the model's cpt_config.json


def test_the_summary_line_says_pairs_tokens_and_mfu(encoder, clock):
    meter = Meter(encoder, "float32")
    meter.add(_batch([8] * 16, [8] * 16), global_pairs=16, cached=False)
    clock.now += 2.0
    _row(meter)
    line = meter.summary_line()
    assert line.startswith("1 steps: 8.0 pairs/s, 128 tokens/s, MFU ")
    assert "a test peak" in line


def test_the_peak_is_measured_once_per_device_and_dtype(encoder, monkeypatch):
    monkeypatch.setattr(meter_module, "_PEAKS", {})
    calls = []

    def fake_peak(device, dtype):
        calls.append((device.type, dtype))
        return 2e9, f"fake {dtype}"

    monkeypatch.setattr(meter_module, "peak_flops", fake_peak)
    assert Meter(encoder, "float32").peak() == (2e9, "fake torch.float32")
    assert Meter(encoder, "float32").peak() == (2e9, "fake torch.float32")
    assert Meter(encoder, "bfloat16").peak() == (2e9, "fake torch.bfloat16")
    assert calls == [("cpu", torch.float32), ("cpu", torch.bfloat16)]


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    path = tmp_path / "pairs.jsonl"
    lines = [json.dumps({"x": f"question {i}", "y": f"answer {i} in words"}) for i in range(64)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_setup_before_the_first_step_is_not_training_time(
    tiny_bert, pairs_file, tmp_path, monkeypatch
):
    monkeypatch.setenv("CPT_CACHE", str(tmp_path / "cache"))
    offset = [0.0]
    real = meter_module.time.perf_counter
    monkeypatch.setattr(
        meter_module, "time", SimpleNamespace(perf_counter=lambda: real() + offset[0])
    )
    real_store = loop_module.PairStore

    def slow_store(*args, **kwargs):
        offset[0] += 1000.0  # a large corpus tokenized for the cache: 1000 s
        return real_store(*args, **kwargs)

    monkeypatch.setattr(loop_module, "PairStore", slow_store)
    config = TrainConfig(
        model=str(tiny_bert),
        data=[str(pairs_file)],
        output=str(tmp_path / "run"),
        batch_size=8,
        max_steps=2,
        log_every=1,
        max_length=16,
        shuffle_buffer=16,
    )
    trainer = Trainer(config)
    trainer.run(show_progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    # two steps of 8 pairs of a tiny model take well under 8 s each: above 1 pair/s
    assert rows[0]["pairs_per_s"] > 1.0
    assert trainer.meter.totals()["pairs_per_s"] > 1.0
