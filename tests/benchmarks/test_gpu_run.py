"""The one-shot GPU check (benchmarks/gpu.sh) end to end on the CPU with a tiny model: its
inputs cut into parts and joined back, the throughput table of both libraries, cpt-code
trained with the plan and evaluated, and everything packed for the trip back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from cpt_embed.data.mine import mine_code, mine_text

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_gpu_check_runs_end_to_end_on_a_cpu_with_a_tiny_model(tiny_llama, mini_data, tmp_path):
    pairs = tmp_path / "pairs"
    stdlib = Path(json.__file__).parent.parent
    mine_code([stdlib / "json", stdlib / "email"], pairs / "code", show_progress=False)
    wiki = mini_data / "unsupervised" / "wikipedia_en" / "docs.jsonl"
    mine_text(
        [wiki],
        pairs / "text",
        count_tokens=lambda t: [len(x.split()) for x in t],
        show_progress=False,
    )
    python = [sys.executable, str(REPO / "benchmarks" / "gpu_prepare.py")]
    prepare = ["--out", str(tmp_path / ".gpu"), "--models", "--pairs", str(pairs)]
    prepare += ["--data", str(mini_data), "--tasks", "cosqa,stsb", "--part-mib", "0.03"]
    subprocess.run([*python, *prepare], check=True, cwd=REPO)
    parts = sorted((tmp_path / ".gpu" / "parts").iterdir())
    assert len(parts) > 1  # the files travel in pieces and come together again
    stash = tmp_path / "stash"
    for part in parts:
        shutil.copytree(part, stash / part.name)

    options = {
        "train": {"max_length": 16, "dtype": "float32", "shuffle_buffer": 50},
        "run": {"batch_size": 8},
        "eval": {"tasks": "cosqa,stsb", "max_length": 32},
    }
    run_args = f"--device cpu --model {tiny_llama} --coder {tiny_llama} --table-batch 16 "
    run_args += f"--table-steps 1 --fallback-pps 8 --work {tmp_path / 'work'} "
    run_args += f"--plan-options {json.dumps(options, separators=(',', ':'))}"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "STASH": str(stash),
        "OUT": str(tmp_path / "out"),
        "SITE": str(tmp_path / "site"),
        "CPT_CACHE": str(tmp_path / "cache"),
        "TRAIN_MINUTES": "1.05",
        "GPU_RUN_ARGS": run_args,
    }
    done = subprocess.run(
        ["bash", "benchmarks/gpu.sh"], cwd=REPO, env=env, capture_output=True, text=True
    )
    log = (tmp_path / "out" / "gpu.log").read_text()
    assert done.returncode == 0 and "FAILED" not in log, log[-3000:]

    with tarfile.open(tmp_path / "out" / "results.tar.gz") as archive:
        names = archive.getnames()
        table = json.load(archive.extractfile("train-gpu.json"))
        plan = archive.extractfile("cpt-code.yaml").read().decode()
        results = archive.extractfile("docs/results.md").read().decode()
    assert {r["loss"] for r in table["rows"]} == {"ours", "cached-mnrl"}
    assert all(r["pairs_per_s"] > 0 and r["mfu"] > 0 for r in table["rows"])
    ours = next(r for r in table["rows"] if r["loss"] == "ours")
    steps = max(2, int(3 * ours["pairs_per_s"] / 8))  # (63 s - 60 s of set-up) / batch
    assert f"max_steps: {steps}" in plan
    assert "### Plan `cpt-code`" in results
    assert "run/eval/cpt-qwen-coder.json" in names and "run/eval/qwen-coder-start.json" in names
    metrics = [n for n in names if n.endswith("metrics.jsonl")]
    assert metrics, names
