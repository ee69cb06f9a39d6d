"""`cpt train` killed with SIGKILL at random moments: every complete checkpoint left loads
and equals the uninterrupted run's at that step, and --resume (a plain re-run where no
checkpoint was complete) ends with the uninterrupted run's model and metrics, within
test_torchrun's tolerances. That holds with dropout: a checkpoint keeps the RNG state and
the data position (not across a change of process count, which these runs do not make).
A full disk while checkpointing is one error line, and the checkpoint before it stays."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from bad_inputs import one_line_error
from crash import (
    CPT,
    cpt_here,
    hidden_temporaries,
    measure,
    run_cpt,
    run_killed,
    small_disk,
)
from test_torchrun import _flags, _losses, _settings, pairs_file  # noqa: F401 (a fixture)

from cpt_embed import Encoder
from cpt_embed.train.checkpoints import CHECKPOINTS, STATE, latest_checkpoint
from cpt_embed.train.config import TrainConfig
from cpt_embed.train.loop import Trainer

SLOW_SEEDS = range(1, 6)


@pytest.fixture(scope="module")
def settings_at(tiny_bert, pairs_file) -> Callable[[Path], dict]:  # noqa: F811
    """The run's settings with a given output folder: test_torchrun's, for six steps with
    checkpoints at 2, 4 and 6 of which the last two are kept."""
    return lambda output: {
        **_settings(tiny_bert, pairs_file, output),
        "max_steps": 6,
        "keep_last": 2,
    }


def _args(settings: dict) -> list[str]:
    return ["train", *_flags(settings)]


@pytest.fixture(scope="module")
def whole(settings_at, tmp_path_factory) -> tuple[Path, float]:
    """The uninterrupted run's folder, and the seconds it trained (after making its folder)."""
    output = tmp_path_factory.mktemp("train") / "whole"
    window = measure(lambda: cpt_here(_args(settings_at(output))), output.is_dir)
    return output, window


def _assert_same_model(a: Path, b: Path) -> None:
    theirs = Encoder.load(b).backbone.state_dict()
    for name, tensor in Encoder.load(a).backbone.state_dict().items():
        torch.testing.assert_close(theirs[name], tensor, atol=1e-5, rtol=1e-4)
    scales = [json.loads((m / "cpt_config.json").read_text())["logit_scale"] for m in (a, b)]
    assert scales[0] == pytest.approx(scales[1], rel=1e-5)


def _assert_checkpoints_intact(settings: dict, whole: Path) -> str:
    """The newest complete checkpoint (one with its state file) resumes: model, state and
    RNG load. Every complete checkpoint's model equals the uninterrupted run's of that step
    where that one kept it; a final model equals its; the logged rows read back. Returns
    what the run left: "nothing", the newest checkpoint, or "model"."""
    output = Path(settings["output"])
    latest = latest_checkpoint(output)
    if latest is not None:
        trainer = Trainer(TrainConfig(**settings, resume=True))
        assert trainer.step == int(latest.name.removeprefix("step-"))
    for folder in sorted(output.glob(f"{CHECKPOINTS}/step-*")):
        reference = whole / CHECKPOINTS / folder.name
        if (folder / STATE).is_file() and reference.is_dir():
            _assert_same_model(folder / "model", reference / "model")
        elif (folder / STATE).is_file():
            Encoder.load(folder / "model")
    if (output / "metrics.jsonl").is_file():
        text = (output / "metrics.jsonl").read_text()
        for line in text.splitlines()[: text.count("\n")]:
            json.loads(line)
    if (output / "model").is_dir():
        _assert_same_model(output / "model", whole / "model")
        return "model"
    return latest.name if latest else "nothing"


def _resume_and_compare(settings: dict, whole: Path) -> None:
    output = Path(settings["output"])
    cpt_here(_args(settings) + (["--resume"] if latest_checkpoint(output) else []))
    _assert_same_model(output / "model", whole / "model")
    assert _losses(output) == pytest.approx(_losses(whole), abs=1e-5)
    done = sorted(p.name for p in (output / CHECKPOINTS).iterdir())
    assert done == sorted(p.name for p in (whole / CHECKPOINTS).iterdir())
    assert hidden_temporaries(output) == []


def _kill_and_resume(seed: int, whole: tuple[Path, float], settings: dict) -> str | None:
    """Kill a run at a random moment of its work, check what it left, resume it; what it
    left when the kill landed (None: the run had finished first)."""
    reference, window = whole
    output = Path(settings["output"])
    delay = random.Random(seed).uniform(0, window)
    killed = run_killed(CPT + _args(settings), ready=output.is_dir, delay=delay)
    left = _assert_checkpoints_intact(settings, reference)
    _resume_and_compare(settings, reference)
    return left if killed else None


def test_a_killed_run_resumes_to_the_uninterrupted_model(whole, settings_at, tmp_path):
    _kill_and_resume(0, whole, settings_at(tmp_path / "run"))


@pytest.mark.slow
def test_runs_killed_at_random_moments_resume_to_the_same_model(whole, settings_at, tmp_path):
    left = [_kill_and_resume(s, whole, settings_at(tmp_path / f"run-{s}")) for s in SLOW_SEEDS]
    kills = [x for x in left if x is not None]
    print(f"cpt train: {len(kills)} of {len(left)} runs killed midway, leaving {kills}")
    assert len(kills) >= len(left) // 2


def _cut_after_step_four(whole: Path, output: Path) -> None:
    """The uninterrupted run as a kill after step 5 would have left it."""
    shutil.copytree(whole, output)
    shutil.rmtree(output / "model")
    shutil.rmtree(output / CHECKPOINTS / "step-0000006")


def test_what_a_kill_after_a_checkpoint_leaves_is_tidied_on_resume(whole, settings_at, tmp_path):
    """Steps logged after the checkpoint (the resumed run logs them again), half a line,
    and an older checkpoint a kill left half deleted (no state file)."""
    output = tmp_path / "run"
    _cut_after_step_four(whole[0], output)
    with open(output / "metrics.jsonl", "a") as log:
        log.write('{"step": 6, "lo')
    shutil.copytree(whole[0] / CHECKPOINTS / "step-0000004" / "model", output / "old" / "model")
    (output / "old").rename(output / CHECKPOINTS / "step-0000002")
    assert _assert_checkpoints_intact(settings_at(output), whole[0]) == "step-0000004"
    _resume_and_compare(settings_at(output), whole[0])


def test_a_kill_during_the_first_checkpoint_resumes_from_step_zero(whole, settings_at, tmp_path):
    """The step-2 folder without its state file (the model written, the kill before the
    state): --resume says there is no complete checkpoint and trains from step 0 to the
    uninterrupted run's model (it used to refuse: "no checkpoint", and no fix)."""
    output, model = tmp_path / "run", whole[0] / CHECKPOINTS / "step-0000004" / "model"
    shutil.copytree(model, output / CHECKPOINTS / "step-0000002" / "model")  # any model
    rows = (whole[0] / "metrics.jsonl").read_text().splitlines(keepends=True)
    (output / "metrics.jsonl").write_text("".join(rows[:2]))
    result = cpt_here([*_args(settings_at(output)), "--resume"])
    assert (
        f"--resume: no complete checkpoint in {output / CHECKPOINTS} (the run stopped before "
        "its first one was written); starting from step 0"
    ) in result.stderr
    _assert_same_model(output / "model", whole[0] / "model")
    assert _losses(output) == pytest.approx(_losses(whole[0]), abs=1e-5)


def _assert_failed_write_left_step_four(settings: dict, whole: Path, error: str) -> None:
    output = Path(settings["output"])
    assert f"error: cannot write {output / CHECKPOINTS / 'step-0000006'}" in error
    assert error.endswith("; free some space or choose another --output")
    assert _assert_checkpoints_intact(settings, whole) == "step-0000004"
    assert hidden_temporaries(output) == []


@pytest.mark.slow
def test_a_file_size_limit_while_checkpointing_is_one_clear_error(whole, settings_at, tmp_path):
    settings = settings_at(tmp_path / "run")
    _cut_after_step_four(whole[0], tmp_path / "run")
    result = run_cpt(_args(settings) + ["--resume"], max_file_bytes=1_000_000)
    error = one_line_error(result)
    assert ": file too large" in error
    _assert_failed_write_left_step_four(settings, whole[0], error)
    _resume_and_compare(settings, whole[0])


@pytest.mark.slow
def test_a_full_disk_while_checkpointing_is_one_clear_error(whole, settings_at, tmp_path):
    _cut_after_step_four(whole[0], tmp_path / "staged")
    used = sum(p.stat().st_size for p in (tmp_path / "staged").rglob("*") if p.is_file())
    # room for what is there and 2 MiB more: not for the step-6 model (~4 MB)
    with small_disk(tmp_path / "disk", f"{used // 1024 + 2048}k") as disk:
        shutil.copytree(tmp_path / "staged", disk / "run")
        settings = settings_at(disk / "run")
        error = one_line_error(run_cpt(_args(settings) + ["--resume"]))
        assert ": no space left on device" in error
        _assert_failed_write_left_step_four(settings, whole[0], error)
