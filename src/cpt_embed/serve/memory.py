"""Memory handed back after bursts of large requests.

glibc keeps what is freed in its arenas (one per thread that allocated: the tokenizer's and
the encoder's worker threads included), so after a burst of large bodies the server's RSS
stayed at its peak. Once the server is idle after enough bytes of bodies, `malloc_trim(0)`
returns the free pages of every arena to the system (in a thread: it takes the arenas'
locks, not the event loop). Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from collections.abc import Callable
from functools import cache

# Bytes of request bodies since the last trim that make the next idle moment trim (about a
# thousand small requests, or one large one).
TRIM_AFTER_BYTES = 1024 * 1024
# Seconds the server must stay idle first (a trim in a busy spell only costs page faults).
TRIM_DELAY_SECONDS = 0.5


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


class Trimmer:
    """Counts the bytes of bodies read and trims the allocator's free memory once the
    server has been idle for TRIM_DELAY_SECONDS after TRIM_AFTER_BYTES or more; `working`
    tells whether work goes on without a request (the batcher ending a gone caller's
    piece): then the trim waits for it."""

    def __init__(
        self, after_bytes: int = TRIM_AFTER_BYTES, working: Callable[[], bool] = lambda: False
    ) -> None:
        self.after_bytes = after_bytes
        self.working = working
        self.pending = 0
        self.trims = 0
        self._timer: asyncio.TimerHandle | None = None

    def read(self, nbytes: int) -> None:
        """Count `nbytes` of a body read."""
        self.pending += nbytes

    def busy(self) -> None:
        """A request has started: no trim in the middle of it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def idle(self) -> None:
        """The last request in flight has ended: trim soon unless another starts."""
        if self.pending >= self.after_bytes and self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(TRIM_DELAY_SECONDS, self._start)

    def _start(self) -> None:
        self._timer = None
        if self.working():
            self.idle()
            return
        self.pending = 0
        trim = _malloc_trim()
        if trim is not None:
            self.trims += 1
            asyncio.get_running_loop().run_in_executor(None, trim, 0)
