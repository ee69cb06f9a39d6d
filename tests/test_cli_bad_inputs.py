"""Bad inputs through the real `cpt` process (the tests beside each reader use typer's
CliRunner): stderr is one line `error: <file>: ...`, the exit code 2, within a time limit.
And unreadable files, which chmod cannot make for root, across the readers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest
from bad_inputs import DEEP_JSON, symlink_loops, write

from cpt_embed.data.documents import documents_of
from cpt_embed.data.readers import read_texts
from cpt_embed.data.shards import read_shard
from cpt_embed.errors import InputError
from cpt_embed.eval.data import load_sts
from cpt_embed.train.config import TrainConfig


def test_the_cpt_process_prints_one_error_line_and_exits_2(tmp_path):
    """Commands that fail before importing torch, to keep this quick."""
    deep = write(tmp_path / "deep.jsonl", DEEP_JSON)
    loop = symlink_loops(tmp_path / "loops") / "me.txt"
    out = str(tmp_path / "pairs")
    runs = {
        deep: ["pairs", "code", str(tmp_path), "-o", out, "--exclude", str(deep)],
        loop: ["pairs", "code", str(loop), "-o", out, "--no-exclude-eval"],
    }
    env = {k: v for k, v in os.environ.items() if k != "CPT_DEBUG"}
    processes = {
        path: subprocess.Popen(
            [sys.executable, "-m", "cpt_embed.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for path, args in runs.items()
    }
    for path, process in processes.items():
        out, err = process.communicate(timeout=180)
        assert process.returncode == 2, err
        lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
        assert lines[-1].startswith(f"error: {path}: "), err
        assert sum(line.startswith("error:") for line in lines) == 1, err
        assert "Traceback" not in err + out


def test_permission_denied_is_named_even_as_root(tmp_path, monkeypatch):
    """chmod 000 does not stop root, who runs these tests here: an open() that raises
    PermissionError stands in for an unreadable file."""
    files = {
        name: write(tmp_path / name, text)
        for name, text in {
            "a.txt": "x\n",
            "a.jsonl": '{"text": "x", "x": "a", "y": "b"}\n',
            "s.tsv": "score\tsentence1\tsentence2\n1\ta\tb\n",
            "c.yaml": "lr: 0.1\n",
        }.items()
    }
    real_open = open

    def denied(file, *args, **kwargs):
        if str(file).startswith(str(tmp_path)):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", denied)
    monkeypatch.setattr("io.open", denied)
    readers = {
        "a.txt": read_texts,
        "a.jsonl": lambda path: list(read_shard(path)),
        "s.tsv": load_sts,
        "c.yaml": TrainConfig.load,
    }
    for name, read in readers.items():
        with pytest.raises(InputError, match="cannot read") as caught:
            read(files[name])
        assert str(files[name]) in str(caught.value) and "Permission denied" in str(caught.value)
    counts: Counter = Counter()
    assert list(documents_of(files["a.jsonl"], "a.jsonl", "text", None, counts, 10**6)) == []
    assert counts["file_unreadable"] == 1
