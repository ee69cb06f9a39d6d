"""Mining end to end: shards and manifest, limit, determinism, interruption and resume, bad
files skipped and counted, the walk rules, and the `cpt pairs` commands."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cpt_embed.cli import app
from cpt_embed.data import mine as mine_module
from cpt_embed.data.code_pairs import CodeFilter, normalized_hash, pairs_from_source
from cpt_embed.data.mine import code_exclusions, mine_code, mine_text, text_exclusions
from cpt_embed.data.shards import pair_files, read_shard
from cpt_embed.data.walk import walk_files
from cpt_embed.errors import InputError

FUNCTION = '''def {name}(values):
    """{doc}"""
    total = 0
    for value in values:
        total += value * {k}
    return total

'''


def make_repo(root: Path, files: int = 12, per_file: int = 3) -> Path:
    """A small Python project: documented functions, plus the things mining must skip."""
    (root / "pkg").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    for f in range(files):
        body = "".join(
            FUNCTION.format(
                name=f"scale_{f}_{i}",
                k=f * 10 + i,
                doc=f"Scale every value of the list by {f * 10 + i} and sum them.",
            )
            for i in range(per_file)
        )
        (root / "pkg" / f"mod_{f:02d}.py").write_text(body)
    (root / "tests").mkdir()
    (root / "tests" / "test_mod.py").write_text(
        FUNCTION.format(name="helper", k=1, doc="A helper in tests here.")
    )
    (root / "node_modules").mkdir()
    (root / "node_modules" / "lib.js").write_text("/** Vendored code here. */\nfunction v(){}\n")
    (root / "pkg" / "binary.py").write_bytes(b"\x00\x01\x02 not text")
    (root / "pkg" / "latin.py").write_bytes('"""caf\xe9"""\n'.encode("latin-1"))
    (root / "pkg" / "huge.py").write_text("x = 1\n" * 300_000)
    (root / "pkg" / "ignored_dir").mkdir()
    (root / "pkg" / "ignored_dir" / "gen.py").write_text(
        FUNCTION.format(name="generated", k=2, doc="Generated code that git ignores.")
    )
    (root / ".gitignore").write_text("pkg/ignored_dir/\n")
    return root


def all_pairs(out: Path) -> list[dict]:
    return [r for path in pair_files(out) for r in read_shard(path)]


def test_code_mining_writes_shards_skips_and_counts(tmp_path):
    repo = make_repo(tmp_path / "repo")
    report = mine_code(
        [repo], tmp_path / "out", shard_size=10, max_file_bytes=1_000_000, show_progress=False
    )
    pairs = all_pairs(tmp_path / "out")
    assert len(pairs) == report.pairs == 36
    assert {p["func_name"] for p in pairs} == {
        f"scale_{f}_{i}" for f in range(12) for i in range(3)
    }
    first = pairs[0]
    assert first["kind"] == "code" and first["language"] == "python"
    assert first["repo"] == "repo" and first["path"] == "pkg/mod_00.py"
    assert (first["start_line"], first["end_line"]) == (1, 6)
    assert '"""' not in first["y"] and first["x"].startswith("Scale every value")
    counts = report.counts
    assert counts["file_binary"] == 1 and counts["file_not_utf8"] == 1
    assert counts["file_too_large"] == 1
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["pairs"] == 36
    assert [s["pairs"] for s in manifest["shards"]] == [12, 12, 12]  # shards end at file ends
    assert not list((tmp_path / "out").glob(".*"))


def test_output_is_deterministic_and_limit_stops(tmp_path):
    repo = make_repo(tmp_path / "repo")
    mine_code([repo], tmp_path / "a", show_progress=False)
    mine_code([repo], tmp_path / "b", show_progress=False)
    assert (tmp_path / "a/pairs-00000.jsonl.gz").read_bytes() == (
        tmp_path / "b/pairs-00000.jsonl.gz"
    ).read_bytes()
    report = mine_code([repo], tmp_path / "c", limit=7, show_progress=False)
    assert report.pairs == 7 and len(all_pairs(tmp_path / "c")) == 7
    assert report.counts["kept"] == 7 and report.counts["pairs_python"] == 7


def test_interrupted_run_resumes_to_the_same_pairs(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "repo")
    mine_code([repo], tmp_path / "whole", shard_size=5, show_progress=False)
    real = mine_module.pairs_from_source
    calls = {"n": 0}

    def crash_after_five_files(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        yield from real(*args, **kwargs)

    monkeypatch.setattr(mine_module, "pairs_from_source", crash_after_five_files)
    with pytest.raises(KeyboardInterrupt):
        mine_code([repo], tmp_path / "cut", shard_size=5, show_progress=False)
    monkeypatch.setattr(mine_module, "pairs_from_source", real)
    manifest = json.loads((tmp_path / "cut" / "manifest.json").read_text())
    assert not manifest["complete"] and 0 < manifest["pairs"] < 36
    with pytest.raises(InputError, match="pass --resume"):
        mine_code([repo], tmp_path / "cut", shard_size=5, show_progress=False)
    with pytest.raises(InputError, match="different settings"):
        mine_code([repo], tmp_path / "cut", shard_size=5, limit=3, resume=True, show_progress=False)
    report = mine_code([repo], tmp_path / "cut", shard_size=5, resume=True, show_progress=False)
    assert report.resumed_from > 0
    assert all_pairs(tmp_path / "cut") == all_pairs(tmp_path / "whole")
    whole = json.loads((tmp_path / "whole" / "manifest.json").read_text())["counts"]
    assert report.counts == whole


def test_code_exclusions_drop_evaluation_items(tmp_path):
    repo = make_repo(tmp_path / "repo", files=1, per_file=1)
    code = (repo / "pkg" / "mod_00.py").read_text()
    keys = code_exclusions([("python", code)])
    report = mine_code([repo], tmp_path / "out", exclusions=keys, show_progress=False)
    assert report.pairs == 0 and report.counts["in_evaluation_set"] == 1


def test_code_exclusions_match_eval_code_that_keeps_its_docstring():
    """CoSQA stores functions with their docstrings; our pairs store them without."""
    eval_code = (
        'def area(r):\n    """Area of a circle of radius r."""\n'
        "    pi = 3.14159\n    return pi * r * r\n"
    )
    keys = code_exclusions([("python", eval_code)])
    held = CodeFilter(held_out=keys)
    assert list(pairs_from_source(eval_code.encode(), "python", held, "repo", "g.py")) == []
    free = list(pairs_from_source(eval_code.encode(), "python", CodeFilter(), "repo", "g.py"))
    assert len(free) == 1 and free[0]["source"] == "repo:g.py:1-4"
    assert free[0]["x"] == "Area of a circle of radius r."
    # a text of no known language is held out whole, case and spacing aside
    assert code_exclusions([("", "Area  OF a circle")]) == {normalized_hash("area of a circle")}


def test_text_exclusions_hash_each_text_ignoring_case_and_spacing():
    keys = text_exclusions(["A cat\tsat.", "a  CAT sat.", "Another text"])
    assert keys == {normalized_hash("a cat sat."), normalized_hash("another text")}


def _corpus(root: Path) -> Path:
    root.mkdir(parents=True)
    paragraph = (
        "Paragraph {d}.{p} tells of the harbour town, its fishermen and the long "
        "winter storms that closed the port for weeks at a time in the old days."
    )
    with open(root / "docs.jsonl", "w") as handle:
        for d in range(20):
            text = "\n".join(paragraph.format(d=d, p=p) for p in range(6))
            handle.write(json.dumps({"id": f"doc{d}", "text": text}) + "\n")
    (root / "notes.md").write_text(
        "# Notes\n\n"
        + "\n\n".join(
            f"Note {i}: the lighthouse keeper wrote about ships, weather and visitors again."
            for i in range(4)
        )
    )
    return root


def _words(texts):
    return [len(t.split()) for t in texts]


def test_text_mining_pairs_neighbours_and_resumes(tmp_path, monkeypatch):
    corpus = _corpus(tmp_path / "corpus")
    kwargs = dict(count_tokens=_words, max_tokens=30, shard_size=8, show_progress=False)
    report = mine_text([corpus], tmp_path / "whole", **kwargs)
    pairs = all_pairs(tmp_path / "whole")
    assert report.pairs == len(pairs) > 20
    pair = next(p for p in pairs if p["doc_id"] == "docs.jsonl:doc3")
    i, j = pair["passages"]
    assert j == i + 1 and pair["kind"] == "text"
    assert pair["x"].startswith("Paragraph 3.") and pair["y"].startswith("Paragraph 3.")
    assert report.counts["documents"] == 21

    real = mine_module.PassageSplitter.split
    calls = {"n": 0}

    def crash(self, text):
        calls["n"] += 1
        if calls["n"] > 12:
            raise KeyboardInterrupt
        return real(self, text)

    monkeypatch.setattr(mine_module.PassageSplitter, "split", crash)
    with pytest.raises(KeyboardInterrupt):
        mine_text([corpus], tmp_path / "cut", **kwargs)
    monkeypatch.setattr(mine_module.PassageSplitter, "split", real)
    resumed = mine_text([corpus], tmp_path / "cut", resume=True, **kwargs)
    assert all_pairs(tmp_path / "cut") == pairs
    assert resumed.counts == report.counts


def test_walk_respects_gitignore_skip_dirs_tests_and_symlink_loops(tmp_path):
    repo = make_repo(tmp_path / "repo", files=1)
    os.symlink(repo, repo / "pkg" / "loop")
    names = [f.relative for f in walk_files(repo)]
    assert "pkg/mod_00.py" in names
    assert not any(
        n.startswith(("tests/", "node_modules/", "pkg/ignored_dir/", "pkg/loop")) for n in names
    )
    assert "tests/test_mod.py" in [
        f.relative for f in walk_files(repo, skip_dirs=frozenset(), skip_tests=False)
    ]


def test_cli_pairs_code_and_text(tmp_path):
    runner = CliRunner()
    repo = make_repo(tmp_path / "repo", files=2)
    result = runner.invoke(
        app,
        [
            "pairs",
            "code",
            str(repo),
            "-o",
            str(tmp_path / "code"),
            "--format",
            "parquet",
            "--no-exclude-eval",
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(all_pairs(tmp_path / "code")) == 6 and "pairs written" in result.output
    corpus = _corpus(tmp_path / "corpus")
    result = runner.invoke(
        app,
        [
            "pairs",
            "text",
            str(corpus),
            "-o",
            str(tmp_path / "text"),
            "--format",
            "jsonl",
            "--max-tokens",
            "40",
            "--limit",
            "5",
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(all_pairs(tmp_path / "text")) == 5
    result = runner.invoke(
        app, ["pairs", "code", str(tmp_path / "nope"), "-o", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and "no such file or folder" in result.output
    result = runner.invoke(
        app, ["pairs", "code", str(repo), "-o", str(tmp_path / "y"), "--languages", "cobol"]
    )
    assert result.exit_code == 2 and "unknown language 'cobol'" in result.output


def test_text_corpora_keep_test_folders_and_ignore_gitignore(tmp_path):
    corpus = _corpus(tmp_path / "corpus")
    (corpus / "test").mkdir()
    (corpus / "test" / "more.txt").write_text("A test folder of prose is still prose.")
    (corpus / ".gitignore").write_text("*\n")
    from cpt_embed.data.documents import corpus_files

    names = [f.relative for f in corpus_files([corpus])]
    assert names == [".gitignore", "docs.jsonl", "notes.md", "test/more.txt"]


def test_a_crash_before_the_first_manifest_update_still_resumes(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "repo")
    mine_code([repo], tmp_path / "whole", shard_size=5, show_progress=False)
    real = mine_module.ShardWriter._write_manifest
    calls = {"n": 0}

    def crash_on_the_second_manifest(self, complete):
        calls["n"] += 1
        if calls["n"] == 2:  # the first shard is on disk, the manifest not yet updated
            raise KeyboardInterrupt
        real(self, complete)

    monkeypatch.setattr(mine_module.ShardWriter, "_write_manifest", crash_on_the_second_manifest)
    with pytest.raises(KeyboardInterrupt):
        mine_code([repo], tmp_path / "cut", shard_size=5, show_progress=False)
    monkeypatch.setattr(mine_module.ShardWriter, "_write_manifest", real)
    assert (tmp_path / "cut" / "pairs-00000.jsonl.gz").is_file()
    mine_code([repo], tmp_path / "cut", shard_size=5, resume=True, show_progress=False)
    assert all_pairs(tmp_path / "cut") == all_pairs(tmp_path / "whole")


def _environment(root: Path) -> Path:
    """A fake environment under `root`: lib/python3.12 holds a stdlib module and a
    site-packages folder of two packages (beta vendors alpha's function and has a project
    marker inside) and a single-module distribution, each with its .dist-info beside it;
    a project marker lies above everything."""
    stdlib = root / "lib" / "python3.12"
    site = stdlib / "site-packages"
    files = {
        "alpha/__init__.py": FUNCTION.format(name="a_init", k=1, doc="Initialise the alpha pkg."),
        "alpha/core.py": FUNCTION.format(name="shared", k=7, doc="Scale and sum all values."),
        "beta/__init__.py": FUNCTION.format(name="b_init", k=2, doc="Initialise the beta pkg."),
        "beta/_vendor/alpha_core.py": FUNCTION.format(
            name="shared", k=7, doc="Scale and sum all values."
        ),
        "beta/_vendor/pyproject.toml": "[project]\nname = 'vendored'\n",
        "beta/pyproject.toml": "[project]\nname = 'beta'\n",
        "mod.py": FUNCTION.format(name="mod_fn", k=3, doc="A single module distribution."),
    }
    for name, text in files.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
    for dist in ("alpha-1.0.dist-info", "beta-2.0.dist-info", "mod-0.1.dist-info"):
        (site / dist).mkdir()
        (site / dist / "METADATA").write_text("Metadata-Version: 2.1\n")
    (stdlib / "json").mkdir()
    (stdlib / "json" / "__init__.py").write_text(
        FUNCTION.format(name="loads", k=4, doc="Parse a JSON document here.")
    )
    (root / "pyproject.toml").write_text("[project]\nname = 'above'\n")
    return root


PACKAGE_REPOS = {
    "a_init": "site-packages/alpha",
    "shared": "site-packages/alpha",  # beta's vendored copy is the duplicate
    "b_init": "site-packages/beta",
    "mod_fn": "site-packages/mod",
}


@pytest.mark.parametrize("below", ["", "lib/python3.12", "lib/python3.12/site-packages"])
def test_each_installed_package_is_a_repo_and_copies_across_packages_dedupe(tmp_path, below):
    env = _environment(tmp_path / "env")
    report = mine_code([env / below], tmp_path / "out", show_progress=False)
    repos = {p["func_name"]: p["repo"] for p in all_pairs(tmp_path / "out")}
    stdlib = {} if below.endswith("site-packages") else {"loads": "python3.12/json"}
    if not below:
        stdlib = {"loads": "env"}  # an ordinary tree: the marker above names the repo
    assert repos == PACKAGE_REPOS | stdlib
    assert report.pairs == len(repos) and report.counts["duplicate"] == 1


def test_a_root_inside_site_packages_and_a_module_file_keep_the_package_repo(tmp_path):
    site = _environment(tmp_path / "env") / "lib" / "python3.12" / "site-packages"
    mine_code([site / "beta", site / "mod.py"], tmp_path / "out", show_progress=False)
    repos = {p["func_name"]: p["repo"] for p in all_pairs(tmp_path / "out")}
    assert repos == {"b_init": "site-packages/beta", "shared": "site-packages/beta"} | {
        "mod_fn": "site-packages/mod"
    }


def test_a_resumed_run_still_drops_copies_of_earlier_packages(tmp_path, monkeypatch):
    site = _environment(tmp_path / "env") / "lib" / "python3.12" / "site-packages"
    real = mine_module.pairs_from_source
    calls = {"n": 0}

    def crash_in_beta(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:  # mod.py, alpha/__init__.py, alpha/core.py are written
            raise KeyboardInterrupt
        yield from real(*args, **kwargs)

    monkeypatch.setattr(mine_module, "pairs_from_source", crash_in_beta)
    with pytest.raises(KeyboardInterrupt):
        mine_code([site], tmp_path / "out", shard_size=1, show_progress=False)
    monkeypatch.setattr(mine_module, "pairs_from_source", real)
    report = mine_code([site], tmp_path / "out", shard_size=1, resume=True, show_progress=False)
    assert report.resumed_from == 3
    pairs = all_pairs(tmp_path / "out")
    assert {p["func_name"]: p["repo"] for p in pairs} == PACKAGE_REPOS
    assert len(pairs) == 4 and report.counts["duplicate"] == 1
