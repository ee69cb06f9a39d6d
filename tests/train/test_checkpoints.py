"""Checkpoints: only complete ones (with a state file) count, the newest `keep_last` stay
and half-written ones go, resuming refuses changed settings and brings the RNG back, and
the log is cut back to the checkpoint's step. (The whole loop killed at random moments:
test_train_crash.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cpt_embed.errors import InputError
from cpt_embed.train.checkpoints import (
    CHECKPOINTS,
    STATE,
    latest_checkpoint,
    load_checkpoint,
    nothing_to_resume,
    save_checkpoint,
    start_checkpoint,
    trim_log,
)

SETTINGS = {"batch_size": 8, "lr": 1e-3, "data": ["pairs.jsonl"], "keep_last": 2}


def _save(output: Path, step: int, settings: dict = SETTINGS) -> Path:
    def save_model(folder: Path) -> None:
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")

    state = lambda: {"step": step, "config": settings}  # noqa: E731
    return save_checkpoint(output, step, state, save_model, keep_last=2)


def test_the_newest_complete_checkpoints_are_kept(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    assert start_checkpoint(tmp_path, resume=False) is None
    with pytest.raises(InputError, match="no complete checkpoint in .*; leave out --resume"):
        start_checkpoint(tmp_path, resume=True)
    for step in (2, 4):
        _save(tmp_path, step)
    (tmp_path / CHECKPOINTS / "step-0000001" / "model").mkdir(parents=True)  # half deleted
    (tmp_path / CHECKPOINTS / "step-0000008").mkdir()  # being written: no state file yet
    assert latest_checkpoint(tmp_path) == tmp_path / CHECKPOINTS / "step-0000004"
    path = _save(tmp_path, 6)
    assert path == tmp_path / CHECKPOINTS / "step-0000006"
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "step-0000004",
        "step-0000006",
        "step-0000008",  # newer than the one just written: not this run's leftover
    ]
    assert sorted(p.name for p in path.iterdir()) == ["model", "rng-rank0.safetensors", STATE]
    assert start_checkpoint(tmp_path, resume=True) == path
    with pytest.raises(InputError, match="holds checkpoints; pass --resume"):
        start_checkpoint(tmp_path, resume=False)


def test_resuming_without_a_complete_checkpoint_starts_from_step_zero(tmp_path):
    """A kill during the first checkpoint leaves its folder without the state file: there
    is nothing to resume, which --resume says in one line before starting from step 0 (it
    used to refuse, with no fix)."""
    (tmp_path / CHECKPOINTS / "step-0000002" / "model").mkdir(parents=True)
    note = nothing_to_resume(tmp_path)
    assert note == (
        f"--resume: no complete checkpoint in {tmp_path / CHECKPOINTS} (the run stopped "
        "before its first one was written); starting from step 0"
    )
    assert nothing_to_resume(tmp_path / "never-made") is not None
    _save(tmp_path, 4)
    assert nothing_to_resume(tmp_path) is None
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="file"):
        nothing_to_resume(tmp_path / "file")


def test_resuming_checks_the_settings_and_restores_the_rng(tmp_path):
    torch.manual_seed(0)
    path = _save(tmp_path, 2)
    expected = torch.rand(3)
    state = load_checkpoint(path, {**SETTINGS, "keep_last": 5})  # not one that must match
    assert state == {"step": 2, "config": SETTINGS}
    torch.testing.assert_close(torch.rand(3), expected)
    with pytest.raises(InputError, match="different batch_size, lr than the run"):
        load_checkpoint(path, {**SETTINGS, "batch_size": 16, "lr": 1.0})


def test_the_log_is_cut_back_to_the_checkpoint(tmp_path):
    log = tmp_path / "metrics.jsonl"
    trim_log(log, 4)
    assert not log.exists()
    rows = [{"step": s, "loss": 1.0} for s in range(1, 7)] + [{"step": 4, "eval": {"t": 1}}]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 7, "lo')
    trim_log(log, 4)
    kept = [json.loads(line) for line in log.read_text().splitlines()]
    assert kept == [r for r in rows if r["step"] <= 4]
