"""Opening and reading the files of a corpus, with bounds: gzip by the .gz suffix, at most
a cap of decompressed bytes read (a 1 MB gzip can hold 1 GB), and no line longer than a cap
held in memory. Walks skip what is no regular file (a FIFO, device or socket named like a
source file would block a read for ever, or never end); a pipe named on the command line
(`cpt embed <(zcat x.gz)`) is read as a stream."""

from __future__ import annotations

import gzip
import os
import stat
import zlib
from collections.abc import Iterator
from typing import IO

# The count of walked files skipped for being no regular file (`skipped N files (not a
# regular file)` in the reports).
NOT_REGULAR = "file_not_a_regular_file"
# What reading a file, gzipped or not, raises when it is unreadable, truncated or damaged.
READ_ERRORS = (OSError, EOFError, zlib.error)
PIECE = 1 << 20


def is_regular(path: str | os.PathLike) -> bool:
    """True for a regular file itself (a symlink is not followed); False for anything else,
    or a path that cannot be looked at."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def is_stream(path: str | os.PathLike) -> bool:
    """True for a pipe or a character device, symlinks followed (`<(cmd)` passes
    /dev/fd/63, a link to a pipe): it can be read once, from the start, as it comes."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


def open_binary(path: str | os.PathLike) -> IO[bytes]:
    """`path` opened to read bytes, gunzipped if its name ends in .gz (any case)."""
    if os.fspath(path).lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")  # noqa: SIM115


def read_at_most(handle: IO[bytes], max_bytes: int) -> bytes | None:
    """All bytes of `handle` (decompressed, for a gzip file) if there are at most
    `max_bytes`, else None; reads a piece at a time, never more than `max_bytes` + 1."""
    pieces, total = [], 0
    while total <= max_bytes and (piece := handle.read(min(PIECE, max_bytes + 1 - total))):
        pieces.append(piece)
        total += len(piece)
    return None if total > max_bytes else b"".join(pieces)


def bounded_lines(handle: IO[bytes], max_bytes: int) -> Iterator[bytes | None]:
    """The lines of `handle` with their line ends; None for a line of more than
    `max_bytes` bytes, whose rest is read and dropped a piece at a time, so that no line
    holds more than `max_bytes` + 1 bytes in memory."""
    while raw := handle.readline(max_bytes + 1):
        if raw.endswith(b"\n") or len(raw) <= max_bytes:
            yield raw
            continue
        while (rest := handle.readline(PIECE)) and not rest.endswith(b"\n"):
            pass
        yield None
