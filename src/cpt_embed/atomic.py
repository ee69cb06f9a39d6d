"""Atomic writes: a crash or Ctrl-C leaves either the old file (folder) or the new one.

A write that fails for want of space (a full disk, a quota, the file size limit) raises
`NoSpaceError`, one line naming the path, after the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import glob
import os
import resource
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cpt_embed.errors import CptError, InputError

# mkstemp/mkdtemp create private (0600/0700) entries; give results the usual permissions.
_UMASK = os.umask(0)
os.umask(_UMASK)
_NO_SPACE = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large",
}
# renameat2 (Linux) swaps two paths in one step
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2
_LIBC = ctypes.CDLL(None, use_errno=True) if os.name == "posix" else None


class NoSpaceError(CptError, OSError):
    """A write failed for want of space; the message names the path and the way out."""

    def __init__(self, path: str | os.PathLike | None, reason: str) -> None:
        where = f" {path}" if path else ""
        super().__init__(
            f"cannot write{where}: {reason}; free some space or choose another --output"
        )
        self.errno = errno.ENOSPC


def check_output_file(path: str | os.PathLike, option: str = "--output") -> Path:
    """`path`, where a file can be written (checked before any work): no folder in its
    place, and no file where its path needs a folder."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: a folder; pass a file name to {option}")
    above = next(p for p in path.parents if p.exists())
    if not above.is_dir():
        raise InputError(f"{above}: a file, so {path} cannot be written; pass another {option}")
    return path


def check_output_folder(path: str | os.PathLike, kind: str = "folder") -> Path:
    """`path`, where a folder of output can be made (checked before any work): no file in
    its place. `kind` says what to pass as --output instead."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: a file, not a folder; pass a {kind} as --output")
    return path


def no_space_error(err: OSError) -> NoSpaceError | None:
    """`err` as a NoSpaceError where a write failed for want of space outside the writers
    here (an appended log, say), else None."""
    if isinstance(err, CptError) or err.errno not in _NO_SPACE:
        return None
    return NoSpaceError(err.filename, _NO_SPACE[err.errno])


def _space_problem(err: BaseException, written: Path) -> str | None:
    """Why `err`, raised while writing the temporary `written` (file or folder), is a lack
    of space, or None. Some writers drop the errno (numpy, torch, SQLite): then a full file
    system, or a file size limit on this process, tells."""
    seen: BaseException | None = err
    for _ in range(8):
        if seen is None or isinstance(seen, CptError):
            break
        code = getattr(seen, "errno", None)
        if code in _NO_SPACE:
            return _NO_SPACE[code]
        for code, reason in _NO_SPACE.items():
            if os.strerror(code) in str(seen):  # quoted by safetensors and FAISS
                return reason
        seen = seen.__cause__ or seen.__context__
    if not isinstance(err, (OSError, RuntimeError, sqlite3.Error)) or isinstance(err, CptError):
        return None
    with contextlib.suppress(OSError):
        stats = os.statvfs(written)
        if stats.f_bavail * stats.f_frsize < 1 << 20:
            return _NO_SPACE[errno.ENOSPC]
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        return f"a write failed under a file size limit of {limit:,} bytes (ulimit -f)"
    return None


def _no_space(err: BaseException, written: Path, path: Path) -> NoSpaceError | None:
    problem = _space_problem(err, written)
    return None if problem is None else NoSpaceError(path, problem)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step; False where the system or file system cannot."""
    renameat2 = getattr(_LIBC, "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb") -> Iterator:
    """Open a temporary file beside `path`; on success it replaces `path` in one rename.
    What killed writes of `path` left beside it is deleted first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    tmp, fd = _locked_temporary(path, folder=False)
    lock = os.dup(fd)  # the lock lasts while either is open: through the rename below
    os.chmod(tmp, 0o666 & ~_UMASK)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        no_space = _no_space(err, tmp, path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if no_space is not None:
            raise no_space from err
        raise
    finally:
        os.close(lock)


def _locked_temporary(path: Path, *, folder: bool) -> tuple[Path, int]:
    """A new temporary file or folder beside `path`, and a descriptor of it that holds a
    lock on it while open (a dead process holds none, even one killed by SIGKILL)."""
    name = {"dir": path.parent, "prefix": f".{path.name}.", "suffix": ".tmp"}
    while True:
        if folder:
            made = tempfile.mkdtemp(**name)
            fd = os.open(made, os.O_RDONLY | os.O_DIRECTORY)
        else:
            fd, made = tempfile.mkstemp(**name)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # no locks (some NFS): then no one removes it either
            return Path(made), fd
        with contextlib.suppress(FileNotFoundError):
            if os.stat(made).st_ino == os.fstat(fd).st_ino:
                return Path(made), fd
        os.close(fd)  # `_remove_stale` took it before it was locked: make another


def _remove_stale(path: Path) -> None:
    """Delete the temporary files or folders that writes of `path` killed midway left:
    those whose lock no live process holds."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.????????.tmp"):
        with contextlib.suppress(OSError):
            fd = os.open(stale, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if stale.is_dir():
                    shutil.rmtree(stale)
                else:
                    os.unlink(stale)
            finally:
                os.close(fd)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it takes the place of `path`.

    An existing `path` is swapped with the new folder in one step (on Linux; elsewhere it is
    moved aside first) and deleted after, so an interruption leaves either the old or the
    new folder complete. What killed writes of `path` left beside it is deleted first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    tmp, lock = _locked_temporary(path, folder=True)
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file() and not file.is_symlink():
                # some writers (safetensors via transformers) create private 0600 files
                os.chmod(file, 0o666 & ~_UMASK)
        old = None
        if path.exists():
            if _exchange(tmp, path):
                old = tmp  # which now holds the old folder
            else:
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                os.replace(path, old)
        if old is not tmp:
            os.replace(tmp, path)
    except BaseException as err:
        no_space = _no_space(err, tmp, path)
        shutil.rmtree(tmp, ignore_errors=True)
        if no_space is not None:
            raise no_space from err
        raise
    finally:
        os.close(lock)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
