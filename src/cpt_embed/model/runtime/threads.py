"""How many CPU threads a batch runs on: no more than the cores the process may use (its CPU
affinity, its cgroup's CPU quota) and the cores other processes leave free.

torch's OpenMP threads split every parallel region of a forward pass (about 150 of them)
evenly and wait for each other at its end. When another process holds one of the cores, the
thread that shares that core runs only part of the time, and every region waits for it:
with two threads on two cores and one core busy, encoding ran 20x slower, where one thread
runs at about half the quiet speed. So before each batch the governor reads how much CPU
time other processes took on this process's cores since it last looked (/proc/stat less
this process's own time) and runs on the cores left: a core taken half the time or more
counts as taken. It never goes above the thread count the caller set (torch's, or
OMP_NUM_THREADS) and puts that back when the work ends. Where /proc/stat cannot be read it
changes nothing.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

# Shorter windows count too few clock ticks (10 ms each) to tell a busy core from a quiet one.
MIN_WINDOW_S = 0.25
PROC_STAT = Path("/proc/stat")
_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
CGROUP = Path("/sys/fs/cgroup")


def allowed_cpus() -> set[int]:
    """The CPUs this process may run on (all of them where affinity is unknown)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def quota_cpus(root: Path = CGROUP) -> int | None:
    """Whole CPUs the cgroup's quota allows (rounded up), or None without a quota: cgroup v2
    `cpu.max` ("quota period", or "max period"), else v1 `cpu/cpu.cfs_quota_us` and
    `cpu.cfs_period_us` (quota -1: none)."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else max(1, math.ceil(quota / period))


def busy_seconds(cpus: set[int], path: Path = PROC_STAT) -> float | None:
    """CPU seconds spent on `cpus` by anything (user, system, interrupts, and time the
    hypervisor stole) since boot, from /proc/stat; None where it cannot be read."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    ticks = 0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
        ticks += user + nice + system + irq + softirq + steal
    return ticks / _TICKS_PER_S


@dataclass
class _Sample:
    wall: float
    busy: float
    own: float


class ThreadGovernor:
    """Picks the thread count of each batch from the cores other processes leave free
    (module docstring); `running()` wraps a piece of work, `step()` goes before each batch."""

    def __init__(
        self,
        busy: Callable[[set[int]], float | None] = busy_seconds,
        wall: Callable[[], float] = time.monotonic,
        own: Callable[[], float] = time.process_time,
        cpus: Callable[[], set[int]] = allowed_cpus,
        quota: Callable[[], int | None] = quota_cpus,
    ) -> None:
        self._busy, self._wall, self._own, self._cpus = busy, wall, own, cpus
        self._quota = quota()
        self._last: _Sample | None = None
        self._free: int | None = None  # cores left in the last window
        self._lock = threading.Lock()
        self.others = 0.0  # cores other processes used in the last window

    def _sample(self, cpus: set[int]) -> _Sample | None:
        busy = self._busy(cpus)
        return None if busy is None else _Sample(self._wall(), busy, self._own())

    def free_cores(self) -> int | None:
        """Cores left for this process after the last window of at least MIN_WINDOW_S
        (None when no such window has ended since the last call)."""
        with self._lock:
            last = self._last
            if last is not None and self._wall() - last.wall < MIN_WINDOW_S:
                return None
            cpus = self._cpus()
            now = self._sample(cpus)
            if now is None:
                return None
            self._last = now
            if last is None:
                return None
            span = now.wall - last.wall
            self.others = max(0.0, (now.busy - last.busy - (now.own - last.own)) / span)
        free = len(cpus) - math.floor(self.others + 0.5)
        return max(1, free if self._quota is None else min(free, self._quota))

    def step(self, cap: int) -> int:
        """The threads for the next batch, at most `cap`, set in torch (for this thread)."""
        if cap <= 1:
            return cap
        free = self.free_cores()
        if free is not None:
            self._free = free
        threads = cap if self._free is None else min(cap, self._free)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return threads

    @contextmanager
    def running(self) -> Iterator[Callable[[], int]]:
        """A piece of work (one `encode`, a training run): yields the function to call
        before each batch; torch's thread count, the cap, is put back after."""
        cap = torch.get_num_threads()
        try:
            yield lambda: self.step(cap)
        finally:
            if torch.get_num_threads() != cap:
                torch.set_num_threads(cap)


# One per process: a window runs from one piece of work into the next (a server's batches),
# however long the pause between them.
GOVERNOR = ThreadGovernor()
