"""Training across machines, stood in for by processes on loopback: `cpt train` under two
torchrun launchers (two "nodes", gloo) equals one process on the same global batch, a
checkpoint resumes on a different number of processes, and SLURM's variables work too."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from cpt_embed import Encoder
from cpt_embed.train.config import TrainConfig
from cpt_embed.train.loop import train

TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    with open(path, "w") as handle:
        for i in range(120):
            topic = ["rivers", "cities", "music", "code", "stars", "birds"][i % 6]
            record = {"x": f"a question {i} about {topic}", "y": f"answer {i}: {topic} explained"}
            handle.write(json.dumps(record) + "\n")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _settings(model: Path, data: Path, output: Path) -> dict:
    return dict(
        model=str(model),
        data=[str(data)],
        output=str(output),
        batch_size=16,
        chunk_size=4,
        max_steps=4,
        lr=1e-3,
        warmup=0.25,
        save_every=2,
        keep_last=3,
        log_every=1,
        shuffle_buffer=40,
        max_length=24,
        device="cpu",
    )


def _flags(settings: dict) -> list[str]:
    flags = []
    for key, value in settings.items():
        for item in value if isinstance(value, list) else [value]:
            flags += [f"--{key.replace('_', '-')}", str(item)]
    return flags


def _losses(output: Path) -> list[float]:
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return Encoder.load(folder).backbone.state_dict()


def _assert_same_model(a: Path, b: Path) -> None:
    theirs = _weights(b)
    for name, tensor in _weights(a).items():
        torch.testing.assert_close(theirs[name], tensor, atol=1e-5, rtol=1e-4)
    scale_a = json.loads((a / "cpt_config.json").read_text())["logit_scale"]
    scale_b = json.loads((b / "cpt_config.json").read_text())["logit_scale"]
    assert scale_a == pytest.approx(scale_b, rel=1e-6)


def test_two_torchrun_nodes_equal_one_process_and_resume_on_one(
    tiny_bert_no_dropout, pairs_file, tmp_path
):
    settings = _settings(tiny_bert_no_dropout, pairs_file, tmp_path / "two")
    port = _free_port()
    command = [
        str(TORCHRUN),
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--rdzv-id",
        "cpt-test",
        "--max-restarts",
        "0",
        "--module",
        "cpt_embed.cli",
        "train",
        *_flags(settings),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    nodes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    outputs = [node.communicate(timeout=600)[0].decode(errors="replace") for node in nodes]
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output[-3000:]

    one = train(TrainConfig(**{**settings, "output": str(tmp_path / "one")}), show_progress=False)
    two = tmp_path / "two" / "model"
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), abs=1e-5)
    _assert_same_model(one, two)
    assert json.loads((two / "cpt_config.json").read_text())["training"]["world_size"] == 2

    # The two-process run's step-2 checkpoint, resumed by a single process, ends the same.
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "two", cut)
    shutil.rmtree(cut / "model")
    shutil.rmtree(cut / "checkpoints" / "step-0000004")
    resumed = train(
        TrainConfig(**{**settings, "output": str(cut), "resume": True}), show_progress=False
    )
    _assert_same_model(resumed, two)


def _slurm_worker(rank: int, world: int, port: int, settings: dict) -> None:
    os.environ.update(
        SLURM_PROCID=str(rank),
        SLURM_NTASKS=str(world),
        SLURM_LOCALID=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        os.environ.pop(name, None)
    torch.set_num_threads(1)
    train(TrainConfig(**settings), show_progress=False)


def test_slurm_tasks_train_as_one_process_group(tiny_bert_no_dropout, pairs_file, tmp_path):
    settings = {**_settings(tiny_bert_no_dropout, pairs_file, tmp_path / "slurm"), "max_steps": 2}
    mp.spawn(_slurm_worker, args=(2, _free_port(), settings), nprocs=2)
    one = train(TrainConfig(**{**settings, "output": str(tmp_path / "one")}), show_progress=False)
    _assert_same_model(one, tmp_path / "slurm" / "model")
    assert _losses(tmp_path / "slurm") == pytest.approx(_losses(tmp_path / "one"), abs=1e-5)
