"""`cpt train`: contrastive pre-training from a YAML config and/or flags."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated

import typer

from cpt_embed.cli.common import DeviceOption, quiet_transformers, say, user_errors
from cpt_embed.train.config import TrainConfig

# A flag left out takes the config file's value, else TrainConfig's: its options default to
# None, and their help shows what TrainConfig gives.
_DEFAULTS = {field.name: field.default for field in dataclasses.fields(TrainConfig)}


def _default(name: str, text: str) -> str:
    """`text` followed by TrainConfig's default of `name`, as click shows a default."""
    value = _DEFAULTS[name]
    if isinstance(value, bool):
        shown = "on" if value else "off"
    elif isinstance(value, float):
        shown = f"{value:.4g}"
    else:
        shown = str(value)
    return f"{text}  [default: {shown}]"


@user_errors
def train(
    config: Annotated[
        Path | None, typer.Argument(help="YAML file of settings; flags override it.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help=_default("model", "Start point."))
    ] = None,
    data: Annotated[
        list[str] | None,
        typer.Option(help="Pair files, folders or globs; `path:weight` mixes sources. Repeatable."),
    ] = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help=_default("output", "Run folder."))
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help=_default("batch_size", "Pairs per step (global)."))
    ] = None,
    chunk_size: Annotated[
        int | None,
        typer.Option(
            help=_default("chunk_size", "Texts per forward pass (gradient caching) on CPU.")
        ),
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
            help=_default(
                "packing",
                "Put a chunk's texts end to end in one row where the model allows it, so "
                "that only attention sees padding.",
            ),
        ),
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(help=_default("max_steps", "Optimiser steps."))
    ] = None,
    lr: Annotated[float | None, typer.Option(help=_default("lr", "Peak learning rate."))] = None,
    warmup: Annotated[
        float | None, typer.Option(help=_default("warmup", "Warm-up fraction of the steps."))
    ] = None,
    schedule: Annotated[
        str | None, typer.Option(help=_default("schedule", "linear, cosine or constant."))
    ] = None,
    weight_decay: Annotated[
        float | None, typer.Option(help=_default("weight_decay", "AdamW weight decay."))
    ] = None,
    grad_clip: Annotated[
        float | None, typer.Option(help=_default("grad_clip", "Max gradient norm."))
    ] = None,
    tau_init: Annotated[
        float | None, typer.Option(help=_default("tau_init", "Initial tau (logit scale exp(tau))."))
    ] = None,
    tau_max: Annotated[
        float | None, typer.Option(help=_default("tau_max", "Clamp of tau."))
    ] = None,
    learn_tau: Annotated[
        bool | None,
        typer.Option(
            "--learn-tau/--fixed-tau",
            help=_default("learn_tau", "Learn the temperature, or keep it at --tau-init."),
        ),
    ] = None,
    max_length: Annotated[
        int | None, typer.Option(help="Tokens per text (default: the model's own).")
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help=_default("dtype", "float32 or bfloat16 (autocast)."))
    ] = None,
    gradient_checkpointing: Annotated[
        bool | None,
        typer.Option(
            "--gradient-checkpointing/--no-gradient-checkpointing",
            help=_default("gradient_checkpointing", "Recompute activations in the backward pass."),
        ),
    ] = None,
    hard_negatives: Annotated[
        str | None,
        typer.Option(help="Field of each pair holding a list of hard negatives (default: none)."),
    ] = None,
    false_negative_margin: Annotated[
        float | None,
        typer.Option(
            help="Mask a negative the model scores above the positive minus this cosine "
            "margin (an unlabeled positive, likely); default off."
        ),
    ] = None,
    shuffle_buffer: Annotated[
        int | None, typer.Option(help=_default("shuffle_buffer", "Pairs in the shuffle buffer."))
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help=_default("seed", "Seed of the data order and dropout."))
    ] = None,
    save_every: Annotated[
        int | None, typer.Option(help=_default("save_every", "Checkpoint every N steps."))
    ] = None,
    keep_last: Annotated[
        int | None, typer.Option(help=_default("keep_last", "Checkpoints kept."))
    ] = None,
    log_every: Annotated[
        int | None, typer.Option(help=_default("log_every", "metrics.jsonl every N steps."))
    ] = None,
    eval_every: Annotated[
        int | None, typer.Option(help=_default("eval_every", "Evaluate every N steps (0: never)."))
    ] = None,
    eval_tasks: Annotated[
        str | None, typer.Option(help=_default("eval_tasks", "Tasks of the periodic evaluation."))
    ] = None,
    device: DeviceOption = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Go on from the last checkpoint.")
    ] = False,
) -> None:
    """Contrastive pre-training of an Encoder on (x, y) pairs: symmetric in-batch loss with a
    learned temperature, large batches by gradient caching, several processes via torchrun."""
    values = {k: v for k, v in locals().items() if k not in ("config", "resume")}
    settings = TrainConfig.load(config, **values, resume=resume or None)
    from cpt_embed.train.sources import parse_sources

    parse_sources(settings.data)  # before torch loads: a wrong path answers at once
    from cpt_embed.train.checkpoints import nothing_to_resume
    from cpt_embed.train.loop import train as run_training

    if settings.resume and (note := nothing_to_resume(Path(settings.output))):
        if os.environ.get("RANK", "0") == "0":
            say(note)
        settings = dataclasses.replace(settings, resume=False)

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
