"""Pair sets for the curation tests: STS-B sentence pairs (real text with near neighbours)
as mined pair files, grouped into two "repositories"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def sts_pairs(path: Path, n: int) -> list[dict]:
    """The first `n` STS-B paraphrases (similarity >= 4 of 5) whose texts are all distinct
    (after normalisation)."""
    seen: set[str] = set()
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        score, x, y = line.split("\t")
        if float(score) < 4:
            continue
        keys = {" ".join(x.lower().split()), " ".join(y.lower().split())}
        if len(keys) < 2 or keys & seen:
            continue
        seen |= keys
        pairs.append({"x": x, "y": y, "kind": "text", "repo": f"repo-{len(pairs) % 2}"})
        if len(pairs) == n:
            break
    return pairs


@pytest.fixture
def sts_pair_file(stsb_test, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CPT_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "pairs.jsonl"
    rows = sts_pairs(stsb_test, 200)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
