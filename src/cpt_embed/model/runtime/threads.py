"""How many CPU threads a batch runs on: no more than the cores the process may use (its CPU
affinity, its cgroup's CPU quota) and the cores other processes leave free.

torch's OpenMP threads split every parallel region of a forward pass (about 150 of them)
evenly and wait for each other at its end. When another process holds one of the cores, the
thread that shares that core runs only part of the time, and every region waits for it:
with two threads on two cores and one core busy, encoding ran 20x slower, where one thread
runs at about half the quiet speed. So the governor reads, every SAMPLE_PERIOD_S, how much
CPU time other processes took on this process's cores (/proc/stat less this process's own
time), and each batch runs on the cores they left in the last window: a core taken half
the time or more counts as taken. It never goes above the thread count the caller set (torch's, or
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

# How often the governor looks: each window counts 10-20 clock ticks (10 ms each) of every
# core, enough to tell a core busy half the time from a quiet one.
SAMPLE_PERIOD_S = 0.15
# A window shorter than this (two samples close together) decides nothing.
MIN_WINDOW_S = 0.1
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
    """Picks the thread count of each batch from the cores other processes left free in the
    last window (module docstring). A daemon thread samples every SAMPLE_PERIOD_S from the
    first piece of work on, so that a window never spans a pause (another program's burst
    before this one's work, or an hour of a server's idling); `running()` wraps a piece of
    work, `step()` goes before each batch."""

    def __init__(
        self,
        busy: Callable[[set[int]], float | None] = busy_seconds,
        wall: Callable[[], float] = time.monotonic,
        own: Callable[[], float] = time.process_time,
        cpus: Callable[[], set[int]] = allowed_cpus,
        quota: Callable[[], int | None] = quota_cpus,
        sampler: bool = True,
    ) -> None:
        self._busy, self._wall, self._own, self._cpus = busy, wall, own, cpus
        self._quota = quota()
        self._last: _Sample | None = None
        self._free: int | None = None  # cores left in the last window
        self._lock = threading.Lock()
        self._sampler = sampler
        self._sampling_pid: int | None = None  # a forked child samples afresh
        self._work = threading.local()  # the cap of the piece of work a thread is in
        self.others = 0.0  # cores other processes used in the last window

    def sample(self) -> None:
        """End the window (unless shorter than MIN_WINDOW_S) and start the next: the cores
        other processes used during it, and those left for this one."""
        with self._lock:
            last = self._last
            if last is not None and self._wall() - last.wall < MIN_WINDOW_S:
                return
            cpus = self._cpus()
            busy = self._busy(cpus)
            if busy is None:
                return
            now = self._last = _Sample(self._wall(), busy, self._own())
            if last is None:
                return
            span = now.wall - last.wall
            self.others = max(0.0, (now.busy - last.busy - (now.own - last.own)) / span)
            free = max(1, len(cpus) - math.floor(self.others + 0.5))
            self._free = free if self._quota is None else min(free, self._quota)

    def free_cores(self) -> int | None:
        """Cores left for this process in the last window (None before one has ended)."""
        return self._free

    def start_sampling(self) -> None:
        """Start the sampling thread in this process, if not yet (a CPU model's load calls
        it, so that a window has ended by its first batch)."""
        if not self._sampler or self._sampling_pid == os.getpid():
            return
        self._sampling_pid = os.getpid()
        self._last = self._free = None
        self.sample()
        threading.Thread(target=self._sample_forever, name="cpt-threads", daemon=True).start()

    def _sample_forever(self) -> None:
        pid = os.getpid()
        while self._sampling_pid == pid:
            time.sleep(SAMPLE_PERIOD_S)
            self.sample()

    def step(self, cap: int) -> int:
        """The threads for the next batch, at most `cap`, set in torch (for this thread)."""
        if cap <= 1:
            return cap
        free = self._free
        threads = cap if free is None else min(cap, free)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return threads

    @contextmanager
    def running(self, on_cpu: bool = True) -> Iterator[Callable[[], int]]:
        """A piece of work (one `encode`, a training run): yields the function to call
        before each batch; torch's thread count, the cap, is put back after. Work inside
        work (an evaluation during training) keeps the outer cap, not the count the outer
        work's last batch was given. Off the CPU the function changes nothing."""
        outer = getattr(self._work, "cap", None)
        cap = torch.get_num_threads() if outer is None else outer
        if not on_cpu:
            yield lambda: cap
            return
        self.start_sampling()
        self._work.cap = cap
        try:
            yield lambda: self.step(cap)
        finally:
            if outer is None:
                del self._work.cap
                if torch.get_num_threads() != cap:
                    torch.set_num_threads(cap)


# One per process: its windows run on from one piece of work to the next (a server's batches).
GOVERNOR = ThreadGovernor()
