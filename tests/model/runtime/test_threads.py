"""The thread governor: the cores the process may use (affinity, cgroup quota), the CPU time
other processes take on them (from /proc/stat less our own), and the thread count of each
batch picked from what they leave free, never above the caller's and put back after."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from cpt_embed.model.runtime.threads import (
    MIN_WINDOW_S,
    ThreadGovernor,
    allowed_cpus,
    busy_seconds,
    quota_cpus,
)

STAT = """cpu  400 0 100 900 10 0 0 0 0 0
cpu0 100 5 50 400 5 1 2 3 0 0
cpu1 200 0 50 500 5 0 0 0 0 0
cpu2 7 0 0 0 0 0 0 0 0 0
intr 1 2 3
ctxt 99
"""


def test_busy_seconds_counts_every_busy_column_of_the_allowed_cpus(tmp_path):
    (tmp_path / "stat").write_text(STAT)
    # cpu0: user 100 + nice 5 + system 50 + irq 1 + softirq 2 + steal 3 (idle, iowait not)
    hz = busy_seconds({0}, tmp_path / "stat") * 100
    assert hz == pytest.approx(161 * 100 / _ticks())
    assert busy_seconds({0, 1}, tmp_path / "stat") == pytest.approx((161 + 250) / _ticks())
    assert busy_seconds({0}, tmp_path / "missing") is None


def _ticks() -> int:
    import os

    return os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 2),
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_quota_cpus_reads_cgroup_v2_and_v1(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert quota_cpus(tmp_path) == expected


class Machine:
    """A fake clock and /proc/stat: `run(seconds, others, ours)` advances the wall clock and
    the CPU seconds other processes and this one used on the allowed cores; the governor's
    windows end when the test calls its `sample()` (no sampling thread)."""

    def __init__(self, cpus: int = 2, quota: int | None = None) -> None:
        self.wall = self.busy = self.own = 0.0
        self.cpus, self.quota = set(range(cpus)), quota

    def run(self, seconds: float, others: float, ours: float = 0.0) -> None:
        self.wall += seconds
        self.own += ours * seconds
        self.busy += (others + ours) * seconds

    def governor(self) -> ThreadGovernor:
        governor = ThreadGovernor(
            busy=lambda cpus: self.busy,
            wall=lambda: self.wall,
            own=lambda: self.own,
            cpus=lambda: self.cpus,
            quota=lambda: self.quota,
            sampler=False,
        )
        governor.sample()  # the first window starts
        return governor


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_a_busy_core_takes_a_thread_and_a_quiet_one_gives_it_back(two_threads):
    machine = Machine()
    governor = machine.governor()
    with governor.running() as step:
        assert step() == 2  # no window yet: the caller's count
        machine.run(0.5, others=0.7, ours=1.3)  # another process took 0.7 of a core
        governor.sample()
        assert step() == 1 and torch.get_num_threads() == 1
        assert governor.others == pytest.approx(0.7)
        machine.run(MIN_WINDOW_S / 2, others=0.0, ours=1.0)
        governor.sample()
        assert step() == 1  # a window shorter than MIN_WINDOW_S decides nothing
        machine.run(MIN_WINDOW_S, others=0.0, ours=1.0)
        governor.sample()
        assert step() == 2 and torch.get_num_threads() == 2
        machine.run(0.5, others=0.45, ours=1.5)  # under half a core: not taken
        governor.sample()
        assert step() == 2
        machine.run(0.5, others=1.6, ours=0.4)  # both cores busy elsewhere: one thread still
        governor.sample()
        assert step() == 1
    assert torch.get_num_threads() == 2  # the caller's count is put back


def test_the_callers_count_and_the_quota_are_never_exceeded(two_threads):
    machine = Machine(cpus=8, quota=3)
    governor = machine.governor()
    machine.run(0.5, others=0.0)
    governor.sample()
    torch.set_num_threads(4)
    with governor.running() as step:
        assert step() == 3  # 8 quiet cores, a quota of 3
    torch.set_num_threads(2)
    with governor.running() as step:
        assert step() == 2  # the caller asked for 2
    torch.set_num_threads(1)
    machine.run(0.5, others=5.0)
    governor.sample()
    with governor.running() as step:
        assert step() == 1  # one thread: nothing to decide
    assert torch.get_num_threads() == 1


def test_each_window_is_the_last_one_not_the_time_since_the_last_work(two_threads):
    machine = Machine()
    governor = machine.governor()
    for _ in range(10):  # a minute of another program's work, sampled as it goes
        machine.run(6, others=2.0)
        governor.sample()
    machine.run(0.15, others=0.0)  # it ended: the last window is quiet
    governor.sample()
    with governor.running() as step:
        assert step() == 2
    unreadable = ThreadGovernor(busy=lambda cpus: None, sampler=False)
    unreadable.sample()
    unreadable.sample()
    with unreadable.running() as step:
        assert step() == 2 and unreadable.free_cores() is None


def test_work_inside_work_keeps_the_outer_cap(two_threads):
    machine = Machine()
    governor = machine.governor()
    with governor.running() as step:
        machine.run(0.5, others=0.7, ours=1.3)
        governor.sample()
        assert step() == 1  # the training step's count under contention
        machine.run(0.5, others=0.0, ours=2.0)
        governor.sample()
        with governor.running() as inner:  # an evaluation inside the run
            assert inner() == 2  # the quiet cores again, not the last step's one
        assert step() == 2
    assert torch.get_num_threads() == 2


def test_off_the_cpu_nothing_is_sampled_or_changed(two_threads, monkeypatch):
    started = []
    monkeypatch.setattr(ThreadGovernor, "start_sampling", lambda self: started.append(self))
    governor = ThreadGovernor(sampler=False)
    governor._free = 1  # a window that would take a thread on the CPU
    with governor.running(on_cpu=False) as step:
        assert step() == 2 and torch.get_num_threads() == 2
    assert not started


def test_the_sampling_thread_starts_once_per_process(two_threads, monkeypatch):
    started = []
    monkeypatch.setattr(
        "cpt_embed.model.runtime.threads.threading.Thread",
        lambda **kwargs: started.append(kwargs) or type("T", (), {"start": lambda self: None})(),
    )
    governor = ThreadGovernor()
    with governor.running():
        pass
    with governor.running():
        pass
    assert len(started) == 1 and started[0]["daemon"]


def test_a_real_busy_process_is_seen_on_the_real_machine():
    if busy_seconds(allowed_cpus()) is None:
        pytest.skip("no /proc/stat here")
    governor = ThreadGovernor()  # its own sampling thread
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with governor.running():
            time.sleep(1.0)
            seen = governor.others
    finally:
        hog.kill()
        hog.wait()
    assert seen >= 0.5


def test_vectors_are_the_same_whichever_thread_count_runs_a_batch(tiny_bert, two_threads):
    from cpt_embed import Encoder

    encoder = Encoder.load(tiny_bert)
    texts = [f"text number {i} " * (i % 7 + 1) for i in range(40)]
    two = encoder.encode(texts, batch_size=8)
    torch.set_num_threads(1)
    one = encoder.encode(texts, batch_size=8)
    np.testing.assert_allclose(one, two, atol=1e-5)
