"""JSONL, read one way by every reader of the package: numbered UTF-8 lines -> JSON objects,
blank lines skipped, and every error naming the file and the line (not UTF-8, not JSON,
nested too deeply, an integer too long to convert, not an object)."""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

from cpt_embed.data.files import READ_ERRORS, bounded_lines, open_binary
from cpt_embed.errors import InputError, first_line

Name = str | os.PathLike
# Where a reader skips bad lines (a corpus being mined) rather than stopping at the first,
# it passes one of these: it sees each line's error, and the line is left out.
OnBadLine = Callable[[InputError], None] | None
# The longest line read (128 MiB): longer ones are no text or record the package takes
# (a model reads a few thousand tokens of a text), and are never held in memory whole.
MAX_LINE_BYTES = 128 << 20


class LineTooLong(InputError):
    """A line longer than the reader's cap, read no further than the cap."""


def utf8_lines(
    handle: IO[bytes],
    name: Name,
    on_bad_line: OnBadLine = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[tuple[int, str]]:
    """(line number, text without its line end) of each line of a binary handle, decoded
    one line at a time so that an error can name the line. A line over `max_line_bytes`
    is a LineTooLong error (its rest read in pieces and dropped). A UTF-8 byte order mark
    is dropped; a UTF-16 or UTF-32 one is an error (for the whole file). Reading errors
    (OSError) pass through: callers know how much they read."""
    for number, raw in enumerate(bounded_lines(handle, max_line_bytes), start=1):
        if raw is None:
            error = LineTooLong(
                f"{name}: line {number} is longer than {max_line_bytes:,} bytes, more than "
                "one text or record should hold; split it or leave it out"
            )
            if on_bad_line is None:
                raise error
            on_bad_line(error)
            continue
        if number == 1:
            if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                raise InputError(
                    f"{name}: UTF-16 or UTF-32 text, not UTF-8 (it starts with a byte order "
                    "mark); convert the file to UTF-8 (e.g. iconv -f utf-16 -t utf-8)"
                )
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            error = InputError(
                f"{name}: line {number} is not UTF-8 ({err.reason}); "
                "convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
            )
            if on_bad_line is None:
                raise error from None
            on_bad_line(error)
            continue
        yield number, text.rstrip("\r\n")


def _json_object(line: str, name: Name, number: int) -> dict:
    """The JSON object on one line; anything else is an error naming the file and line."""
    try:
        record = json.loads(line)
    except RecursionError:
        raise InputError(
            f"{name}: line {number} is not valid JSON (maximum recursion depth exceeded: "
            "nested too deeply to read); one flat object a line"
        ) from None
    except json.JSONDecodeError as err:  # its own position would say line 1 of one line
        reason = f"{err.msg.removesuffix(' at')} at column {err.colno}"
        raise InputError(
            f"{name}: line {number} is not valid JSON ({reason}); {_fix(line)}"
        ) from None
    except ValueError as err:  # an integer of more than 4300 digits
        raise InputError(f"{name}: line {number} is not valid JSON ({first_line(err)})") from None
    if not isinstance(record, dict):
        raise InputError(f"{name}: line {number} is not a JSON object; one object a line")
    return record


def _fix(line: str) -> str:
    """What to do about a line that is not JSON."""
    if "\0" in line:
        return (
            "it holds a NUL byte, so the file is binary or UTF-16 without a byte order mark: "
            "pass UTF-8 text"
        )
    return "fix or drop the line"


def json_objects(
    lines: Iterable[tuple[int, str]], name: Name, on_bad_line: OnBadLine = None
) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line of numbered JSONL lines."""
    for number, line in lines:
        if not line.strip():
            continue
        try:
            record = _json_object(line, name, number)
        except InputError as error:
            if on_bad_line is None:
                raise
            on_bad_line(error)
            continue
        yield number, record


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each record of a JSONL file, gunzipped if its name ends in
    .gz; every error is an InputError naming the file."""
    path = Path(path)
    try:
        with open_binary(path) as handle:
            yield from json_objects(utf8_lines(handle, path), path)
    except READ_ERRORS as err:  # unreadable, or a damaged or truncated .gz
        reason = getattr(err, "strerror", None) or first_line(err)
        raise InputError(f"{path}: cannot read ({reason})") from None
