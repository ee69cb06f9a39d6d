"""File checksums, shared by model verification and evaluation reports (no torch)."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=64)
def _memoised(path: Path, size: int, mtime_ns: int) -> str:
    return sha256_of(path)


def file_sha256(path: Path) -> str:
    """sha256_of, remembered per (path, size, mtime) so repeated checks of big weights are free."""
    stat = path.stat()
    return _memoised(path, stat.st_size, stat.st_mtime_ns)
