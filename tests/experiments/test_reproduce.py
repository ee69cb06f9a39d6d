"""`make reproduce` end to end at toy scale: tiny models, a few pairs and steps, the real
stages (mine, train, evaluate, report), and picking up after an interruption."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments"))

import reproduce  # noqa: E402


def _plan(tmp_path: Path, start: Path, other: Path) -> Path:
    plan = {
        "name": "toy",
        "hardware": "the test machine",
        "pairs": {"text": 40, "code": 40, "max_tokens": 32},
        "eval": {"tasks": "stsb,cosqa", "max_length": 32, "compile": False},
        "train": {
            "max_length": 24,
            "chunk_size": 4,
            "dtype": "float32",
            "lr": 1e-3,
            "save_every": 1,
            "log_every": 1,
            "eval_every": 0,
            "eval_tasks": "stsb",
            "encoder": {},
        },
        "references": [{"name": "start", "model": str(start)}],
        "runs": [
            {
                "name": "main",
                "model": str(start),
                "data": {"text": 1, "code": 1},
                "batch_size": 8,
                "max_steps": 2,
                "seeds": [0, 1],
            },
            {
                "name": "same-delims",
                "model": str(start),
                "data": {"text": 1, "code": 1},
                "batch_size": 8,
                "max_steps": 2,
                "encoder": {"delimiters": {"query": ["[", "]"], "document": ["[", "]"]}},
            },
            {
                "name": "other",
                "model": str(other),
                "data": {"code": 1},
                "batch_size": 4,
                "max_steps": 4,
                "learn_tau": False,
                "extra_tasks": "codesearchnet_ruby",
            },
        ],
        "report": {
            "columns": ["sts avg", "code avg", "cosqa mrr@10", "all avg"],
            "seed_run": "main",
            "curves": ["main"],
            "batch_runs": ["other", "main"],
            "comparisons": [
                ["start", "main", "start vs trained"],
                ["same-delims", "main", "same vs different delimiters"],
            ],
        },
    }
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def test_reproduce_runs_every_stage_and_writes_the_report(
    tiny_llama, tiny_bert, mini_data, tmp_path, monkeypatch
):
    monkeypatch.setenv("CPT_CACHE", str(tmp_path / "cache"))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "results.md").write_text("# Results\n\nearlier text stays\n")
    out = tmp_path / "work"
    argv = ["--plan", str(_plan(tmp_path, tiny_llama, tiny_bert)), "--data", str(mini_data)]
    argv += ["--out", str(out), "--docs", str(docs), "--device", "cpu"]
    reproduce.main(argv)

    for name in ("main", "main-seed1", "same-delims", "other"):
        config = json.loads((out / "runs" / name / "model" / "cpt_config.json").read_text())
        assert config["training"]
    same = json.loads((out / "runs" / "same-delims" / "model" / "cpt_config.json").read_text())
    assert same["delimiters"]["document"] == ["[", "]"]
    scores = json.loads((docs / "reproduce" / "toy" / "scores.json").read_text())
    assert set(scores) == {"start", "main", "main-seed1", "same-delims", "other"}
    assert {"stsb", "cosqa", "cosqa mrr@10", "all avg"} <= set(scores["main"])
    # A row's extra task is evaluated for that row only and left out of its `all avg`.
    assert "codesearchnet_ruby mrr@10" in scores["other"]
    assert "codesearchnet_ruby" not in scores["main"]
    other = scores["other"]
    assert other["all avg"] == (other["stsb"] + other["cosqa"]) / 2
    results = (docs / "results.md").read_text()
    assert results.startswith("# Results\n\nearlier text stays")
    assert "| main-seed1 |" in results and "same vs different delimiters" in results

    # The report alone, from what is evaluated so far.
    (out / "eval" / "main-seed1.json").unlink()
    reproduce.main([*argv, "--report-only"])
    assert not (out / "eval" / "main-seed1.json").exists()
    partial = json.loads((docs / "reproduce" / "toy" / "scores.json").read_text())
    assert set(partial) == {"start", "main", "same-delims", "other"}

    # A second run finds everything done and rewrites the same section, not a new one.
    (out / "eval" / "other.json").unlink()
    reproduce.main(argv)
    again = (docs / "results.md").read_text()
    assert again.count(reproduce.MARK_BEGIN) == 1
    assert (out / "eval" / "other.json").is_file()

    # Pairs mined elsewhere (other source paths) are used as they are; --only picks rows.
    manifest = out / "pairs" / "code" / "manifest.json"
    mined = json.loads(manifest.read_text())
    mined["settings"]["sources"] = ["/another/machine/site-packages"]
    manifest.write_text(json.dumps(mined))
    for name in ("other", "start"):
        (out / "eval" / f"{name}.json").unlink()
    reproduce.main([*argv, "--only", "other"])
    assert (out / "eval" / "other.json").is_file()
    assert not (out / "eval" / "start.json").exists()
    with pytest.raises(SystemExit, match="--only nothing: not in plan toy"):
        reproduce.main([*argv, "--only", "nothing"])


def test_evaluation_runs_plan_tasks_first_and_keeps_every_finished_task(
    tiny_llama, tiny_bert, mini_data, tmp_path, monkeypatch
):
    monkeypatch.setenv("CPT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "work"
    argv = ["--plan", str(_plan(tmp_path, tiny_llama, tiny_bert)), "--data", str(mini_data)]
    argv += ["--out", str(out), "--docs", str(tmp_path), "--device", "cpu"]
    argv += ["--only", "start", "other"]
    calls = []
    real = reproduce.evaluate

    def interrupted_after_three(encoder, tasks, *args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(tasks)
        return real(encoder, tasks, *args, **kwargs)

    monkeypatch.setattr(reproduce, "evaluate", interrupted_after_three)
    with pytest.raises(KeyboardInterrupt):
        reproduce.main(argv)
    # start: stsb, cosqa; then other: stsb, and the interruption before other's cosqa
    assert calls == [["stsb"], ["cosqa"], ["stsb"]]
    kept = json.loads((out / "eval" / "other.json").read_text())["models"][0]
    assert [r["task"] for r in kept["results"]] == ["stsb"]

    calls.clear()
    monkeypatch.setattr(reproduce, "evaluate", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    reproduce.main(argv)
    assert calls == [["cosqa"], ["codesearchnet_ruby"]]  # the extra task comes last
    report = json.loads((out / "eval" / "other.json").read_text())["models"][0]
    assert [r["task"] for r in report["results"]] == ["stsb", "cosqa", "codesearchnet_ruby"]
    assert len(report["data_files"]) >= 3 and report["settings"]["tasks"] == [
        "stsb",
        "cosqa",
        "codesearchnet_ruby",
    ]
