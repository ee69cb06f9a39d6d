"""File checksums, shared by model verification and evaluation reports (no torch)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
from pathlib import Path

from cpt_embed.atomic import atomic_file
from cpt_embed.paths import cache_root


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256_of, remembered per state of the file (where it lies, its inode, size, mtime and
    ctime): in this process, and for the next ones under $CPT_CACHE/checksums, so that a
    command does not read the default model's 90 MB again (0.06-0.2 s on 2 cores). Any
    change to the file, its metadata included, changes its ctime."""
    return _remembered(str(path.resolve()), file_state(path))


def file_state(path: Path) -> tuple[int, ...]:
    """A file's device, inode, size, mtime and ctime: any change to it, its metadata
    included, changes its ctime, so an equal state means the same content."""
    stat = path.stat()
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


@functools.lru_cache(maxsize=64)
def _remembered(path: str, state: tuple[int, ...]) -> str:
    record = cache_root() / "checksums" / hashlib.sha256(repr((path, state)).encode()).hexdigest()
    with contextlib.suppress(OSError, UnicodeDecodeError):
        known = record.read_text(encoding="ascii")
        if re.fullmatch("[0-9a-f]{64}", known):
            return known
    digest = sha256_of(Path(path))
    with contextlib.suppress(OSError):  # a cache that cannot be written costs a re-read
        record.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(record, "w") as handle:
            handle.write(digest)
    return digest
