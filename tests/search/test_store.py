"""The manifest and SQLite metadata of an index folder: what is written reads back, and a
folder that is not an index, a damaged or newer manifest, or another model is refused
with a clear error."""

from __future__ import annotations

import json
import sqlite3

import pytest

from cpt_embed.errors import InputError
from cpt_embed.search.chunks import Chunk
from cpt_embed.search.store import (
    FORMAT_VERSION,
    MANIFEST,
    check_model,
    chunk_rows,
    new_metadata,
    open_metadata,
    read_chunk,
    read_files,
    read_manifest,
    write_chunks,
    write_files,
    write_manifest,
    write_vector_ids,
)

CHUNKS = [
    Chunk("repo/a.py", "python", 1, 3, "def f():\n    pass", "f"),
    Chunk("repo/a.py", "python", 5, 6, "x = 1"),
    Chunk("repo/b.md", "markdown", 1, 2, "# Title\n\nwords", "Title"),
]
FILES = [("repo/a.py", "/src/repo", "aa"), ("repo/b.md", "/src/repo", "bb")]


def test_a_manifest_reads_back_with_its_version_and_time(tmp_path):
    write_manifest(tmp_path, model="default", model_fingerprint="fp", files=2)
    manifest = read_manifest(tmp_path)
    assert manifest.pop("updated").endswith("Z")
    assert manifest == {
        "format_version": FORMAT_VERSION,
        "model": "default",
        "model_fingerprint": "fp",
        "files": 2,
    }


def test_what_is_not_an_index_is_refused_clearly(tmp_path):
    with pytest.raises(InputError, match=f"not an index \\(no {MANIFEST}\\); build one"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(InputError, match="unreadable .*; rebuild the index"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"format_version": FORMAT_VERSION + 1}))
    with pytest.raises(InputError, match=f"reads {FORMAT_VERSION}; rebuild it"):
        read_manifest(tmp_path)


def test_another_model_is_refused_naming_the_right_one():
    manifest = {"model": "default", "model_fingerprint": "fp"}
    check_model(manifest, "fp", "./my-copy-of-default")
    with pytest.raises(InputError, match="'other' is not the model .*pass --model default"):
        check_model(manifest, "other-fp", "other")


def test_chunks_and_files_read_back(tmp_path):
    with new_metadata(tmp_path) as db:
        write_chunks(db, CHUNKS)
        write_files(db, FILES)
    hashes, chunks = read_files(tmp_path)
    assert hashes == {"repo/a.py": "aa", "repo/b.md": "bb"}
    assert chunks == {
        "repo/a.py": [(0, CHUNKS[0]), (1, CHUNKS[1])],
        "repo/b.md": [(2, CHUNKS[2])],
    }
    db = open_metadata(tmp_path)
    assert chunk_rows(db, None) == [(0, "repo/a.py"), (1, "repo/a.py"), (2, "repo/b.md")]
    assert chunk_rows(db, "markdown") == [(2, "repo/b.md")]
    assert [read_chunk(db, row) for row in range(3)] == CHUNKS
    db.close()


def test_vector_ids_are_chunks_without_text(tmp_path):
    with new_metadata(tmp_path) as db:
        write_vector_ids(db, 0, ["v0", "v1"])
        write_vector_ids(db, 2, ["v2"])
    db = open_metadata(tmp_path)
    assert chunk_rows(db, None) == [(0, "v0"), (1, "v1"), (2, "v2")]
    assert read_chunk(db, 2) == Chunk("v2", "", 0, 0, "")
    db.close()


def test_a_failed_write_leaves_no_rows(tmp_path):
    with pytest.raises(sqlite3.IntegrityError), new_metadata(tmp_path) as db:
        write_chunks(db, CHUNKS)
        write_vector_ids(db, 0, ["clash"])
    db = open_metadata(tmp_path)
    assert chunk_rows(db, None) == []
    db.close()
