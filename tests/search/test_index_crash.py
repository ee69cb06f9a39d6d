"""`cpt index build` over an existing index, killed with SIGKILL at random moments while it
writes: the folder holds the old index or the new one, whole (same vectors, rows, files
and search results), never a mix or nothing, and a re-run builds the new one. A full disk
is one error line and leaves the old index."""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
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
from sample_repo import FILES

from cpt_embed import Encoder
from cpt_embed.search.query import Searcher

SLOW_SEEDS = range(1, 6)
QUERIES = ["decode a json string", "send an email", "how long to cook spaghetti", "ping"]


class Indexes:
    """The old index (of the repository before a change), the new one (after it), and the
    seconds from when the new one's build began to write to its end."""

    def __init__(self, model: Path, folder: Path) -> None:
        self.model, self.repo = model, folder / "repo"
        for name, text in FILES.items():
            (self.repo / name).parent.mkdir(parents=True, exist_ok=True)
            (self.repo / name).write_text(text)
        self.old = folder / "old"
        cpt_here(self.args(self.old))
        (self.repo / "pkg" / "extra.py").write_text('def ping():\n    """Ping."""\n    return 1\n')
        (self.repo / "docs" / "guide.md").unlink()
        self.new = folder / "new"
        self.window = measure(lambda: cpt_here(self.args(self.new)), _writing(self.new))

    def args(self, out: Path) -> list[str]:
        """`cpt index build` of the repository into `out`."""
        return ["index", "build", str(self.repo), "-o", str(out), "--model", str(self.model)]


def _writing(index: Path) -> Callable[[], bool]:
    """Whether a build has begun writing `index` (its temporary folder is there)."""
    return lambda: any(index.parent.glob(f".{index.name}.*.tmp"))


@pytest.fixture(scope="module")
def indexes(tiny_bert, tmp_path_factory) -> Indexes:
    return Indexes(tiny_bert, tmp_path_factory.mktemp("indexes"))


@pytest.fixture(scope="module")
def encoder(tiny_bert) -> Encoder:
    return Encoder.load(tiny_bert)


def _contents(index: Path, encoder: Encoder, model: Path) -> dict[str, Any]:
    """Everything an index holds, and what searching it finds (loading it the way
    `cpt search` does)."""
    manifest = json.loads((index / "manifest.json").read_text())
    manifest.pop("updated")
    searcher = Searcher(index, encoder, str(model))
    with sqlite3.connect(index / "meta.sqlite") as db:
        chunks = db.execute("SELECT * FROM chunks ORDER BY row").fetchall()
        files = db.execute("SELECT * FROM files ORDER BY path").fetchall()
    db.close()
    hits = [
        [(h.path, h.start_line, round(h.score, 5)) for h in searcher.search(q, k=3)]
        for q in QUERIES
    ]
    searcher.db.close()
    return {
        "manifest": manifest,
        "vectors": np.load(index / "vectors.npy").round(6).tolist(),
        "chunks": chunks,
        "files": files,
        "hits": hits,
    }


def _kill_and_rebuild(seed: int, indexes: Indexes, encoder: Encoder, folder: Path) -> str | None:
    """Kill a build over the old index at a random moment of its writing, check that the
    folder holds one of the two whole, re-run; what it held (None: the build had finished
    before the kill)."""
    index = folder / "index"
    shutil.copytree(indexes.old, index)
    delay = random.Random(seed).uniform(0, indexes.window)
    killed = run_killed(CPT + indexes.args(index), ready=_writing(index), delay=delay)
    found = _contents(index, encoder, indexes.model)
    olds, news = (_contents(i, encoder, indexes.model) for i in (indexes.old, indexes.new))
    assert found in (olds, news)
    assert olds != news
    cpt_here(indexes.args(index))
    assert _contents(index, encoder, indexes.model) == news
    assert [p.name for p in folder.iterdir()] == ["index"]  # no temporary folder left
    if not killed:
        return None
    return "old" if found == olds else "new"


def test_a_killed_build_leaves_a_whole_index_and_a_rebuild_completes(indexes, encoder, tmp_path):
    _kill_and_rebuild(0, indexes, encoder, tmp_path)


@pytest.mark.slow
def test_builds_killed_at_random_moments_leave_a_whole_index(indexes, encoder, tmp_path):
    left = []
    for seed in SLOW_SEEDS:
        (tmp_path / str(seed)).mkdir()
        left.append(_kill_and_rebuild(seed, indexes, encoder, tmp_path / str(seed)))
    kills = [x for x in left if x is not None]
    print(f"cpt index build: {len(kills)} of {len(left)} builds killed, leaving {kills}")
    assert len(kills) >= len(left) // 2


def _assert_old_index_left(index: Path, indexes: Indexes, encoder: Encoder, error: str) -> None:
    assert error.startswith(f"error: cannot write {index}: ")
    assert error.endswith("; free some space or choose another --output")
    old = _contents(indexes.old, encoder, indexes.model)
    assert _contents(index, encoder, indexes.model) == old
    assert hidden_temporaries(index.parent) == []


@pytest.mark.slow
def test_a_file_size_limit_is_one_clear_error_and_keeps_the_old_index(indexes, encoder, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(indexes.old, index)
    error = one_line_error(run_cpt(indexes.args(index), max_file_bytes=4096))
    assert ": a write failed under a file size limit of 4,096 bytes (ulimit -f)" in error
    _assert_old_index_left(index, indexes, encoder, error)


@pytest.mark.slow
def test_a_full_disk_is_one_clear_error_and_keeps_the_old_index(indexes, encoder, tmp_path):
    used = sum(-(-p.stat().st_size // 4096) * 4096 for p in indexes.old.iterdir())
    # the old index and half of the new one fit
    with small_disk(tmp_path / "disk", f"{(used + used // 2) // 1024}k") as disk:
        index = disk / "index"
        shutil.copytree(indexes.old, index)
        error = one_line_error(run_cpt(indexes.args(index)))
        assert ": no space left on device" in error
        _assert_old_index_left(index, indexes, encoder, error)
