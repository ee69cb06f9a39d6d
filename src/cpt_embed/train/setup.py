"""The pieces a training run is set up from: the Encoder to train, AdamW, the learning-rate
schedule and mixed precision."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import get_scheduler

from cpt_embed.errors import InputError
from cpt_embed.model import Encoder
from cpt_embed.train.config import TrainConfig
from cpt_embed.train.loss import ContrastiveLoss

# Our schedule names and transformers' for them.
SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


def load_encoder(config: TrainConfig, checkpoint: Path | None) -> Encoder:
    """The Encoder to train, in train mode: the checkpoint's, or the start point with the
    config's encoder settings (and max_length) applied."""
    if torch.cuda.is_available() and config.device is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    else:
        device = config.device or "cpu"
    overrides = {} if checkpoint else dict(config.encoder)
    if config.max_length:
        overrides["max_length"] = config.max_length
    try:
        encoder = Encoder.load(
            checkpoint / "model" if checkpoint else config.model, device=device, **overrides
        ).train()
    except (TypeError, ValueError) as err:
        raise InputError(f"model {config.model!r} with settings {overrides}: {err}") from None
    if config.gradient_checkpointing:
        encoder.backbone.gradient_checkpointing_enable()
    return encoder


def optimizer_for(
    encoder: Encoder, loss_fn: ContrastiveLoss, config: TrainConfig
) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases, norms and tau."""
    decay, no_decay = [], []
    for name, param in encoder.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    no_decay += [p for p in loss_fn.parameters() if p.requires_grad]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # fused: one kernel for all parameters (as the Hugging Face Trainer does by default)
    return torch.optim.AdamW(groups, lr=config.lr, fused=encoder.device.type in ("cpu", "cuda"))


def scheduler_for(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler:
    """transformers' schedule of that name, with int(warmup * max_steps) warm-up steps.

    Its warm-up runs step k (from 0) at lr * k / warmup_steps, as the Hugging Face Trainer
    and sentence-transformers do: the first update has lr 0 (AdamW's moments still take in
    its gradient) and the full lr comes at step warmup_steps. Our own schedule, which this
    replaced, ran step k at lr * (k + 1) / warmup_steps; after the warm-up (and without
    one) the two are the same."""
    return get_scheduler(
        SCHEDULES[config.schedule],
        optimizer,
        num_warmup_steps=int(config.warmup * config.max_steps),
        num_training_steps=config.max_steps,
    )


def autocast_for(config: TrainConfig, device: torch.device) -> Callable[[], Any] | None:
    """A factory of bfloat16 autocast contexts for dtype bfloat16; none for float32.
    Autocast keeps the weights, gradients and AdamW's moments in float32 (updates as exact as
    in float32 training) and casts the weights of each matrix product to bfloat16."""
    if config.dtype != "bfloat16":
        return None
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
