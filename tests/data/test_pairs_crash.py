"""`cpt pairs code` and `cpt pairs text` killed with SIGKILL at random moments: every pair
file under its final name, and the manifest, read back and equal the uninterrupted run's,
and --resume ends with the same shards and manifest, byte for byte. A full disk is one
error line, leaving the shards before it, and --resume after it ends the same."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

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
from test_mine import _corpus, make_repo

from cpt_embed.data.shards import MANIFEST, read_shard, shards_complete

SLOW_SEEDS = {"code": range(1, 9), "text": range(1, 5)}  # text mining starts slower
Args = Callable[[Path], list[str]]


@pytest.fixture(scope="module")
def args_code(tmp_path_factory) -> Args:
    """`cpt pairs code` over test_mine's repository (40 files), five pairs a shard."""
    repo = make_repo(tmp_path_factory.mktemp("code") / "repo", files=40)
    flags = ["--shard-size", "5", "--no-exclude-eval"]
    return lambda out: ["pairs", "code", str(repo), "-o", str(out), *flags]


@pytest.fixture(scope="module")
def args_text(tmp_path_factory) -> Args:
    """`cpt pairs text` over test_mine's corpus, as test_mine's CLI test runs it."""
    corpus = _corpus(tmp_path_factory.mktemp("text") / "corpus")
    flags = ["--format", "jsonl", "--shard-size", "8", "--max-tokens", "40", "--no-exclude-eval"]
    return lambda out: ["pairs", "text", str(corpus), "-o", str(out), *flags]


def _whole(args: Args, folder: Path) -> tuple[Path, float]:
    """The uninterrupted run's folder, and the seconds it mined (after making its folder)."""
    out = folder / "whole"
    return out, measure(lambda: cpt_here(args(out)), out.is_dir)


@pytest.fixture(scope="module")
def whole_code(args_code, tmp_path_factory) -> tuple[Path, float]:
    return _whole(args_code, tmp_path_factory.mktemp("code-whole"))


@pytest.fixture(scope="module")
def whole_text(args_text, tmp_path_factory) -> tuple[Path, float]:
    return _whole(args_text, tmp_path_factory.mktemp("text-whole"))


def _manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def _assert_shards_intact(out: Path, whole: Path) -> str:
    """Every file under a final name reads back; a shard equals the uninterrupted run's of
    that name, and the manifest lists a prefix of its shards. Returns what the run left."""
    if not out.is_dir():
        return "nothing"
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    for name in names:
        if name != MANIFEST:
            assert list(read_shard(out / name)), name
            assert (out / name).read_bytes() == (whole / name).read_bytes(), name
    if MANIFEST not in names:
        assert names == []
        return "an empty folder"
    manifest, reference = _manifest(out), _manifest(whole)
    assert manifest["settings"] == reference["settings"]
    listed = manifest["shards"]
    assert listed == reference["shards"][: len(listed)]
    assert manifest["pairs"] == sum(s["pairs"] for s in listed)
    assert {s["file"] for s in listed} <= set(names)
    assert shards_complete(out) == (manifest == reference)
    return f"{len(listed)} of {len(reference['shards'])} shards listed, {len(names) - 1} on disk"


def _resume_and_compare(args: list[str], out: Path, whole: Path) -> None:
    cpt_here(args + ["--resume"])
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in whole.iterdir())
    for path in whole.iterdir():
        if path.name != MANIFEST:
            assert (out / path.name).read_bytes() == path.read_bytes(), path.name
    assert _manifest(out) == _manifest(whole)
    assert shards_complete(out)


def _kill_and_resume(seed: int, args: Args, whole: tuple[Path, float], out: Path) -> str | None:
    """Kill a run at a random moment of its work, check what it left, resume it; what it
    left when the kill landed (None: the run had finished first)."""
    reference, window = whole
    delay = random.Random(seed).uniform(0, window)
    killed = run_killed(CPT + args(out), ready=out.is_dir, delay=delay)
    left = _assert_shards_intact(out, reference)
    _resume_and_compare(args(out), out, reference)
    return left if killed else None


def test_a_killed_code_mining_resumes_to_the_same_shards(args_code, whole_code, tmp_path):
    _kill_and_resume(0, args_code, whole_code, tmp_path / "out")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["code", "text"])
def test_minings_killed_at_random_moments_resume_to_the_same_shards(request, kind, tmp_path):
    args, whole = (request.getfixturevalue(f"{name}_{kind}") for name in ("args", "whole"))
    left = [_kill_and_resume(s, args, whole, tmp_path / f"out-{s}") for s in SLOW_SEEDS[kind]]
    kills = [x for x in left if x is not None]
    print(f"cpt pairs {kind}: {len(kills)} of {len(left)} runs killed midway, leaving {kills}")
    assert len(kills) >= len(left) // 2


def test_a_kill_before_the_first_manifest_leaves_a_folder_that_resumes(
    args_code, whole_code, tmp_path
):
    """Killed while writing its first manifest, a run leaves only that temporary file."""
    out = tmp_path / "out"
    out.mkdir()
    (out / f".{MANIFEST}.k2j4x8.tmp").write_text('{"settings": {')
    _resume_and_compare(args_code(out), out, whole_code[0])
    assert hidden_temporaries(out) == []


BIG_FUNCTION = '''def zz_total(values):
    """Add up a long list of values, one line each."""
    total = 0
''' + "".join(f"    total += values[{i}] * {i}\n" for i in range(1000))


def test_a_file_size_limit_midway_is_one_clear_error_and_resumes(tmp_path):
    repo = make_repo(tmp_path / "repo")
    (repo / "pkg" / "zz_big.py").write_text(BIG_FUNCTION + "    return total\n")

    def args(out: Path) -> list[str]:
        flags = ["--format", "jsonl", "--shard-size", "5", "--no-exclude-eval"]
        return ["pairs", "code", str(repo), "-o", str(out), *flags]

    cpt_here(args(tmp_path / "whole"))
    out = tmp_path / "out"
    big = _manifest(tmp_path / "whole")["shards"][-1]["file"]
    assert (tmp_path / "whole" / big).stat().st_size > 20_000
    error = one_line_error(run_cpt(args(out), max_file_bytes=20_000))
    assert error == (
        f"error: cannot write {out / big}: file too large; free some space or choose another "
        "--output"
    )
    assert "shards listed" in _assert_shards_intact(out, tmp_path / "whole")
    assert hidden_temporaries(out) == []
    _resume_and_compare(args(out), out, tmp_path / "whole")


def test_a_full_disk_midway_is_one_clear_error_and_resumes(args_code, whole_code, tmp_path):
    with small_disk(tmp_path / "disk", "40k") as disk:
        error = one_line_error(run_cpt(args_code(disk / "out")))
        assert error.startswith(f"error: cannot write {disk / 'out'}/")
        assert error.endswith(
            ": no space left on device; free some space or choose another --output"
        )
        assert "shards listed" in _assert_shards_intact(disk / "out", whole_code[0])
        assert hidden_temporaries(disk / "out") == []
        shutil.copytree(disk / "out", tmp_path / "out")
    _resume_and_compare(args_code(tmp_path / "out"), tmp_path / "out", whole_code[0])
