"""Documents of a text corpus: each .txt/.md/.rst file is one document, each .jsonl record
or .parquet row another; any of them may be gzipped; folders are walked. Caps apply to
decompressed bytes."""

from __future__ import annotations

import codecs
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cpt_embed.data.files import READ_ERRORS, is_stream, open_binary, read_at_most
from cpt_embed.data.jsonl import LineTooLong, json_objects, utf8_lines
from cpt_embed.data.walk import VCS_DIRS, walk_files
from cpt_embed.errors import InputError

PLAIN = (".txt", ".md", ".rst", ".markdown", ".text")
RECORDS = (".jsonl", ".parquet")


@dataclass(frozen=True)
class Document:
    """One document; `line` is where it starts in its file: the JSONL line, the Parquet row
    (from 1), 1 for a whole file."""

    id: str
    text: str
    line: int = 1


def corpus_kind(path: Path) -> str | None:
    """The kind of a corpus file by its name (.gz aside): one of PLAIN or RECORDS, or None;
    a pipe without a suffix (`<(cmd)`) is plain text."""
    name = path.name.lower().removesuffix(".gz")
    for suffix in PLAIN + RECORDS:
        if name.endswith(suffix):
            return suffix
    return PLAIN[0] if not path.suffix and is_stream(path) else None


def read_text_file(path: Path, counts: Counter, max_bytes: int) -> str | None:
    """The UTF-8 text of a file (gunzipped if .gz; a byte order mark dropped), or None after
    counting why not: file_too_large (over `max_bytes` on disk or decompressed, read no
    further), file_unreadable, file_binary (NUL bytes), file_not_utf8 (UTF-16 and UTF-32
    included)."""
    try:
        if path.stat().st_size > max_bytes:
            counts["file_too_large"] += 1
            return None
        with open_binary(path) as handle:
            data = read_at_most(handle, max_bytes)
    except READ_ERRORS:
        counts["file_unreadable"] += 1
        return None
    if data is None:
        counts["file_too_large"] += 1
        return None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        counts["file_not_utf8"] += 1
        return None
    if b"\0" in data[:8192]:
        counts["file_binary"] += 1
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        counts["file_not_utf8"] += 1
        return None


def documents_of(
    path: Path, relative: str, field: str, id_field: str | None, counts: Counter, max_bytes: int
) -> Iterator[Document]:
    """The documents of one file; unreadable files and records are skipped and counted.
    JSONL is streamed line by line; a plain file or JSONL record over `max_bytes`
    (decompressed) is skipped, read no further than that."""
    kind = corpus_kind(path)
    if kind is None:
        counts["file_not_text"] += 1
        return
    if kind == ".parquet":
        yield from _parquet(path, relative, field, id_field, counts)
        return
    if kind == ".jsonl":
        try:
            with open_binary(path) as handle:
                counts["files_read"] += 1
                yield from _jsonl(handle, relative, field, id_field, counts, max_bytes)
        except READ_ERRORS:
            counts["file_unreadable"] += 1
        except InputError:  # UTF-16 or UTF-32 (a byte order mark at the start)
            counts["file_not_utf8"] += 1
        return
    text = read_text_file(path, counts, max_bytes)
    if text is not None:
        counts["files_read"] += 1
        yield Document(relative, text)


def _jsonl(handle, relative, field, id_field, counts, max_bytes) -> Iterator[Document]:
    """The records of a JSONL corpus file, read by the package's one JSONL reader; a bad
    line (not UTF-8, not a JSON object, without a text `field`, over `max_bytes`) is
    skipped and counted."""

    def skip(error: InputError) -> None:
        counts["record_too_large" if isinstance(error, LineTooLong) else "record_unreadable"] += 1

    lines = utf8_lines(handle, relative, on_bad_line=skip, max_line_bytes=max_bytes)
    for number, record in json_objects(lines, relative, on_bad_line=skip):
        value = record.get(field)
        if not isinstance(value, str):
            counts["record_unreadable"] += 1
            continue
        key = record.get(id_field) if id_field else record.get("id", record.get("_id"))
        yield Document(f"{relative}:{key if key is not None else number}", value, number)


def _parquet(path, relative, field, id_field, counts) -> Iterator[Document]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
        columns = table.column_names  # a damaged schema fails only here (not UTF-8)
    except Exception:  # pyarrow raises several types for damaged files
        counts["file_unreadable"] += 1
        return
    if field not in columns:
        counts["file_missing_field"] += 1
        return
    key = id_field or next((c for c in ("id", "_id") if c in columns), None)
    try:
        ids = table.column(key).to_pylist() if key in columns else None
        values = table.column(field).to_pylist()
    except Exception:  # damaged data that read_table let through (text not UTF-8, say)
        counts["file_unreadable"] += 1
        return
    counts["files_read"] += 1
    for row, value in enumerate(values):
        if isinstance(value, str):
            yield Document(f"{relative}:{ids[row] if ids else row}", value, row + 1)
        else:
            counts["record_unreadable"] += 1


def corpus_files(sources: list[Path], counts: Counter | None = None) -> Iterator:
    """Files of the sources in a fixed order: every folder but version control, and no
    .gitignore rules (data folders often ignore their own contents); what is no regular
    file below a folder is skipped (counted in `counts`)."""
    for source in sources:
        yield from walk_files(
            Path(source), skip_dirs=VCS_DIRS, skip_tests=False, gitignore=False, counts=counts
        )
