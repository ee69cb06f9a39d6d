"""`cpt train`: contrastive pre-training from a YAML config and/or flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from cpt_embed.cli.common import DeviceOption, quiet_transformers, say, user_errors


@user_errors
def train(
    config: Annotated[
        Path | None, typer.Argument(help="YAML file of settings; flags override it.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Start point.")] = None,
    data: Annotated[
        list[str] | None,
        typer.Option(help="Pair files, folders or globs; `path:weight` mixes sources. Repeatable."),
    ] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Run folder.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Pairs per step (global).")] = None,
    chunk_size: Annotated[
        int | None,
        typer.Option(help="Texts per forward pass (gradient caching) on CPU (default 64)."),
    ] = None,
    chunk_tokens: Annotated[
        int | None,
        typer.Option(
            help="Tokens per forward pass, in place of --chunk-size (default: on a GPU, what "
            "its free memory holds)."
        ),
    ] = None,
    grad_cache: Annotated[
        bool | None,
        typer.Option(
            "--grad-cache/--no-grad-cache",
            help="Cache gradients whenever a side takes several chunks / never (default: "
            "only where the batch's activations would not fit the memory set aside).",
        ),
    ] = None,
    packing: Annotated[
        bool | None,
        typer.Option(
            "--packing/--no-packing",
            help="Put a chunk's texts end to end in one row where the model allows it, so "
            "that only attention sees padding (default: on).",
        ),
    ] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimiser steps.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    warmup: Annotated[float | None, typer.Option(help="Warm-up fraction of the steps.")] = None,
    schedule: Annotated[str | None, typer.Option(help="linear, cosine or constant.")] = None,
    weight_decay: Annotated[float | None, typer.Option()] = None,
    grad_clip: Annotated[float | None, typer.Option(help="Max gradient norm.")] = None,
    tau_init: Annotated[float | None, typer.Option(help="Initial tau (scale exp(tau)).")] = None,
    tau_max: Annotated[float | None, typer.Option(help="Clamp of tau.")] = None,
    learn_tau: Annotated[bool | None, typer.Option("--learn-tau/--fixed-tau")] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens per text.")] = None,
    dtype: Annotated[str | None, typer.Option(help="float32 or bfloat16 (autocast).")] = None,
    gradient_checkpointing: Annotated[
        bool | None, typer.Option("--gradient-checkpointing/--no-gradient-checkpointing")
    ] = None,
    hard_negatives: Annotated[
        str | None, typer.Option(help="Field of each pair holding a list of hard negatives.")
    ] = None,
    false_negative_margin: Annotated[
        float | None,
        typer.Option(
            help="Mask a negative the model scores above the positive minus this cosine "
            "margin (an unlabeled positive, likely); default off."
        ),
    ] = None,
    shuffle_buffer: Annotated[int | None, typer.Option(help="Pairs in the shuffle buffer.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    save_every: Annotated[int | None, typer.Option(help="Checkpoint every N steps.")] = None,
    keep_last: Annotated[int | None, typer.Option(help="Checkpoints kept.")] = None,
    log_every: Annotated[int | None, typer.Option(help="metrics.jsonl every N steps.")] = None,
    eval_every: Annotated[
        int | None, typer.Option(help="Evaluate every N steps (0: never).")
    ] = None,
    eval_tasks: Annotated[
        str | None, typer.Option(help="Tasks of the periodic evaluation.")
    ] = None,
    device: DeviceOption = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Go on from the last checkpoint.")
    ] = False,
) -> None:
    """Contrastive pre-training of an Encoder on (x, y) pairs: symmetric in-batch loss with a
    learned temperature, large batches by gradient caching, several processes via torchrun."""
    values = {k: v for k, v in locals().items() if k not in ("config", "resume")}
    from cpt_embed.train.config import TrainConfig
    from cpt_embed.train.loop import train as run_training

    settings = TrainConfig.load(config, **values, resume=resume or None)
    evaluation = None
    if settings.eval_every:
        from cpt_embed.eval.periodic import periodic_evaluation

        evaluation = periodic_evaluation(settings.eval_tasks)
    quiet_transformers()
    try:
        final = run_training(settings, evaluate=evaluation)
    except KeyboardInterrupt as stop:
        say(str(stop) or "interrupted")
        raise typer.Exit(130) from None
    if os.environ.get("RANK", "0") == "0":
        say(f"trained model: {final}")
