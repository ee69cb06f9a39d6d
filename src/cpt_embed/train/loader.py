"""Batches prepared ahead, off the critical path: a thread takes the pair stream, keeps
this process's slice of each global batch, gathers its token ids, cuts each side into
chunks and pins their tensors (on CUDA), `depth` batches ahead of the step that runs now.
The stream is deterministic, so prefetching changes no batch; an error in the thread is
raised in the step that would have used its batch."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
S = TypeVar("S")
_DONE = object()


class Prefetcher(Generic[T]):
    """`prepare(item)` for each item of `items`, run in a thread `depth` items ahead;
    iterate it for the results in order. `close()` stops the thread."""

    def __init__(self, items: Iterator[S], prepare: Callable[[S], T], depth: int = 2) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(
            target=self._fill, args=(items, prepare), name="cpt-batches", daemon=True
        )
        self._thread.start()

    def _fill(self, items: Iterator[S], prepare: Callable[[S], T]) -> None:
        try:
            for item in items:
                result = prepare(item)
                while not self._stop.is_set():
                    try:
                        self._queue.put(result, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._put(_DONE)
        except BaseException as err:  # handed to the consumer, who raises it
            self._put(err)

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Prefetcher[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if item is _DONE:
            self._done = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._done = True  # the thread has stopped: nothing more will come
            raise item
        return item

    def close(self) -> None:
        """Stop the thread (it finishes the batch it is preparing)."""
        self._stop.set()
        self._thread.join(timeout=30)

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
