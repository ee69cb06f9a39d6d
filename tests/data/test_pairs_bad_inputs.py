"""`cpt pairs text` and `cpt pairs code` on bad inputs: a corpus file that cannot be read is
skipped and counted by reason (the documented behaviour of the corpus walkers); a bad
source argument is one line `error: <path>: ...`, exit code 2. Never a traceback, never a
hang."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from bad_inputs import (
    DEEP_JSON,
    NOT_UTF8,
    PROSE,
    PY_FUNCTION,
    UNICODE_NAME,
    cpt_measured,
    deadline,
    fed_fifo,
    gzip_bomb,
    gzip_truncated,
    one_line_error,
    parquet_bad_name,
    parquet_bytes,
    special_files,
    symlink_loops,
    unreadable,
    write,
    write_big_line,
)
from typer.testing import CliRunner

from cpt_embed.cli import app
from cpt_embed.data.documents import documents_of
from cpt_embed.data.readers import read_texts
from cpt_embed.errors import InputError

runner = CliRunner()
GOOD_DOC = PROSE * 6


def _pairs(kind: str, sources: list[Path], out: Path, *extra: str, tokenizer: Path | None = None):
    args = ["pairs", kind, *map(str, sources), "-o", str(out), "--no-exclude-eval"]
    args += ["--format", "jsonl", *extra]
    if kind == "text":
        args += ["--tokenizer", str(tokenizer), "--min-tokens", "4", "--max-tokens", "24"]
    with deadline(120):
        return runner.invoke(app, args)


def _counts(out: Path) -> Counter:
    return Counter(json.loads((out / "manifest.json").read_text())["counts"])


# ------------------------------------------------------------------------- pairs text
TEXT_SKIPPED = {
    # file name: (content, the count it adds)
    "latin1.txt": (NOT_UTF8["latin1"], "file_not_utf8"),
    "utf16_bom.txt": (NOT_UTF8["utf16_bom"], "file_not_utf8"),
    "nul_bytes.txt": (NOT_UTF8["nul_bytes"], "file_binary"),
    "binary_blob.txt": (NOT_UTF8["binary_blob"], "file_binary"),
    "truncated.jsonl.gz": (gzip_truncated(), "file_unreadable"),
    "not_gzip.jsonl.gz": (b'{"text": "plain"}\n', "file_unreadable"),
    "truncated.txt.gz": (gzip_truncated(), "file_unreadable"),
    "empty.parquet": (b"", "file_unreadable"),
    "truncated.parquet": (
        parquet_bytes(pa.table({"text": [PROSE] * 50}))[:-40],
        "file_unreadable",
    ),
    "garbage.parquet": (NOT_UTF8["binary_blob"], "file_unreadable"),
    "bad_schema.parquet": (
        parquet_bad_name(pa.table({"text": [PROSE]}), "text"),
        "file_unreadable",
    ),
    "deep.jsonl": (DEEP_JSON, "record_unreadable"),
    "invalid.jsonl": (b'{"text": "unclosed\n', "record_unreadable"),
    "not_object.jsonl": (json.dumps([PROSE]) + "\n", "record_unreadable"),
    "wrong_field.jsonl": (json.dumps({"body": PROSE}) + "\n", "record_unreadable"),
    "wrong_type.jsonl": (json.dumps({"text": 42}) + "\n", "record_unreadable"),
    "huge_int.jsonl": (b'{"id": 1' + b"0" * 5000 + b', "text": "x"}\n', "record_unreadable"),
    "null_field.jsonl": (json.dumps({"text": None}) + "\n", "record_unreadable"),
    "latin1_record.jsonl": (b'{"text": "caf\xe9"}\n', "record_unreadable"),
    "blob.jsonl": (NOT_UTF8["binary_blob"], "record_unreadable"),
    "wrong_field.parquet": (parquet_bytes(pa.table({"body": [PROSE]})), "file_missing_field"),
    "wrong_type.parquet": (parquet_bytes(pa.table({"text": [1, 2]})), "record_unreadable"),
    "binary.py": (NOT_UTF8["binary_blob"], "file_not_text"),
}


def test_pairs_text_skips_and_counts_unreadable_files_and_records(tiny_bert, tmp_path):
    """One run over all of them (a file that failed the run would fail the test)."""
    corpus = tmp_path / "corpus"
    for name, (data, _) in TEXT_SKIPPED.items():
        write(corpus / name, data)
    write(corpus / "good.txt", GOOD_DOC)
    result = _pairs("text", [corpus], tmp_path / "out", tokenizer=tiny_bert)
    assert result.exit_code == 0, result.output
    counts = _counts(tmp_path / "out")
    for reason, files in Counter(reason for _, reason in TEXT_SKIPPED.values()).items():
        assert counts[reason] >= files, (reason, counts)
        assert reason in result.output  # the report shows why files were skipped
    assert counts["documents"] >= 1  # the good file among them was read


@pytest.mark.parametrize("name", ["empty.txt", "empty.jsonl", "empty.jsonl.gz", "blank.md"])
def test_pairs_text_reads_empty_files_as_no_documents(name, tiny_bert, tmp_path):
    write(tmp_path / "corpus" / name, b"\n\n" if name == "blank.md" else b"")
    result = _pairs("text", [tmp_path / "corpus"], tmp_path / "out", tokenizer=tiny_bert)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["pairs"] == 0


def test_pairs_text_skips_a_100_mb_line(tiny_bert, tmp_path):
    """Over --max-file-bytes (50 MB): a plain file by its size, a JSONL record by its line,
    both before reading them into the tokenizer."""
    corpus = tmp_path / "corpus"
    write_big_line(corpus / "big.txt", 100)
    write_big_line(corpus / "big.jsonl", 100, prefix='{"text": "', suffix='"}')
    _one_file_and_one_record_too_large(corpus, tmp_path, tiny_bert)


def _one_file_and_one_record_too_large(corpus, tmp_path, tokenizer) -> None:
    """`cpt pairs text` on `corpus` plus a good document skips one big .txt file and one
    big .jsonl record, counted, and mines the good one."""
    write(corpus / "good.txt", GOOD_DOC)
    result = _pairs("text", [corpus], tmp_path / "out", tokenizer=tokenizer)
    assert result.exit_code == 0, result.output
    counts = _counts(tmp_path / "out")
    assert counts["file_too_large"] == 1 and counts["record_too_large"] == 1
    assert counts["documents"] == 1


def test_pairs_text_splits_a_1_mb_line_in_bounded_time(tiny_bert, tmp_path):
    """A long paragraph without sentence ends is cut at words, counted a million
    characters at a time (it used to be counted whole, then one piece per call: 16 s and
    1 GB for 5 MB)."""
    write_big_line(tmp_path / "corpus" / "long.txt", 1)
    result = _pairs("text", [tmp_path / "corpus"], tmp_path / "out", tokenizer=tiny_bert)
    assert result.exit_code == 0, result.output
    assert _counts(tmp_path / "out")["documents"] == 1


def test_pairs_text_walks_symlink_loops_and_unicode_paths(tiny_bert, tmp_path):
    corpus = symlink_loops(tmp_path / "corpus")
    write(corpus / f"{UNICODE_NAME}.txt", GOOD_DOC)
    result = _pairs(
        "text", [corpus], tmp_path / "out", "--max-pairs-per-doc", "0", tokenizer=tiny_bert
    )
    assert result.exit_code == 0, result.output
    assert _counts(tmp_path / "out")["documents"] == 1  # once: links are not followed
    records = [json.loads(line) for line in (tmp_path / "out" / "pairs-00000.jsonl").open()]
    assert records and all(r["doc_id"] == f"{UNICODE_NAME}.txt" for r in records)


def test_pairs_text_counts_an_unreadable_file(tiny_bert, tmp_path):
    unreadable(write(tmp_path / "corpus" / "secret.txt", GOOD_DOC))
    result = _pairs("text", [tmp_path / "corpus"], tmp_path / "out", tokenizer=tiny_bert)
    assert result.exit_code == 0, result.output
    assert _counts(tmp_path / "out")["file_unreadable"] == 1


@pytest.mark.parametrize("kind", ["text", "code"])
@pytest.mark.parametrize("source", ["missing", "self_link"])
def test_pairs_bad_source_is_one_line(kind, source, tiny_bert, tmp_path):
    path = tmp_path / source
    if source == "self_link":
        path.symlink_to(path)
    result = _pairs(kind, [path], tmp_path / "out", tokenizer=tiny_bert)
    line = one_line_error(result, str(path))
    assert ("symlink" in line) == (source == "self_link")


@pytest.mark.parametrize(
    "name, data, reason",
    [
        ("bad.jsonl", b"{not json\n", "not valid JSON"),
        ("deep.jsonl", DEEP_JSON, "not valid JSON (maximum recursion depth"),
        ("huge_int.jsonl", b'{"text": 1' + b"0" * 5000 + b"}\n", "not valid JSON (Exceeds"),
        ("list.jsonl", b"[1, 2]\n", "not a JSON object"),
        ("latin1.jsonl", b'{"text": "caf\xe9"}\n', "not UTF-8"),
        ("latin1.tsv", b"score\tsentence1\tsentence2\n1\tcaf\xe9\tb\n", "not UTF-8"),
    ],
)
def test_pairs_bad_exclusion_set_is_one_line(name, data, reason, tiny_bert, tmp_path):
    """--exclude files: a damaged evaluation set used to fail with a bare json or
    UnicodeDecodeError message that named no file."""
    write(tmp_path / "corpus" / "good.txt", GOOD_DOC)
    write(tmp_path / "corpus" / "good.py", PY_FUNCTION)
    bad = write(tmp_path / name, data)
    for kind in ("text", "code"):
        result = _pairs(
            kind, [tmp_path / "corpus"], tmp_path / kind, "--exclude", str(bad), tokenizer=tiny_bert
        )
        assert reason in one_line_error(result, str(bad))


# ------------------------------------------------------------------------- pairs code
CODE_SKIPPED = {
    "latin1.py": (PY_FUNCTION.replace("counting", "caf\xe9").encode("latin-1"), "file_not_utf8"),
    "utf16_bom.py": (PY_FUNCTION.encode("utf-16"), "file_not_utf8"),
    "nul_bytes.py": (PY_FUNCTION.encode() + b"\0", "file_binary"),
    "binary_blob.py": (NOT_UTF8["binary_blob"], "file_binary"),
    "binary_blob.go": (NOT_UTF8["binary_blob"], "file_binary"),
    "one_5mb_line.py": (b"x = '" + b"a" * (5 << 20) + b"'\n", "file_too_large"),
}


@pytest.mark.parametrize("name", sorted(CODE_SKIPPED))
def test_pairs_code_skips_and_counts_unreadable_files(name, tmp_path):
    data, reason = CODE_SKIPPED[name]
    tree = tmp_path / "tree"
    write(tree / name, data)
    write(tree / "good.py", PY_FUNCTION)
    result = _pairs("code", [tree], tmp_path / "out")
    assert result.exit_code == 0, result.output
    counts = _counts(tmp_path / "out")
    assert counts[reason] == 1 and counts["pairs_python"] == 1, counts
    assert reason in result.output


def test_pairs_code_skips_a_100_mb_line_by_its_size(tmp_path):
    write_big_line(tmp_path / "tree" / "generated.py", 100, prefix="x = '", suffix="'")
    result = _pairs("code", [tmp_path / "tree"], tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert _counts(tmp_path / "out")["file_too_large"] == 1


@pytest.mark.parametrize(
    "source",
    [
        "x = " + "[" * 100_000 + "]" * 100_000 + "\n",  # deeply nested, parses
        "x = " + "[" * 100_000 + "\n",  # deeply nested and unclosed
        "",  # empty
        "def broken(:\n    '''Not python at all, this one.'''\n",
    ],
    ids=["deep_nesting", "deep_unclosed", "empty", "syntax_error"],
)
def test_pairs_code_parses_odd_sources_without_failing(source, tmp_path):
    write(tmp_path / "tree" / "odd.py", source)
    write(tmp_path / "tree" / "good.py", PY_FUNCTION)
    result = _pairs("code", [tmp_path / "tree"], tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert _counts(tmp_path / "out")["pairs_python"] == 1


def test_pairs_code_walks_symlink_loops_binary_gitignore_and_unicode_paths(tmp_path):
    tree = symlink_loops(tmp_path / "tree")
    write(tree / ".gitignore", NOT_UTF8["binary_blob"])
    write(tree / f"{UNICODE_NAME}.py", PY_FUNCTION)
    result = _pairs("code", [tree], tmp_path / "out")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "out" / "pairs-00000.jsonl").open()]
    assert [r["path"] for r in records] == [f"{UNICODE_NAME}.py"]


def test_pairs_code_counts_an_unreadable_file(tmp_path):
    unreadable(write(tmp_path / "tree" / "secret.py", PY_FUNCTION))
    result = _pairs("code", [tmp_path / "tree"], tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert _counts(tmp_path / "out")["file_unreadable"] == 1


# ----------------------------------------------------- pipes, sockets, compressed inputs
def test_pairs_skip_and_count_fifos_and_sockets_in_a_folder(tiny_bert, tmp_path):
    """A FIFO named like a source file used to hang both commands (opened, it waits for a
    writer for ever); it is skipped and counted, as a socket is."""
    tree = tmp_path / "tree"
    write(tree / "good.py", PY_FUNCTION)
    write(tree / "good.txt", GOOD_DOC)
    special_files(tree / "pkg", "p.py", "p.txt", "s.sock")
    for kind in ("code", "text"):
        result = _pairs(kind, [tree], tmp_path / kind, tokenizer=tiny_bert)
        assert result.exit_code == 0, result.output
        assert _counts(tmp_path / kind)["file_not_a_regular_file"] == 3
        assert "file_not_a_regular_file" in result.output


def test_pairs_read_a_pipe_named_on_the_command_line(tiny_bert, tmp_path):
    """`cpt pairs text <(zcat x.txt.gz)`: a pipe without a suffix is one plain text,
    read once (no probe or check may take its bytes); `mkfifo p.py` named is source."""
    corpus = write(tmp_path / "corpus.txt", GOOD_DOC)
    _pairs("text", [corpus], tmp_path / "from-file", tokenizer=tiny_bert)
    with fed_fifo(tmp_path / "pipe", GOOD_DOC.encode()) as pipe:
        result = _pairs("text", [pipe], tmp_path / "from-pipe", tokenizer=tiny_bert)
    assert result.exit_code == 0, result.output
    assert _counts(tmp_path / "from-pipe")["documents"] == 1
    assert _pairs_of(tmp_path / "from-pipe") == _pairs_of(tmp_path / "from-file") != []
    with fed_fifo(tmp_path / "p.py", PY_FUNCTION.encode()) as pipe:
        result = _pairs("code", [pipe], tmp_path / "code")
    assert result.exit_code == 0, result.output
    assert _counts(tmp_path / "code")["pairs_python"] == 1


def test_pairs_text_caps_decompressed_bytes(tiny_bert, tmp_path):
    """Gzip files of 64 MiB in 64 kB: over the 50 MB cap once decompressed, each read no
    further (the size on disk was checked alone, and the file or line read whole)."""
    corpus = tmp_path / "corpus"
    gzip_bomb(corpus / "bomb.txt.gz", 64)
    gzip_bomb(corpus / "bomb.jsonl.gz", 64)
    _one_file_and_one_record_too_large(corpus, tmp_path, tiny_bert)


def test_pairs_text_a_gzip_bomb_given_directly_is_one_line_in_bounded_memory(tiny_bert, tmp_path):
    """1 GiB of one line in a 1 MB gzip, over the 50 MB default: it used to be read whole
    (past 130 s and 3.4 GB)."""
    bomb = gzip_bomb(tmp_path / "bomb.txt.gz", 1024)
    args = ("-o", tmp_path / "out", "--no-exclude-eval", "--tokenizer", tiny_bert)
    result, peak_mib = cpt_measured("pairs", "text", bomb, *args, timeout=120)
    assert "is larger than 50,000,000 bytes" in one_line_error(result, str(bomb))
    assert peak_mib < 600, peak_mib


def _pairs_of(out: Path) -> list[tuple[str, str]]:
    records = [json.loads(line) for line in (out / "pairs-00000.jsonl").open()]
    return [(record["x"], record["y"]) for record in records]


# ------------------------------------------------------------------- library readers
def test_documents_of_skips_deep_json_and_oversized_records(tmp_path):
    big = json.dumps({"text": "x" * 300_000}).encode()
    path = write(tmp_path / "d.jsonl", DEEP_JSON + big + b"\n")
    counts: Counter = Counter()
    assert list(documents_of(path, "d.jsonl", "text", None, counts, max_bytes=200_000)) == []
    assert counts == {"files_read": 1, "record_unreadable": 1, "record_too_large": 1}


def test_read_texts_drops_a_utf8_byte_order_mark(tmp_path):
    path = write(tmp_path / "bom.txt", "\ufefffirst\nsecond\n".encode())
    assert read_texts(path).texts == ["first", "second"]
    path = write(tmp_path / "bom.jsonl", "\ufeff" + json.dumps({"text": "first"}) + "\n")
    assert read_texts(path).texts == ["first"]


def test_read_texts_names_an_unreadable_file(tmp_path):
    path = unreadable(write(tmp_path / "secret.txt", "text\n"))
    with pytest.raises(InputError, match="secret.txt: cannot read"):
        read_texts(path)
