"""The Prefetcher: prepare(item) of every item in order, errors raised in the consumer where
they happened, a thread that runs ahead by its depth and stops promptly on close."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from cpt_embed.train.loader import Prefetcher


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


def _wait_until(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_yields_prepare_of_every_item_in_order():
    with Prefetcher(iter(range(50)), lambda i: (i, i * i), depth=3) as loader:
        assert list(loader) == [(i, i * i) for i in range(50)]


def test_no_items_give_nothing():
    with Prefetcher(iter([]), lambda i: i) as loader:
        assert list(loader) == []


def test_an_error_in_prepare_is_raised_where_it_happened():
    def prepare(i: int) -> int:
        if i == 4:
            raise ValueError("bad item 4")
        return 10 * i

    with Prefetcher(iter(range(10)), prepare, depth=2) as loader:
        assert [next(loader) for _ in range(4)] == [0, 10, 20, 30]
        with pytest.raises(ValueError, match="bad item 4"):
            next(loader)


def test_an_error_in_the_items_is_raised_where_it_happened():
    def items():
        yield from range(3)
        raise KeyError("the stream broke")

    with Prefetcher(items(), lambda i: -i, depth=1) as loader:
        got = []
        with pytest.raises(KeyError, match="the stream broke"):
            for value in loader:
                got.append(value)
    assert got == [0, -1, -2]


def test_it_runs_ahead_by_its_depth():
    seen: list[int] = []

    def prepare(i: int) -> int:
        seen.append(i)
        return i

    with Prefetcher(itertools.count(), prepare, depth=2) as loader:
        assert next(loader) == 0
        # one taken, `depth` waiting in the queue, one prepared and waiting for room
        assert _wait_until(lambda: len(seen) >= 4)
        time.sleep(0.3)
        assert seen == [0, 1, 2, 3]
        assert [next(loader) for _ in range(3)] == [1, 2, 3]


@pytest.mark.parametrize("depth", [1, 4])
def test_close_stops_the_thread_of_an_endless_stream(depth):
    before = _threads()
    loader = Prefetcher(itertools.count(), lambda i: i, depth=depth)
    started = _threads() - before
    assert started and all(t.is_alive() for t in started)
    assert [next(loader) for _ in range(3)] == [0, 1, 2]
    time.sleep(0.1)  # the thread is now blocked on a full queue
    began = time.monotonic()
    loader.close()
    assert time.monotonic() - began < 2
    assert not any(t.is_alive() for t in started)


def test_close_stops_a_thread_that_is_preparing():
    before = _threads()
    busy = threading.Event()

    def slow(i: int) -> int:
        busy.set()
        time.sleep(0.2)
        return i

    loader = Prefetcher(itertools.count(), slow, depth=2)
    started = _threads() - before
    assert busy.wait(5)
    began = time.monotonic()
    loader.close()
    assert time.monotonic() - began < 2
    assert not any(t.is_alive() for t in started)


def test_leaving_the_context_closes_it():
    before = _threads()
    with Prefetcher(itertools.count(), lambda i: i) as loader:
        started = _threads() - before
        next(loader)
    assert not any(t.is_alive() for t in started)


def _next_within(loader: Prefetcher, seconds: float) -> tuple[bool, BaseException | None]:
    """Whether next(loader) returned or raised within `seconds`, and what it raised."""
    outcome: list[BaseException | None] = []

    def take() -> None:
        try:
            next(loader)
            outcome.append(None)
        except BaseException as err:
            outcome.append(err)

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    thread.join(seconds)
    return bool(outcome), (outcome[0] if outcome else None)


def test_a_spent_prefetcher_keeps_raising_stop_iteration():
    loader = Prefetcher(iter([1, 2]), lambda i: i)
    assert list(loader) == [1, 2]
    done, raised = _next_within(loader, 1.0)
    loader.close()
    assert done and isinstance(raised, StopIteration)


def test_after_an_error_it_stops_instead_of_waiting():
    def prepare(i: int) -> int:
        if i == 1:
            raise ValueError("bad item 1")
        return i

    loader = Prefetcher(iter(range(5)), prepare)
    assert next(loader) == 0
    with pytest.raises(ValueError, match="bad item 1"):
        next(loader)
    done, raised = _next_within(loader, 1.0)
    loader.close()
    assert done and isinstance(raised, StopIteration)
