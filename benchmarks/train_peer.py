"""The peer's side of the training benchmark: sentence-transformers' trainer with
MultipleNegativesRankingLoss or its cached variant, on the batches train.py gives ours, timed
between its step callbacks."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from train import Setup


def sync(device: str) -> None:
    """Wait for a GPU's queued work, so that a step's time is its own."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_st(
    setup: Setup, batches: list[list[dict]], spec: dict, lr: float, scale: float
) -> dict[str, Any]:
    """sentence-transformers' trainer on the same batches, timed between its callbacks."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []
            self.wall: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs) -> None:
            self.ends.append(time.perf_counter())
            self.wall.append(time.time())

        def on_step_end(self, args, state, control, **kwargs) -> None:
            sync(setup.device)
            self.ends.append(time.perf_counter())
            self.wall.append(time.time())

    model, loss = _model_and_loss(setup, scale)
    rows = [r for b in batches for r in b]
    dataset = Dataset.from_dict(
        {"anchor": [r["x"] for r in rows], "positive": [r["y"] for r in rows]}
    )
    args = SentenceTransformerTrainingArguments(
        output_dir=spec["output"],
        max_steps=len(batches),
        per_device_train_batch_size=setup.batch,
        learning_rate=lr,
        bf16=setup.dtype == "bfloat16",
        use_cpu=setup.device == "cpu",
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=0,
        dataloader_drop_last=True,
    )
    timer = StepTimer()
    SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset, loss=loss, callbacks=[timer]
    ).train()
    steps = [b - a for a, b in zip(timer.ends, timer.ends[1:], strict=False)]
    return {
        "step_s": steps[1:],
        "window": [timer.wall[1], timer.wall[-1]],
        "flops": [_flops(model, setup, batch) for batch in batches[1:]],
    }


def _flops(model, setup: Setup, batch: list[dict]) -> float:
    """Model FLOPs of one of sentence-transformers' steps, by our formula over the tokens
    its tokenizer gives the batch."""
    from cpt_embed.train.flops import forward_flops, matmul_params

    backbone = model[0].auto_model
    lengths = [
        [
            min(len(ids), setup.max_length)
            for ids in model.tokenizer([r[k] for r in batch])["input_ids"]
        ]
        for k in ("x", "y")
    ]
    passes = 4 if setup.loss == "cached-mnrl" else 3
    params, config = matmul_params(backbone), backbone.config
    return passes * forward_flops(params, config.num_hidden_layers, config.hidden_size, lengths)


def _model_and_loss(setup: Setup, scale: float):
    """The same start point as a SentenceTransformer (mean pooling for BERT-likes, last-token
    for causal LMs, as our Encoder pools them) and the configured loss."""
    from sentence_transformers import SentenceTransformer, losses, models

    from cpt_embed.model.loading import is_causal_lm
    from cpt_embed.model.resolve import resolve_model

    folder = str(resolve_model(setup.model))
    transformer = models.Transformer(folder, max_seq_length=setup.max_length)
    causal = is_causal_lm(transformer.auto_model.config)
    if transformer.tokenizer.pad_token is None:
        transformer.tokenizer.pad_token = transformer.tokenizer.eos_token
    pooling = models.Pooling(
        transformer.get_word_embedding_dimension(), "lasttoken" if causal else "mean"
    )
    modules = [transformer, pooling, models.Normalize()]
    model = SentenceTransformer(modules=modules, device=setup.device)
    if setup.loss == "cached-mnrl":
        return model, losses.CachedMultipleNegativesRankingLoss(
            model, scale=scale, mini_batch_size=setup.chunk
        )
    return model, losses.MultipleNegativesRankingLoss(model, scale=scale)
