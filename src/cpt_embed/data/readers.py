"""Reading texts (with ids) from .txt, .jsonl and .parquet files, gzipped or not, or stdin."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cpt_embed.data.files import READ_ERRORS, is_stream, open_binary
from cpt_embed.data.jsonl import json_objects, utf8_lines
from cpt_embed.errors import InputError, first_line, missing_path

TEXT_SUFFIXES = (".txt", ".jsonl", ".parquet")


@dataclass
class Texts:
    """Texts in file order with one id each (given by the file, else the line or row number)."""

    ids: list[str]
    texts: list[str]


def _format_of(path: Path) -> str:
    """The kind of a text file by its suffix (.gz aside); a pipe without one (`<(cmd)`)
    reads as .txt, as stdin does."""
    suffixes = [s.lower() for s in path.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    if gz:
        suffixes = suffixes[:-1]
    kind = suffixes[-1] if suffixes else ""
    if not suffixes and is_stream(path):
        return ".txt"
    if kind not in TEXT_SUFFIXES:
        raise InputError(
            f"{path}: unknown input format {''.join(path.suffixes) or '(no suffix)'}; "
            "use .txt (one text a line), .jsonl or .parquet (optionally .gz)"
        )
    if gz and kind == ".parquet":
        raise InputError(f"{path}: parquet is compressed inside; pass the .parquet file itself")
    return kind


def _lines(handle: IO[bytes], name: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each UTF-8 line; a read that fails names the line it got to."""
    number = 0
    try:
        for number, text in utf8_lines(handle, name):
            yield number, text
    except READ_ERRORS as err:
        raise InputError(f"{name}: cannot read past line {number} ({err})") from None


def _text_lines(handle: IO[bytes], name: str) -> Iterator[tuple[int, str]]:
    """The lines of a text file, where a NUL byte means it is none."""
    for number, text in _lines(handle, name):
        if "\0" in text:
            raise InputError(
                f"{name}: line {number} holds a NUL byte, so this is no text file "
                "(binary, or UTF-16 without a byte order mark); pass UTF-8 text"
            )
        yield number, text


def _jsonl(lines: Iterable[tuple[int, str]], name: str, field: str, id_field: str | None) -> Texts:
    ids, texts = [], []
    for number, record in json_objects(lines, name):
        if field not in record:
            raise InputError(
                f"{name}: line {number} has no field {field!r} (fields: "
                f"{', '.join(sorted(record)) or 'none'}); pass --field NAME"
            )
        value = record[field]
        if not isinstance(value, str):
            raise InputError(
                f"{name}: line {number} field {field!r} is {type(value).__name__}, not a string"
            )
        texts.append(value)
        ids.append(_record_id(record, id_field, name, number, len(texts)))
    return Texts(ids, texts)


def _record_id(record: dict, id_field: str | None, name: str, where: int, row: int) -> str:
    if id_field is not None:
        if id_field not in record:
            raise InputError(f"{name}: record {where} has no id field {id_field!r}")
        return str(record[id_field])
    for key in ("id", "_id"):
        if key in record:
            return str(record[key])
    return str(row - 1)


def _parquet(path: Path, field: str, id_field: str | None) -> Texts:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
        columns = table.column_names  # a damaged schema fails only here (not UTF-8)
    except Exception as err:  # pyarrow raises several types for damaged files
        raise InputError(f"{path}: not a readable Parquet file ({first_line(err)})") from None
    if field not in columns:
        raise InputError(
            f"{path}: no column {field!r} (columns: {', '.join(columns)}); pass --field NAME"
        )
    texts = _column(path, table, field)
    for row, value in enumerate(texts):
        if not isinstance(value, str):
            raise InputError(f"{path}: row {row} of {field!r} is {type(value).__name__}, not text")
    id_column = id_field or next((c for c in ("id", "_id") if c in columns), None)
    if id_field and id_field not in columns:
        raise InputError(f"{path}: no id column {id_field!r} (columns: {', '.join(columns)})")
    ids = (
        [str(v) for v in _column(path, table, id_column)]
        if id_column
        else [str(i) for i in range(len(texts))]
    )
    return Texts(ids, texts)


def _column(path: Path, table, name: str) -> list:
    """The values of one column of a Parquet table; damaged data that reading the table
    let through (text that is not UTF-8, say) fails here."""
    try:
        return table.column(name).to_pylist()
    except Exception as err:  # pyarrow raises several types for damaged files
        raise InputError(f"{path}: not a readable Parquet file ({first_line(err)})") from None


def read_texts(source: str | Path, field: str = "text", id_field: str | None = None) -> Texts:
    """Texts of a file: .txt one text a line (blank lines kept, ids are line numbers),
    .jsonl one JSON object a line (`field` holds the text), .parquet (`field` column);
    `-` reads lines from stdin, as does a pipe without a suffix (`<(cmd)`). Ids come from
    `id_field`, else an `id`/`_id` field. No line may pass jsonl.MAX_LINE_BYTES."""
    if str(source) == "-":
        lines = list(_text_lines(sys.stdin.buffer, "<stdin>"))
        return Texts([str(n) for n, _ in lines], [text for _, text in lines])
    path = Path(source)
    if not (path.is_file() or is_stream(path)):
        raise missing_path(path, "file")
    kind = _format_of(path)
    if kind == ".parquet":
        return _parquet(path, field, id_field)
    try:
        with open_binary(path) as handle:
            if kind == ".jsonl":
                return _jsonl(_lines(handle, str(path)), str(path), field, id_field)
            lines = list(_text_lines(handle, str(path)))
    except PermissionError as err:
        raise InputError(f"{path}: cannot read ({err.strerror})") from None
    return Texts([str(n) for n, _ in lines], [text for _, text in lines])
