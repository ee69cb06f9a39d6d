"""Bad inputs through the real `cpt` process (the tests beside each reader use typer's
CliRunner): stderr is one line `error: <file>: ...`, the exit code 2, within a time limit.
And unreadable files, which chmod cannot make for root, across the readers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from bad_inputs import (
    DEEP_JSON,
    PY_FUNCTION,
    no_model_load,
    one_line_error,
    symlink_loops,
    write,
)
from typer.testing import CliRunner

from cpt_embed.cli import app
from cpt_embed.data import mine as mine_module
from cpt_embed.data.documents import documents_of
from cpt_embed.data.readers import read_texts
from cpt_embed.data.shards import read_shard
from cpt_embed.errors import InputError
from cpt_embed.eval.data import load_sts
from cpt_embed.train.config import TrainConfig

runner = CliRunner()


def cpt(*args, stdin: str | None = None):
    """`cpt ARGS` in this process (typer's CliRunner)."""
    return runner.invoke(app, [str(arg) for arg in args], input=stdin)


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def test_the_cpt_process_prints_one_error_line_and_exits_2(tmp_path):
    """Commands that fail before importing torch, to keep this quick."""
    deep = write(tmp_path / "deep.jsonl", DEEP_JSON)
    write(tmp_path / "lib.py", PY_FUNCTION)  # a source to mine, so that --exclude is read
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


# ------------------------------------------- every input checked before any work (issue 24)
def _code_tree(folder: Path) -> Path:
    write(folder / "lib.py", PY_FUNCTION)
    return folder


@pytest.mark.parametrize("bad", ["typo", "README.md", "docs", "only_go"])
def test_pairs_code_checks_every_source_before_mining_any(bad, tmp_path, monkeypatch):
    """A wrong second source used to be found after the first was mined, leaving a folder
    that blocked the corrected run; now nothing is read or written before the error."""
    good, out = _code_tree(tmp_path / "good"), tmp_path / "pairs"
    write(tmp_path / "README.md", "# notes\n")
    write(tmp_path / "docs" / "guide.md", "# guide\n")
    languages = ["--languages", "go"] if bad == "only_go" else []
    source = good if bad == "only_go" else tmp_path / bad
    read = []
    monkeypatch.setattr(mine_module, "read_text_file", lambda *args: read.append(args))
    result = cpt("pairs", "code", good, source, "-o", out, "--no-exclude-eval", *languages)
    line = one_line_error(result, str(source))
    assert {
        "typo": "no such file or folder",
        "README.md": "not a source file of",
        "docs": "no source files of",
        "only_go": "no source files of go below it",
    }[bad] in line
    assert read == [] and not out.exists()
    monkeypatch.undo()
    result = cpt("pairs", "code", good, "-o", out, "--no-exclude-eval")
    assert result.exit_code == 0, result.output
    assert manifest_of(out)["pairs"] == 1


def test_a_folder_left_without_pairs_does_not_block_the_next_run(tmp_path, monkeypatch):
    """A run that failed before its first pair leaves a manifest of 0 pairs: the next run,
    with other sources, with or without --resume, takes the folder; a folder with pairs,
    or with files of the user's, is refused, saying what it holds, and kept."""
    first, second = _code_tree(tmp_path / "first"), _code_tree(tmp_path / "second")

    def fail(*args, **kwargs):
        raise InputError("a failure midway")

    for extra in (["--resume"], []):
        out = tmp_path / f"pairs{len(extra)}"
        with monkeypatch.context() as patch:
            patch.setattr(mine_module, "pairs_from_source", fail)
            result = cpt("pairs", "code", first, "-o", out, "--no-exclude-eval")
        one_line_error(result, "midway")
        assert manifest_of(out)["pairs"] == 0 and not manifest_of(out)["complete"]
        result = cpt("pairs", "code", second, "-o", out, "--no-exclude-eval", *extra)
        assert result.exit_code == 0, result.output
        assert manifest_of(out)["settings"]["sources"] == [str(second)]
        assert manifest_of(out)["pairs"] == 1
    line = one_line_error(cpt("pairs", "code", first, "-o", out, "--no-exclude-eval"), str(out))
    assert "holds 1 pair in 1 shard of a finished run (2 entries: manifest.json, pairs-" in line
    mine = write(tmp_path / "mine" / "notes.txt", "my notes\n")
    line = one_line_error(
        cpt("pairs", "code", first, "-o", mine.parent, "--no-exclude-eval"), str(mine.parent)
    )
    assert "holds 1 entry: notes.txt but no manifest.json" in line
    assert mine.read_text() == "my notes\n" and len(list(mine.parent.iterdir())) == 1


@pytest.mark.parametrize("bad", ["field", "empty", "kind", "inside"])
def test_pairs_text_checks_sources_before_the_tokenizer_loads(
    bad, tiny_bert, tmp_path, monkeypatch
):
    corpus = write(tmp_path / "corpus.jsonl", json.dumps({"body": "A text. " * 40}) + "\n")
    source, out = corpus, tmp_path / "pairs"
    if bad == "empty":
        source = write(tmp_path / "empty.jsonl", "")
    elif bad == "kind":
        source = write(tmp_path / "paper.pdf", b"%PDF-1.4\n")
    elif bad == "inside":
        source, out = tmp_path, tmp_path / "pairs"
    args = ["pairs", "text", source, "-o", out, "--no-exclude-eval", "--tokenizer", tiny_bert]
    with no_model_load(monkeypatch):
        line = one_line_error(cpt(*args, "--field", "body" if bad != "field" else "text"))
    assert {
        "field": f"{corpus}: no record holds a string field 'text'",
        "empty": f"{source}: holds no text",
        "kind": f"{source}: not a corpus file",
        "inside": f"{out}: the output folder must lie outside source {tmp_path}",
    }[bad] in line
    assert not out.exists()
    args = ["--field", "body", "--min-tokens", "4", "--max-tokens", "24"]
    result = cpt(
        "pairs", "text", corpus, "-o", out, "--no-exclude-eval", "--tokenizer", tiny_bert, *args
    )
    assert result.exit_code == 0, result.output
    assert manifest_of(out)["pairs"] >= 1


def _parquet(path: Path, table) -> Path:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


@pytest.mark.parametrize("what", ["txt", "jsonl", "parquet", "no_field", "stdin"])
def test_embed_refuses_no_texts_before_the_model_loads(what, tiny_bert, tmp_path, monkeypatch):
    """`cpt embed empty.txt -o v.npy` used to load the model and write 0 x 384 vectors."""
    source = {
        "txt": lambda: write(tmp_path / "empty.txt", ""),
        "jsonl": lambda: write(tmp_path / "empty.jsonl", ""),
        "parquet": lambda: _parquet(
            tmp_path / "rows.parquet", pa.table({"text": pa.array([], pa.string())})
        ),
        "no_field": lambda: write(tmp_path / "other.jsonl", '{"body": "a text"}\n'),
        "stdin": lambda: "-",
    }[what]()
    out = tmp_path / "v.npy"
    with no_model_load(monkeypatch):
        result = cpt("embed", source, "-o", out, "-m", tiny_bert, stdin="")
    line = one_line_error(result, "<stdin>" if what == "stdin" else str(source))
    assert ("no field 'text'" if what == "no_field" else "no texts to embed") in line
    assert not out.exists()
    result = cpt("embed", "-", "-o", out, "-m", tiny_bert, stdin="a text\n")
    assert result.exit_code == 0, result.output
    assert "wrote 1 x 32 embeddings" in result.output


def test_embed_outputs_are_checked_and_a_folder_without_vectors_is_taken(
    tiny_bert, tmp_path, monkeypatch
):
    texts = write(tmp_path / "in" / "a.jsonl", '{"text": "a text"}\n')
    blocker = write(tmp_path / "file", "")
    with no_model_load(monkeypatch):
        line = one_line_error(cpt("embed", texts, "-o", blocker / "v.npy", "-m", tiny_bert))
    assert f"{blocker}: a file, so {blocker / 'v.npy'} cannot be written" in line
    out = tmp_path / "vectors"
    one_line_error(cpt("embed", texts.parent, "-o", out, "-m", tmp_path / "typo"), "typo")
    assert not list(out.glob("*.parquet"))  # a manifest of the typo, no vectors
    result = cpt("embed", texts.parent, "-o", out, "-m", tiny_bert)
    assert result.exit_code == 0, result.output
    assert (out / "a.parquet").is_file()


STS = "score\tsentence1\tsentence2\n" + "".join(
    f"{i}\ta sentence about topic {i}\tanother sentence on topic {i}\n" for i in range(6)
)


@pytest.mark.parametrize("bad", ["task_file", "report_folder", "plot_under_file", "model"])
def test_eval_checks_tasks_outputs_and_models_before_any_model_loads(
    bad, tiny_bert, tmp_path, monkeypatch
):
    data = tmp_path / "data"
    write(data / "sts" / "stsb" / "test.tsv", STS)
    report, tasks, models = tmp_path / "report.json", "stsb", ["-m", tiny_bert]
    extra: list = []
    if bad == "task_file":
        tasks, named = "stsb,sickr", str(data / "sts" / "sickr" / "test.tsv")
    elif bad == "report_folder":
        (tmp_path / "reports").mkdir()
        report, named = tmp_path / "reports", str(tmp_path / "reports")
    elif bad == "plot_under_file":
        blocker = write(tmp_path / "plots", "")
        extra, named = ["--plot", blocker / "p.png"], str(blocker)
    else:
        models, named = [*models, "-m", tmp_path / "typo"], str(tmp_path / "typo")
    args = ["eval", "--data", data, "--no-cache", "--no-compile", "-o", report]
    with no_model_load(monkeypatch):
        result = cpt(*args, "--tasks", tasks, *models, *extra)
    assert {
        "task_file": "missing, and task sickr reads it; complete the data dir",
        "report_folder": "a folder; pass a file name to --output",
        "plot_under_file": "cannot be written; pass another --plot",
        "model": "no such file or folder",
    }[bad] in one_line_error(result, named)
    assert "tasks on" not in result.output  # said as a model's evaluation starts
    args = ["eval", "--data", data, "--no-cache", "--no-compile", "--tasks", "stsb"]
    result = cpt(*args, "-m", tiny_bert, "-o", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.json").is_file()


@pytest.mark.parametrize("bad", ["output_file", "eval_task", "no_pairs"])
def test_train_checks_data_output_and_eval_tasks_before_the_model_loads(
    bad, tiny_bert, tmp_path, monkeypatch
):
    pairs = write(
        tmp_path / "pairs.jsonl",
        "".join(json.dumps({"x": f"query {i}", "y": f"document {i}"}) + "\n" for i in range(8)),
    )
    data, run, extra = pairs, tmp_path / "run", []
    if bad == "output_file":
        run = write(tmp_path / "run.txt", "")
        named, said = str(run), "a file, not a folder"
    elif bad == "eval_task":
        extra, named, said = ["--eval-every", "1", "--eval-tasks", "stbs"], "stbs", "unknown task"
    else:
        data = tmp_path / "mined"
        write(data / "manifest.json", json.dumps(_empty_manifest()))
        named, said = str(data), "whose run wrote no pair"
    args = ["--max-steps", "1", "--batch-size", "2", "--chunk-size", "2", "--max-length", "16"]
    with no_model_load(monkeypatch):
        result = cpt("train", "--data", data, "-m", tiny_bert, "-o", run, *args, *extra)
    assert said in one_line_error(result, named)
    result = cpt("train", "--data", pairs, "-m", tiny_bert, "-o", tmp_path / "good", *args)
    assert result.exit_code == 0, result.output


def _empty_manifest() -> dict:
    """The manifest a mining run leaves when it stops before its first pair."""
    return {"settings": {}, "shards": [], "position": 0, "counts": {}, "complete": False}


def _index_tree(folder: Path) -> Path:
    write(folder / "lib.py", PY_FUNCTION)
    write(folder / "guide.md", "# Guide\n\nHow to add one to a value.\n")
    return folder


@pytest.mark.parametrize("bad", ["missing_root", "nothing_to_index", "user_folder"])
def test_index_build_checks_roots_and_output_before_the_model_loads(
    bad, tiny_bert, tmp_path, monkeypatch
):
    """An output folder that is no index used to be replaced whole: its files deleted."""
    root, out = _index_tree(tmp_path / "src"), tmp_path / "idx"
    if bad == "missing_root":
        root, said = tmp_path / "typo", "no such file or folder"
    elif bad == "nothing_to_index":
        root, said = write(tmp_path / "bin" / "blob.bin", b"\0\1").parent, "no files to index"
    else:
        out, said = write(tmp_path / "mine" / "notes.txt", "keep me\n").parent, "is no index"
    with no_model_load(monkeypatch):
        result = cpt("index", "build", root, "-o", out, "-m", tiny_bert)
    assert said in one_line_error(result, str(out if bad == "user_folder" else root))
    if bad == "user_folder":
        assert (out / "notes.txt").read_text() == "keep me\n"
    else:
        assert not out.exists()
    root, out = _index_tree(tmp_path / "src"), tmp_path / "idx"
    result = cpt("index", "build", root, "-o", out, "-m", tiny_bert)
    assert result.exit_code == 0, result.output


def test_index_update_search_and_serve_check_the_index_before_the_model_loads(
    tiny_bert, tmp_path, monkeypatch
):
    root, index = _index_tree(tmp_path / "src"), tmp_path / "idx"
    assert cpt("index", "build", root, "-o", index, "-m", tiny_bert).exit_code == 0
    missing = tmp_path / "no-index"
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # so that cpt serve does not re-exec
    with no_model_load(monkeypatch):
        for args in (
            ["search", missing, "add one", "-m", tiny_bert],
            ["index", "update", missing, "-m", tiny_bert],
            ["serve", "--index", missing, "-m", tiny_bert, "--port", "18731"],
        ):
            assert "not an index" in one_line_error(cpt(*args), str(missing))
        root.rename(tmp_path / "moved")
        line = one_line_error(cpt("index", "update", index, "-m", tiny_bert), str(root))
        assert f"{root}: indexed by {index} but gone" in line
    (tmp_path / "moved").rename(root)
    result = cpt("index", "update", index, "-m", tiny_bert)
    assert result.exit_code == 0, result.output


def _pairs_file(path: Path) -> Path:
    rows = [{"x": f"query {i} about rivers", "y": f"document {i} on rivers"} for i in range(6)]
    return write(path, "".join(json.dumps(row) + "\n" for row in rows))


@pytest.mark.parametrize("bad", ["no_pairs", "not_pairs", "model", "corpus_field"])
def test_pairs_filter_and_negatives_check_inputs_before_the_model_loads(
    bad, tiny_bert, tmp_path, monkeypatch
):
    pairs, out, model = _pairs_file(tmp_path / "pairs.jsonl"), tmp_path / "curated", tiny_bert
    corpus = write(
        tmp_path / "corpus.jsonl",
        "".join(json.dumps({"body": f"river document {i}"}) + "\n" for i in range(6)),
    )
    step, extra = ["filter"], []
    if bad == "no_pairs":
        pairs = write(tmp_path / "mined" / "manifest.json", json.dumps(_empty_manifest())).parent
        named, said = str(pairs), "whose run wrote no pair"
    elif bad == "not_pairs":
        pairs, named, said = corpus, str(corpus), "has no string fields 'x' and 'y'"
    elif bad == "model":
        model, named, said = tmp_path / "typo", str(tmp_path / "typo"), "no such file or folder"
    else:
        step, extra = ["negatives", "--num", "1", "--rank-range", "1-2"], ["--corpus", corpus]
        named, said = str(corpus), "has no field 'text'"
    with no_model_load(monkeypatch):
        result = cpt("pairs", *step, pairs, "-o", out, "-m", model, *extra)
    assert said in one_line_error(result, named)
    assert not out.exists()
    pairs = _pairs_file(tmp_path / "pairs.jsonl")
    extra += ["--corpus-field", "body"] if extra else []
    result = cpt("pairs", *step, pairs, "-o", out, "-m", tiny_bert, *extra)
    assert result.exit_code == 0, result.output
    assert manifest_of(out)["complete"]
