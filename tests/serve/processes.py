"""`cpt serve` as a subprocess for the server tests, and its memory sampled meanwhile."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import psutil
from servers import free_port


@contextmanager
def cpt_serve(*options: str, env: dict[str, str] | None = None) -> Iterator[tuple[int, str]]:
    """`cpt serve --port P *options` running while the block runs; yields its process id
    and base URL once /health answers."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cpt_embed.cli", "serve", "--port", str(port), *options],
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.time() > deadline:
                    process.kill()
                    stderr = process.stderr.read()
                    raise RuntimeError(f"cpt serve did not start: {stderr}") from None
                time.sleep(0.2)
        yield process.pid, url
        assert process.poll() is None, "the server died"
    finally:
        process.terminate()
        process.wait(20)


def rss(pid: int) -> int:
    """Resident bytes of a process and its children (cpt serve re-executes itself)."""
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])


class PeakRss(threading.Thread):
    """Samples a process tree's resident memory every 0.25 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.25):
            try:
                self.samples.append((time.perf_counter(), rss(self.pid)))
            except psutil.Error:
                return

    def stop(self) -> None:
        """Stop sampling."""
        self.done.set()
        self.join()

    def peak_between(self, start: float, end: float) -> int:
        """The highest sample taken between `start` and `end` (perf_counter seconds)."""
        return max(rss for t, rss in self.samples if start <= t <= end)
