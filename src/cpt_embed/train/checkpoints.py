"""Checkpoints of a training run and picking up from them.

output/checkpoints/step-N holds the Encoder folder, each process's RNG state and, written
last, the training state (optimiser, schedule, loss, counters, settings): a folder without
the state file is incomplete and never resumed from. metrics.jsonl is cut back to the
checkpoint's step when a run resumes, so the log reads as one uninterrupted run."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cpt_embed.atomic import atomic_file, check_output_folder
from cpt_embed.errors import InputError
from cpt_embed.train.distributed import barrier, world
from cpt_embed.train.state import load_state, save_state

CHECKPOINTS = "checkpoints"
STATE = "state.safetensors"
# Settings that decide the data stream and the optimiser state: resuming needs the same.
RESUME_MUST_MATCH = (
    "batch_size",
    "data",
    "seed",
    "max_steps",
    "schedule",
    "lr",
    "warmup",
    "shuffle_buffer",
    "learn_tau",
    "hard_negatives",
    "false_negative_margin",
    "weight_decay",
    "encoder",
)


def latest_checkpoint(output: Path) -> Path | None:
    """The newest complete checkpoint folder under output/checkpoints."""
    folder = output / CHECKPOINTS
    found = (
        sorted(p for p in folder.glob("step-*") if (p / STATE).is_file()) if folder.is_dir() else []
    )
    return found[-1] if found else None


def nothing_to_resume(output: Path) -> str | None:
    """None when `output` holds a complete checkpoint to resume from; else the line that
    says a resumed run starts from step 0 instead (a run killed before its first checkpoint
    was whole leaves none, maybe a step folder without its state file). An output that is
    a file is an error."""
    check_output_folder(output, "run folder")
    if latest_checkpoint(output) is not None:
        return None
    return (
        f"--resume: no complete checkpoint in {output / CHECKPOINTS} (the run stopped before "
        "its first one was written); starting from step 0"
    )


def start_checkpoint(output: Path, resume: bool) -> Path | None:
    """The checkpoint a run into `output` starts from: the newest when resuming, none for a
    fresh run. Resuming without a checkpoint, or a fresh run into a folder that holds some
    (it would mix two runs), is an error; so is an output that is a file."""
    check_output_folder(output, "run folder")
    latest = latest_checkpoint(output)
    if resume and latest is None:
        raise InputError(
            f"--resume: no complete checkpoint in {output / CHECKPOINTS}; leave out --resume "
            "(resume=False) to start from step 0"
        )
    if not resume and latest is not None:
        raise InputError(
            f"{output} holds checkpoints; pass --resume to go on or choose another --output"
        )
    return latest


def save_checkpoint(
    output: Path,
    step: int,
    state: Callable[[], dict[str, Any]],
    save_model: Callable[[Path], None],
    keep_last: int,
) -> Path:
    """Write output/checkpoints/step-N: the model folder (`save_model`, rank 0), each
    process's RNG, then the `state()` file last; keep the newest `keep_last`. Every process
    calls this."""
    path = output / CHECKPOINTS / f"step-{step:07d}"
    rank, _ = world()
    if rank == 0:
        save_model(path / "model")
    save_state(_rng_state(), path / f"rng-rank{rank}.safetensors")
    barrier()
    if rank == 0:
        save_state(state(), path / STATE)
        folders = sorted(path.parent.glob("step-*"))
        done = [p for p in folders if (p / STATE).is_file()]
        # older folders without a state file: a kill left them while writing or deleting
        stale = [p for p in folders if p < path and not (p / STATE).is_file()]
        for old in done[:-keep_last] + stale:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return path


def load_checkpoint(checkpoint: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The training state saved in `checkpoint`, after checking that the run's `settings`
    agree with the saved ones where resuming needs them to; restores this process's RNG."""
    state = load_state(checkpoint / STATE)
    changed = [k for k in RESUME_MUST_MATCH if state["config"].get(k) != settings.get(k)]
    if changed:
        raise InputError(
            f"{checkpoint}: --resume with different {', '.join(changed)} than "
            "the run that wrote it; use the original settings"
        )
    rng = checkpoint / f"rng-rank{world()[0]}.safetensors"
    if rng.is_file():  # absent when resuming on more processes than wrote it
        saved = load_state(rng)
        torch.set_rng_state(saved["cpu"])
        if saved["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda"])
    return state


def trim_log(path: Path, step: int) -> None:
    """Keep the rows of metrics.jsonl up to `step`: a run killed after its last checkpoint
    logged steps that the resumed (or restarted) run logs again, and maybe half a line."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        with contextlib.suppress(ValueError):
            if line.endswith("\n") and json.loads(line)["step"] <= step:
                kept.append(line)
    with atomic_file(path, "w") as handle:
        handle.writelines(kept)


def _rng_state() -> dict[str, Any]:
    return {
        "cpu": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
