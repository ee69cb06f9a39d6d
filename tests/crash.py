"""The crash-safety tests' one helper: run a `cpt` command, SIGKILL it at a random moment
(or run it where no file may grow past a size, as on a full disk), and report."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

CPT = [sys.executable, "-m", "cpt_embed.cli"]
_POLL_S = 0.001
_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def measure(run: Callable[[], object], ready: Callable[[], bool]) -> float:
    """Call `run()` and return the seconds from when `ready()` first held (polled from a
    thread) to its end: the window in which a kill of the same command lands in its work."""
    seen: list[float] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set() and not ready():
            time.sleep(_POLL_S)
        seen.append(time.perf_counter())

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        run()
    finally:
        done.set()
        watcher.join()
    return time.perf_counter() - seen[0]


def cpt_here(args: list[str]):
    """Run `cpt ARGS` in this process, as the killed commands run: with one thread (two
    threads spinning against a busy machine make tiny models' steps seconds long); its
    CliRunner result, which must have succeeded."""
    from typer.testing import CliRunner

    from cpt_embed.cli import app

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(app, args)
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return result


def run_killed(
    command: list[str], *, ready: Callable[[], bool], delay: float, timeout: float = 300
) -> bool:
    """Start `command` (`CPT + args` for a `cpt` command), wait until `ready()` holds, then
    `delay` seconds more, and SIGKILL it. True if the kill landed, False if the command had
    finished (successfully) before."""
    process = subprocess.Popen(command, env=_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while not ready() and process.poll() is None:
            assert time.monotonic() < deadline, f"{command}: not ready in {timeout}s"
            time.sleep(_POLL_S)
        end = time.monotonic() + delay
        while process.poll() is None and time.monotonic() < end:
            time.sleep(_POLL_S)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
    finally:
        _, stderr = process.communicate(timeout=timeout)
    if process.returncode == -signal.SIGKILL:
        return True
    assert process.returncode == 0, stderr.decode(errors="replace")[-3000:]
    return False


def run_cpt(args: list[str], *, max_file_bytes: int | None = None) -> subprocess.CompletedProcess:
    """Run `cpt ARGS` to its end; with `max_file_bytes`, where no file may grow past that
    size: a write beyond fails with EFBIG, as one on a full disk fails with ENOSPC."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.run(
        CPT + args,
        env=_ENV,
        preexec_fn=None if max_file_bytes is None else limit,
        capture_output=True,
        text=True,
        timeout=300,
    )


@contextlib.contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """`folder` as a tmpfs of `size` (e.g. "4m"), a disk that fills up; skips the test
    where mounting is not allowed (not root, or in a container without the capability)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def hidden_temporaries(folder: Path) -> list[str]:
    """Temporary files and folders of atomic writes (".NAME.XXXX.tmp") under `folder`."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*.tmp"))
