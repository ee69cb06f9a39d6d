"""What a log line reports: loss, scale, learning rate and gradient norm (read back from the
device only here), pairs/s, tokens/s and model FLOPs utilisation over the steps since the
last line, and the share of that time the step spent waiting for its batch."""

from __future__ import annotations

import time
from typing import Any

import torch

from cpt_embed.model import Encoder
from cpt_embed.train.batch import StepBatch
from cpt_embed.train.flops import forward_flops, matmul_params, peak_flops
from cpt_embed.train.loss import ContrastiveLoss

# Measured peaks, once per process: (device type, dtype) -> (FLOP/s, where from).
_PEAKS: dict[tuple[str, torch.dtype], tuple[float, str]] = {}


class _Counts:
    def __init__(self) -> None:
        self.pairs = self.tokens = self.steps = 0
        self.flops = self.waited = 0.0
        self.started = time.perf_counter()


class Meter:
    """Counts pairs, tokens and model FLOPs per step (this process's share), turned into
    rates on each log line (`row`) and for the whole run (`totals`)."""

    def __init__(self, encoder: Encoder, dtype: str) -> None:
        config = encoder.backbone.config
        self.params = matmul_params(encoder.backbone)
        self.layers = int(getattr(config, "num_hidden_layers", 0))
        self.width = int(getattr(config, "hidden_size", 0))
        self.device = encoder.device
        self.dtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
        self.interval, self.run = _Counts(), None

    def peak(self) -> tuple[float, str]:
        """The device's peak FLOP/s and where the figure comes from (measured once)."""
        key = (self.device.type, self.dtype)
        if key not in _PEAKS:
            _PEAKS[key] = peak_flops(self.device, self.dtype)
        return _PEAKS[key]

    def start(self) -> None:
        """Start the clock: the run's steps begin now (setting up is not training time)."""
        self.interval = _Counts()

    def waited(self, seconds: float) -> None:
        """Time the step spent waiting for its prepared batch."""
        self.interval.waited += seconds

    def add(self, batch: StepBatch, global_pairs: int, cached: bool) -> None:
        """Count one step over `batch` (a cached step costs one forward pass more)."""
        if self.run is None:
            self.run = _Counts()
            self.run.started = self.interval.started
        passes = 4 if cached else 3
        flops = passes * forward_flops(self.params, self.layers, self.width, batch.lengths)
        tokens = sum(int(side.sum()) for side in batch.lengths)
        for counts in (self.interval, self.run):
            counts.pairs += global_pairs
            counts.tokens += tokens
            counts.flops += flops
            counts.steps += 1

    def _rates(self, counts: _Counts, now: float) -> dict[str, float]:
        seconds = max(now - counts.started, 1e-9)
        peak, _ = self.peak()
        world = _world_size()
        return {
            "pairs_per_s": counts.pairs / seconds,
            "tokens_per_s": counts.tokens * world / seconds,
            "mfu": counts.flops / seconds / peak,
            "waiting": counts.waited / seconds,
        }

    def row(
        self, step: dict[str, torch.Tensor], loss_fn: ContrastiveLoss, scheduler: Any
    ) -> dict[str, float]:
        """The log line of the steps since the last one (reads the device's values back)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        values = {
            "loss": float(step["loss"]),
            "scale": float(loss_fn.scale.detach()),
            "lr": scheduler.get_last_lr()[0],
            "grad_norm": float(step["grad_norm"]),
            **self._rates(self.interval, now),
        }
        if self.run is not None:
            self.run.waited += self.interval.waited
        self.interval = _Counts()
        self.interval.started = now
        return values

    def totals(self) -> dict[str, float]:
        """Rates over the whole run so far (for the model's training summary)."""
        if self.run is None:
            return {}
        rates = self._rates(self.run, time.perf_counter())
        _, source = self.peak()
        return {**{k: round(v, 4) for k, v in rates.items()}, "peak": source}

    def summary_line(self) -> str:
        """The run's speed in one line."""
        totals = self.totals()
        if not totals:
            return "no steps run"
        return (
            f"{self.run.steps} steps: {totals['pairs_per_s']:,.1f} pairs/s, "
            f"{totals['tokens_per_s']:,.0f} tokens/s, MFU {totals['mfu']:.1%} "
            f"(of the {totals['peak']} peak)"
        )


def _world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1
