"""What an index folder holds beside its FAISS index: the manifest and the SQLite metadata
of every chunk and file, written and read here only.

    INDEX/manifest.json   model, its fingerprint, dimension, FAISS kind and precision (none
                          in an index from before precisions: float32), roots, counts
    INDEX/vectors.npy     float32 (n, dim), row i = chunk i: the source of truth
    INDEX/vectors.faiss   the FAISS index over those rows (exact inner product by default;
                          int8 or sign bits with --precision, re-scored from vectors.npy)
    INDEX/meta.sqlite     chunks (row, path, language, lines, name, text, hash), files (hash)

Every build and update writes a whole new folder beside the old one and swaps it in with
a rename, so a crash or Ctrl-C at any moment leaves the previous index usable.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from cpt_embed.atomic import check_output_folder
from cpt_embed.errors import InputError
from cpt_embed.search.chunks import Chunk

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
VECTORS = "vectors.npy"
FAISS_INDEX = "vectors.faiss"
METADATA = "meta.sqlite"
_SCHEMA = """
CREATE TABLE chunks (row INTEGER PRIMARY KEY, path TEXT, language TEXT, start_line INTEGER,
                     end_line INTEGER, name TEXT, text TEXT, hash TEXT);
CREATE INDEX chunks_path ON chunks(path);
CREATE TABLE files (path TEXT PRIMARY KEY, root TEXT, hash TEXT);
"""
_CHUNK_COLUMNS = "path, language, start_line, end_line, text, name"


def write_manifest(folder: Path, **fields: Any) -> None:
    """Write the manifest of the index being built in `folder`: `fields`, the format
    version and the time of writing."""
    manifest = {"format_version": FORMAT_VERSION, **fields}
    manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def read_manifest(index: Path) -> dict[str, Any]:
    """The manifest of an index folder, or a clear error for anything else."""
    path = Path(index) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"{index}: not an index (no {MANIFEST}); build one with cpt index build"
        ) from None
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: unreadable ({err}); rebuild the index") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise InputError(
            f"{index}: index format {manifest.get('format_version')}, this cpt-embed "
            f"reads {FORMAT_VERSION}; rebuild it"
        )
    return manifest


def check_output(out: Path) -> None:
    """Refuse, before any work, an index output that is no index: a file, or a folder with
    other contents (a build replaces the folder whole, which would delete them)."""
    out = Path(out)
    if not out.exists():
        return
    check_output_folder(out, "new folder")
    names = sorted(p.name for p in out.iterdir())
    if not names:
        return
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = None
    if not (isinstance(manifest, dict) and "format_version" in manifest):
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise InputError(
            f"{out} holds {len(names)} entries ({shown}) and is no index, which a build "
            "replaces whole; pass a new or empty folder as --output"
        )


def check_model(manifest: dict[str, Any], fingerprint: str, model_name: str) -> None:
    """Refuse a query model other than the one the index was built with."""
    if manifest["model_fingerprint"] != fingerprint:
        raise InputError(
            f"model {model_name!r} is not the model this index was built with "
            f"({manifest['model']!r}); pass --model {manifest['model']} or rebuild the index"
        )


@contextmanager
def new_metadata(folder: Path) -> Iterator[sqlite3.Connection]:
    """A new, empty meta.sqlite in the index folder being built; what is written to it is
    committed when the block ends, and the connection closed."""
    with closing(sqlite3.connect(folder / METADATA)) as db, db:
        db.executescript(_SCHEMA)
        yield db


def write_chunks(db: sqlite3.Connection, chunks: Sequence[Chunk]) -> None:
    """The chunks of an index from files, chunk i in row i."""
    db.executemany(
        "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            (
                row,
                chunk.path,
                chunk.language,
                chunk.start_line,
                chunk.end_line,
                chunk.name,
                chunk.text,
                hashlib.sha256(chunk.text.encode("utf-8", "surrogatepass")).hexdigest(),
            )
            for row, chunk in enumerate(chunks)
        ),
    )


def write_vector_ids(db: sqlite3.Connection, start: int, ids: Sequence[str]) -> None:
    """Rows start, start + 1, ... of an index from embedding shards: a chunk each, whose
    path is the vector's id, with no text."""
    db.executemany(
        "INSERT INTO chunks VALUES (?, ?, '', 0, 0, '', '', '')",
        zip(range(start, start + len(ids)), ids, strict=True),
    )


def write_files(db: sqlite3.Connection, files: Iterable[tuple[str, str, str]]) -> None:
    """The indexed files as (key, root, content hash), which an update compares against."""
    db.executemany("INSERT INTO files VALUES (?, ?, ?)", files)


def read_files(index: Path) -> tuple[dict[str, str], dict[str, list[tuple[int, Chunk]]]]:
    """What an update needs of an index from files: the content hash of each file, and the
    (row, chunk) pairs of each, both by file key."""
    chunks: dict[str, list[tuple[int, Chunk]]] = {}
    with closing(sqlite3.connect(Path(index) / METADATA)) as db:
        hashes = dict(db.execute("SELECT path, hash FROM files"))
        for row, *fields in db.execute(f"SELECT row, {_CHUNK_COLUMNS} FROM chunks"):
            chunks.setdefault(fields[0], []).append((row, Chunk(*fields)))
    return hashes, chunks


def open_metadata(index: Path) -> sqlite3.Connection:
    """The metadata of an index folder, open for queries from any thread."""
    return sqlite3.connect(Path(index) / METADATA, check_same_thread=False)


def chunk_rows(db: sqlite3.Connection, language: str | None) -> list[tuple[int, str]]:
    """(row, path) of every chunk, or of those of one language."""
    if language:
        return db.execute("SELECT row, path FROM chunks WHERE language = ?", (language,)).fetchall()
    return db.execute("SELECT row, path FROM chunks").fetchall()


def read_chunk(db: sqlite3.Connection, row: int) -> Chunk:
    """The chunk in `row`."""
    fields = db.execute(f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE row = ?", (row,)).fetchone()
    return Chunk(*fields)
