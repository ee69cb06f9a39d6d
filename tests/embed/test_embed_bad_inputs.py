"""`cpt embed` on bad inputs: every file it cannot use as given is one line
`error: <file>: <what is wrong>; <the fix>` with exit code 2 (to one .npy file or to a
folder of shards); odd but valid files embed. Never a traceback, never a hang."""

from __future__ import annotations

import gzip
import json
import time

import numpy as np
import pyarrow as pa
import pytest
from bad_inputs import (
    DEEP_JSON,
    NOT_UTF8,
    UNICODE_NAME,
    cpt_measured,
    deadline,
    fed_fifo,
    gzip_bomb,
    gzip_truncated,
    one_line_error,
    parquet_bad_name,
    parquet_bytes,
    symlink_loops,
    unreadable,
    write,
)
from typer.testing import CliRunner

from cpt_embed.cli import app
from cpt_embed.data.vectors import read_vectors

runner = CliRunner()

# file name: (content, part of the error message)
BAD_FILES = {
    "latin1.txt": (NOT_UTF8["latin1"], "line 1 is not UTF-8"),
    "utf16_bom.txt": (NOT_UTF8["utf16_bom"], "UTF-16 or UTF-32"),
    "utf16_bom.jsonl": (json.dumps({"text": "x"}).encode("utf-16"), "UTF-16 or UTF-32"),
    "nul_bytes.txt": (NOT_UTF8["nul_bytes"], "NUL byte"),
    "utf16_no_bom.txt": ("hello\n".encode("utf-16-le"), "NUL byte"),
    "binary_blob.txt": (NOT_UTF8["binary_blob"], "not UTF-8"),
    "mixed.txt": (b"fine\n" + NOT_UTF8["latin1"], "line 2 is not UTF-8"),
    "latin1.jsonl": (b'{"text": "caf\xe9"}\n', "not UTF-8"),
    "deep.jsonl": (DEEP_JSON, "too deeply"),
    "huge_int.jsonl": (b'{"text": "a", "id": 1' + b"0" * 5000 + b"}\n", "JSON"),
    "invalid.jsonl": (b'{"text": "unclosed\n', "not valid JSON"),
    "nul_in_json.jsonl": (b'{"text": "a\0b"}\n', "NUL byte"),
    "not_object.jsonl": (b'["text"]\n', "not a JSON object"),
    "wrong_field.jsonl": (b'{"body": "x"}\n', "no field 'text'"),
    "wrong_type.jsonl": (b'{"text": 42}\n', "is int, not a string"),
    "null_field.jsonl": (b'{"text": null}\n', "is NoneType, not a string"),
    "truncated.jsonl.gz": (gzip_truncated(), "cannot read past line"),
    "not_gzip.jsonl.gz": (b'{"text": "x"}\n', "cannot read past line 0"),
    "truncated.txt.gz": (gzip_truncated(), "cannot read past line"),
    "empty.parquet": (b"", "not a readable Parquet file"),
    "truncated.parquet": (
        parquet_bytes(pa.table({"text": ["x"] * 100}))[:-30],
        "not a readable Parquet file",
    ),
    "garbage.parquet": (NOT_UTF8["binary_blob"], "not a readable Parquet file"),
    "bad_schema.parquet": (
        parquet_bad_name(pa.table({"text": ["x"]}), "text"),
        "not a readable Parquet file",
    ),
    "wrong_column.parquet": (parquet_bytes(pa.table({"body": ["x"]})), "no column 'text'"),
    "wrong_type.parquet": (parquet_bytes(pa.table({"text": [1]})), "is int, not text"),
    "nulls.parquet": (parquet_bytes(pa.table({"text": ["x", None]})), "row 1"),
    "blob.py": (NOT_UTF8["binary_blob"], "unknown input format .py"),
    "text.parquet.gz": (gzip.compress(b"x"), "parquet is compressed inside"),
}


def _embed(*args: str):
    with deadline(120):
        return runner.invoke(app, ["embed", *args])


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad-embed-inputs")
    return {name: write(folder / name, data) for name, (data, _) in BAD_FILES.items()}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_embed_a_bad_file_is_one_line(name, bad_files, tiny_bert, tmp_path):
    result = _embed(str(bad_files[name]), "-o", str(tmp_path / "o.npy"), "-m", str(tiny_bert))
    assert BAD_FILES[name][1] in one_line_error(result, str(bad_files[name]))
    assert not (tmp_path / "o.npy").exists()


@pytest.mark.parametrize("name", ["nul_bytes.txt", "wrong_field.jsonl", "truncated.parquet"])
def test_embed_shards_name_the_bad_shard(name, bad_files, tiny_bert, tmp_path):
    """-o FOLDER: the good shard before it is written, the bad one is the error."""
    shards = tmp_path / "shards"
    write(shards / "a-good.txt", "first\nsecond\n")
    write(shards / f"b-{name}", bad_files[name].read_bytes())
    result = _embed(str(shards), "-o", str(tmp_path / "out"), "-m", str(tiny_bert))
    one_line_error(result, f"b-{name}")
    assert (tmp_path / "out" / "a-good.parquet").is_file()


@pytest.mark.parametrize("what", ["missing", "self_link", "unreadable"])
def test_embed_a_path_that_cannot_be_opened_is_one_line(what, tiny_bert, tmp_path):
    path = tmp_path / "in.txt"
    if what == "self_link":
        path.symlink_to(path)
    elif what == "unreadable":
        unreadable(write(path, "text\n"))
    for out in ("o.npy", "out"):
        result = _embed(str(path), "-o", str(tmp_path / out), "-m", str(tiny_bert))
        line = one_line_error(result, str(path))
        assert ("symlink" in line) == (what == "self_link")


def test_embed_odd_but_valid_files(tiny_bert, tmp_path):
    """Empty files are shards without vectors (alone, one is an error: see
    tests/test_cli_bad_inputs.py); a UTF-8 byte order mark is dropped; spaces and
    non-ASCII characters in paths are fine; symlink loops in a shard folder are skipped."""
    write(tmp_path / "in" / "empty.txt", b"")
    write(tmp_path / "in" / "empty-gz.jsonl.gz", gzip.compress(b""))
    cases = {
        "bom.txt": ("\ufeffhello\n".encode(), ["hello"]),
        f"{UNICODE_NAME}.txt": (b"hello\n", ["hello"]),
    }
    expected = {}
    for name, (data, texts) in cases.items():
        path = write(tmp_path / "in" / name, data)
        out = tmp_path / f"{path.stem}.npy"
        result = _embed(str(path), "-o", str(out), "-m", str(tiny_bert))
        assert result.exit_code == 0, result.output
        expected[name] = np.load(out)
        assert len(expected[name]) == len(texts)
    np.testing.assert_array_equal(expected["bom.txt"], expected[f"{UNICODE_NAME}.txt"])
    symlink_loops(tmp_path / "in")
    result = _embed(str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(tiny_bert))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / f"{UNICODE_NAME}.parquet").is_file()
    assert len(read_vectors(tmp_path / "out" / "empty-gz.parquet")[1]) == 0


def test_embed_one_100_mb_line(tiny_bert, tmp_path):
    """One line of 100 MB without a space (a minified file, base64): the tokenizer reads a
    bounded head of it (it used to tokenize such a line whole: 30 s and 1.5 GB for 5 MB,
    an out-of-memory kill for 100 MB)."""
    path = write(tmp_path / "solid.txt", b"ab" * (100 << 19) + b"\n")
    started = time.perf_counter()
    result = _embed(str(path), "-o", str(tmp_path / "o.npy"), "-m", str(tiny_bert))
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "o.npy").shape[0] == 1
    assert time.perf_counter() - started < 60


def test_embed_a_gzip_bomb_is_one_line_in_bounded_memory(tiny_bert, tmp_path):
    """512 MiB on one line in a 512 kB gzip: read no further than the 128 MiB a line may
    hold (it used to be read whole: 2.3 GB for 1 GB); the same in a JSONL file."""
    for name in ("bomb.txt.gz", "bomb.jsonl.gz"):
        bomb = gzip_bomb(tmp_path / name, 512)
        result, peak_mib = cpt_measured("embed", bomb, "-o", tmp_path / "o.npy", "-m", tiny_bert)
        line = one_line_error(result, str(bomb))
        assert "line 1 is longer than 134,217,728 bytes" in line
        assert peak_mib < 600, peak_mib


def test_embed_reads_a_pipe_named_on_the_command_line(tiny_bert, tmp_path):
    """`cpt embed <(cat texts.txt) -o v.npy`: a pipe without a suffix reads as lines, as
    stdin does (it was "no such file"); a FIFO with one reads as its suffix says."""
    texts = write(tmp_path / "texts.txt", "first\nsecond\n")
    plain = _embed(str(texts), "-o", str(tmp_path / "plain.npy"), "-m", str(tiny_bert))
    assert plain.exit_code == 0, plain.output
    for name in ("pipe", "pipe.txt"):
        with fed_fifo(tmp_path / name, texts.read_bytes()) as pipe:
            out = tmp_path / f"{name}.npy"
            result = _embed(str(pipe), "-o", str(out), "-m", str(tiny_bert))
        assert result.exit_code == 0, result.output
        np.testing.assert_array_equal(np.load(out), np.load(tmp_path / "plain.npy"))
