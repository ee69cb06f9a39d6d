"""Atomic writes: all or nothing, usual permissions."""

from __future__ import annotations

import contextlib
import os
import resource
import sqlite3
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from crash import run_killed, small_disk

from cpt_embed.atomic import NoSpaceError, atomic_dir, atomic_file


def test_atomic_file_replaces_only_on_success(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target, "w") as handle:
        handle.write("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    with atomic_file(target, "w") as handle:
        handle.write("new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_atomic_dir_keeps_the_old_folder_on_failure(tmp_path):
    target = tmp_path / "d"
    target.mkdir()
    (target / "a").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a").write_text("half")
        raise RuntimeError("crash")
    assert (target / "a").read_text() == "old"
    with atomic_dir(target) as tmp:
        (tmp / "b").write_text("new")
    assert [p.name for p in target.iterdir()] == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_atomic_dir_gives_files_the_usual_permissions(tmp_path):
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "sub").mkdir()
        private = tmp / "sub" / "weights"
        private.write_text("x")
        os.chmod(private, 0o600)
    umask = os.umask(0)
    os.umask(umask)
    mode = stat.S_IMODE((tmp_path / "d" / "sub" / "weights").stat().st_mode)
    assert mode == 0o666 & ~umask


def test_a_killed_writes_leftovers_go_with_the_next_write_a_live_ones_stay(tmp_path):
    target = tmp_path / "d"
    script = (
        "import time\nfrom cpt_embed.atomic import atomic_dir\n"
        f"with atomic_dir({str(target)!r}) as tmp:\n"
        "    (tmp / 'half').write_text('x')\n    time.sleep(300)\n"
    )
    half_written = lambda: any(tmp_path.glob(".d.*.tmp/half"))  # noqa: E731
    assert run_killed([sys.executable, "-c", script], ready=half_written, delay=0)
    assert half_written() and not target.exists()
    with atomic_dir(target) as live:
        (live / "a").write_text("1")
        with atomic_dir(target) as other:  # a second writer while the first is at work
            (other / "b").write_text("2")
        assert (live / "a").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
    assert [p.name for p in target.iterdir()] == ["a"]  # the last to finish wins


def test_a_killed_file_writes_leftover_goes_with_the_next_write_a_live_ones_stays(tmp_path):
    target = tmp_path / "f.txt"
    script = (
        "import time\nfrom cpt_embed.atomic import atomic_file\n"
        f"with atomic_file({str(target)!r}, 'w') as handle:\n"
        "    handle.write('half')\n    handle.flush()\n    time.sleep(300)\n"
    )
    half_written = lambda: any(p.read_text() == "half" for p in tmp_path.glob(".f.txt.*.tmp"))  # noqa: E731
    assert run_killed([sys.executable, "-c", script], ready=half_written, delay=0)
    assert half_written() and not target.exists()
    with atomic_file(target, "w") as live:
        live.write("1")
        with atomic_file(target, "w") as other:  # a second writer while the first is at work
            other.write("2")
        assert len(list(tmp_path.glob(".f.txt.*.tmp"))) == 1  # the live one's
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    assert target.read_text() == "1"  # the last to finish wins


def test_readers_never_find_a_replaced_folder_missing(tmp_path):
    target = tmp_path / "d"
    with atomic_dir(target) as tmp:
        (tmp / "n").write_text("0")
    stop, missing = threading.Event(), []

    def read() -> None:
        while not stop.is_set():
            try:
                (target / "n").read_text()
            except FileNotFoundError:
                missing.append(True)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(1, 300):
            with atomic_dir(target) as tmp:
                (tmp / "n").write_text(str(i))
    finally:
        stop.set()
        reader.join()
    assert not missing
    assert (target / "n").read_text() == "299"


BIG = np.zeros(100_000, dtype=np.float32)  # 400 kB in each format


def _sqlite(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x BLOB)")
        db.executemany("INSERT INTO t VALUES (?)", [(BIG[:250].tobytes(),)] * 400)
    db.close()


def _faiss(path: Path) -> None:
    import faiss

    index = faiss.IndexFlatIP(100)
    index.add(BIG.reshape(-1, 100))
    faiss.write_index(index, str(path))


def _safetensors(path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"x": torch.from_numpy(BIG)}, path)


# what the commands write, into a file handle (atomic_file) or by path (atomic_dir)
WRITERS = {
    ("file", "numpy"): lambda handle: np.save(handle, BIG),
    ("file", "torch"): lambda handle: torch.save({"x": torch.from_numpy(BIG)}, handle),
    ("file", "bytes"): lambda handle: handle.write(BIG.tobytes()),
    ("folder", "numpy"): lambda path: np.save(path, BIG),
    ("folder", "torch"): lambda path: torch.save({"x": torch.from_numpy(BIG)}, path),
    ("folder", "safetensors"): _safetensors,
    ("folder", "faiss"): _faiss,
    ("folder", "sqlite"): _sqlite,
    ("folder", "text"): lambda path: path.write_text("x" * BIG.nbytes),
}


@contextlib.contextmanager
def _file_size_limit(size: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@pytest.mark.parametrize("limit", ["file size limit", "full disk"])
@pytest.mark.parametrize("kind, writer", list(WRITERS))
def test_a_write_out_of_space_is_one_clear_error_and_leaves_the_old(tmp_path, limit, kind, writer):
    """Every writer the commands use, whether or not its error carries the errno: the
    message names the path and the cause, the temporary goes, the old content stays."""
    with contextlib.ExitStack() as stack:
        if limit == "full disk":
            folder = stack.enter_context(small_disk(tmp_path / "disk", "256k"))
            reasons, limited = ["no space left on device"], contextlib.nullcontext()
        else:
            folder, limited = tmp_path, _file_size_limit(100_000)
            reasons = ["file too large", "a write failed under a file size limit of 100,000 "]
        target = folder / "target"
        if kind == "file":
            target.write_text("old")
        else:
            target.mkdir()
            (target / "f").write_text("old")
        with pytest.raises(NoSpaceError) as caught, limited:
            if kind == "file":
                with atomic_file(target) as handle:
                    WRITERS[kind, writer](handle)
            else:
                with atomic_dir(target) as tmp:
                    WRITERS[kind, writer](tmp / "f")
        message = str(caught.value)
        assert any(message.startswith(f"cannot write {target}: {r}") for r in reasons), message
        assert message.endswith("; free some space or choose another --output")
        assert (target if kind == "file" else target / "f").read_text() == "old"
        assert [p.name for p in folder.iterdir()] == ["target"]
