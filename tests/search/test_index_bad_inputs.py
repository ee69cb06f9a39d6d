"""`cpt index build` on bad inputs: files it cannot read are skipped and reported as
`skipped N files (reason)`; a bad root or embedding shard is one line `error: <path>: ...`
with exit code 2. Never a traceback, never a hang."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bad_inputs import (
    DEEP_JSON,
    NOT_UTF8,
    UNICODE_NAME,
    cpt_measured,
    deadline,
    gzip_bomb,
    gzip_truncated,
    one_line_error,
    parquet_bad_name,
    parquet_bytes,
    sparse_file,
    special_files,
    symlink_loops,
    write,
    write_big_line,
)
from typer.testing import CliRunner

from cpt_embed.cli import app
from cpt_embed.data.vectors import write_vectors

runner = CliRunner()
FUNCTION = 'def add_one(value):\n    """Return the value plus one."""\n    return value + 1\n'


def _build(*args: str):
    with deadline(120):
        return runner.invoke(app, ["index", "build", *args])


def test_index_build_skips_and_reports_what_it_cannot_read(tiny_bert, tmp_path):
    tree = symlink_loops(tmp_path / "tree")
    write(tree / ".gitignore", NOT_UTF8["binary_blob"])
    write(tree / f"{UNICODE_NAME}.py", FUNCTION)
    write(tree / "good.md", "# Title\n\nSome words.\n")
    for name, data in NOT_UTF8.items():
        write(tree / f"{name}.txt", data)
        write(tree / f"{name}.py", data)
    write(tree / "empty.py", b"")
    write(tree / "deep.jsonl", DEEP_JSON)
    write(tree / "wrong_field.jsonl", json.dumps({"body": "x"}) + "\n")
    write(tree / "truncated.jsonl.gz", gzip_truncated(lines=20))
    write(tree / "garbage.parquet", NOT_UTF8["binary_blob"])
    write(tree / "wrong_column.parquet", parquet_bytes(pa.table({"body": ["x"]})))
    write_big_line(tree / "huge.txt", 100)
    write(tree / "deep.py", "x = " + "[" * 100_000 + "\n")
    result = _build(str(tree), "-o", str(tmp_path / "idx"), "-m", str(tiny_bert))
    assert result.exit_code == 0, result.output
    skipped = [line for line in result.output.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 1, result.output
    for reason in ("binary", "not utf8", "too large", "unreadable", "missing field"):
        assert f"({reason})" in skipped[0], skipped[0]
    with sqlite3.connect(tmp_path / "idx" / "meta.sqlite") as db:
        paths = {row[0] for row in db.execute("SELECT path FROM chunks")}
    assert {f"tree/{UNICODE_NAME}.py", "tree/good.md"} <= paths
    assert not any("me.txt" in p or "/self/" in p for p in paths)


@pytest.mark.parametrize("what", ["missing", "self_link"])
def test_index_build_bad_root_is_one_line(what, tiny_bert, tmp_path):
    root = tmp_path / "src"
    if what == "self_link":
        root.symlink_to(root)
    for extra in ([], ["--from-embeddings"]):
        result = _build(str(root), "-o", str(tmp_path / "idx"), "-m", str(tiny_bert), *extra)
        line = one_line_error(result, str(root))
        assert ("symlink" in line) == (what == "self_link")


def _skipped(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("skipped ")]
    assert len(lines) == 1, output
    return lines[0]


def test_index_build_skips_fifos_and_sockets_and_refuses_one_named(tiny_bert, tmp_path):
    """A FIFO named like a source file used to hang the build (opened to be hashed, it
    waits for a writer for ever). Named as a root, it is refused: an update reads the
    files of an index again."""
    tree = tmp_path / "tree"
    write(tree / "good.md", "# Title\n\nSome words.\n")
    fifo, _ = special_files(tree, "p.py", "s.sock")
    result = _build(str(tree), "-o", str(tmp_path / "idx"), "-m", str(tiny_bert))
    assert result.exit_code == 0, result.output
    assert "2 files (not a regular file)" in _skipped(result.output)
    result = _build(str(fifo), "-o", str(tmp_path / "idx2"), "-m", str(tiny_bert))
    assert "a pipe, device or socket, not a file" in one_line_error(result, str(fifo))


def test_index_build_caps_decompressed_bytes_in_bounded_memory(tiny_bert, tmp_path):
    """Over the 2 MB cap once decompressed or read: gzip files of 1 GiB in 1 MB (a whole
    file and a JSONL line) and a sparse JSONL file of one 1 GiB line, each read no further
    (a 1 GiB line took 2.1 GB; a gzipped one became a 1 GB chunk, 2.6 GB and a
    sqlite3.DataError traceback)."""
    tree = tmp_path / "tree"
    gzip_bomb(tree / "bomb.md.gz", 1024)
    gzip_bomb(tree / "bomb.jsonl.gz", 1024)
    sparse_file(tree / "sparse.jsonl", 1)
    write(tree / "good.md", "# Title\n\nSome words.\n")
    result, peak_mib = cpt_measured(
        "index", "build", tree, "-o", tmp_path / "idx", "-m", tiny_bert, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    skipped = _skipped(result.stderr)
    assert "1 file (too large)" in skipped and "2 records (too large)" in skipped, skipped
    with sqlite3.connect(tmp_path / "idx" / "meta.sqlite") as db:
        assert {row[0] for row in db.execute("SELECT path FROM chunks")} == {"tree/good.md"}
    assert peak_mib < 1000, peak_mib


def _fixed(values: np.ndarray):
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def _shard(rows: int = 40) -> bytes:
    vectors = np.random.default_rng(0).standard_normal((rows, 32)).astype(np.float32)
    return parquet_bytes(
        pa.table({"id": [f"d{i}" for i in range(rows)], "embedding": _fixed(vectors)})
    )


def _corrupt_pages(data: bytes) -> bytes:
    """Footer and schema intact, the first data page header overwritten."""
    return data[:4] + b"\xab" * 400 + data[404:]


ONES = np.ones((2, 32), dtype=np.float32)
BAD_SHARDS = {
    # file name: (content, part of the error message)
    "empty.parquet": (b"", "not a Parquet file"),
    "truncated.parquet": (_shard()[:-10], "not a Parquet file"),
    "half.parquet": (_shard()[: len(_shard()) // 2], "not a Parquet file"),
    "text.parquet": (b"id,embedding\na,1\n", "not a Parquet file"),
    "blob.parquet": (NOT_UTF8["binary_blob"], "not a Parquet file"),
    "bad_schema.parquet": (
        parquet_bad_name(pa.table({"id": ["a"], "embedding": _fixed(ONES[:1])}), "embedding"),
        "not a Parquet file",
    ),
    "corrupt_pages.parquet": (_corrupt_pages(_shard()), "damaged after row 0"),
    "wrong_columns.parquet": (
        parquet_bytes(pa.table({"id": ["a"], "vector": _fixed(ONES[:1])})),
        "needs columns 'id' and 'embedding'",
    ),
    "int_ids.parquet": (
        parquet_bytes(pa.table({"id": [1, 2], "embedding": _fixed(ONES)})),
        "column 'id' is int64, not string",
    ),
    "variable_lists.parquet": (
        parquet_bytes(pa.table({"id": ["a"], "embedding": [[1.0] * 32]})),
        "not a fixed-size list of float32",
    ),
    "float64.parquet": (
        parquet_bytes(pa.table({"id": ["a", "b"], "embedding": _fixed(ONES.astype(np.float64))})),
        "not a fixed-size list of float32",
    ),
    "dim16.parquet": (
        parquet_bytes(pa.table({"id": ["a"], "embedding": _fixed(np.ones((1, 16), np.float32))})),
        "dimension 16, but model",
    ),
    "null_id.parquet": (
        parquet_bytes(pa.table({"id": pa.array(["a", None]), "embedding": _fixed(ONES)})),
        "a missing id",
    ),
    "zero_rows.parquet": (
        parquet_bytes(pa.table({"id": pa.array([], pa.string()), "embedding": _fixed(ONES[:0])})),
        "no vectors",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_SHARDS))
def test_index_from_a_bad_embedding_shard_is_one_line(name, tiny_bert, tmp_path):
    data, message = BAD_SHARDS[name]
    path = write(tmp_path / name, data)
    result = _build(
        str(path), "-o", str(tmp_path / "idx"), "-m", str(tiny_bert), "--from-embeddings"
    )
    assert message in one_line_error(result, str(path))
    assert not (tmp_path / "idx").exists()


def test_index_from_embeddings_nan_and_empty_folder(tiny_bert, tmp_path):
    nan = ONES.copy()
    nan[1, 3] = np.nan
    write_vectors(tmp_path / "nan.parquet", nan)
    result = _build(
        str(tmp_path / "nan.parquet"),
        "-o",
        str(tmp_path / "idx"),
        "-m",
        str(tiny_bert),
        "--from-embeddings",
    )
    assert "NaN" in one_line_error(result, "nan.parquet")
    (tmp_path / "empty").mkdir()
    result = _build(
        str(tmp_path / "empty"),
        "-o",
        str(tmp_path / "idx"),
        "-m",
        str(tiny_bert),
        "--from-embeddings",
    )
    assert "no .parquet files" in one_line_error(result, str(tmp_path / "empty"))


def test_index_from_embeddings_in_a_folder_with_symlink_loops(tiny_bert, tmp_path):
    folder = symlink_loops(tmp_path / "shards")
    write(folder / f"{UNICODE_NAME}.parquet", _shard())
    result = _build(
        str(folder), "-o", str(tmp_path / "idx"), "-m", str(tiny_bert), "--from-embeddings"
    )
    assert result.exit_code == 0, result.output
    assert pq.read_metadata(folder / f"{UNICODE_NAME}.parquet").num_rows == 40
    assert json.loads((tmp_path / "idx" / "manifest.json").read_text())["chunks"] == 40
