"""Micro-batching: concurrent requests share forward passes.

Requests wait in a bounded queue, cut into pieces of at most `max_batch_tokens`; one worker
takes as many pieces as fit `max_batch_tokens` and embeds them in one `encode` call on a
worker thread. A batch waits for the callers the last one served: clients that send their
next request once answered come back within one HTTP round, and a batch that starts
without them leaves them a whole forward pass to wait (at 64 clients a fixed 5 ms window
split each round into a batch of most callers and a straggling batch of the rest, whose
callers waited two forward passes). So a batch starts once as many pieces as the last
batch and its queue held are in, once no piece has come for `max_wait`, or once it has
waited as long as the last forward pass took; a lone client's request starts at once. A
full queue refuses new work at once (the server answers 503) instead of growing memory,
and the pieces of a caller that has gone (past its deadline, disconnected) are skipped: a
large request stops at the piece in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cpt_embed.model import Encoder
from cpt_embed.serve.embedding import embed_ids


class QueueFull(Exception):
    """The queue holds `max_queue` texts already; retry later."""


@dataclass
class _Job:
    items: list  # texts, or token id lists
    side: str
    ids: bool
    tokens: int
    future: asyncio.Future = field(repr=False)


@dataclass
class BatcherStats:
    """Counters for /metrics."""

    requests: int = 0
    texts: int = 0
    batches: int = 0
    rejected: int = 0


def _pieces(lengths: Sequence[int], budget: int) -> list[tuple[int, int]]:
    """(start, end) ranges of consecutive items of at most `budget` tokens (at least one
    item each)."""
    pieces, start, size = [], 0, 0
    for i, n in enumerate(lengths):
        if i > start and size + n > budget:
            pieces.append((start, i))
            start, size = i, 0
        size += n
    pieces.append((start, len(lengths)))
    return pieces


class MicroBatcher:
    """Embeds lists of texts (or token ids) for many concurrent callers with few forward
    passes."""

    def __init__(
        self,
        encoder: Encoder,
        *,
        max_batch_tokens: int = 16_384,
        max_wait: float = 0.005,
        max_queue: int = 4096,
    ) -> None:
        self.encoder = encoder
        self.max_batch_tokens = max_batch_tokens
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.stats = BatcherStats()
        self._jobs: deque[_Job] = deque()
        self._arrived: asyncio.Future | None = None  # what the worker awaits while gathering
        self._queued_texts = 0
        self._embedding = False
        self._worker: asyncio.Task | None = None
        # the last batch's pieces and those queued behind it, and its forward pass's seconds
        self._returning = 0
        self._last_forward = 0.0

    @property
    def queued(self) -> int:
        """Texts waiting to be embedded."""
        return self._queued_texts

    @property
    def working(self) -> bool:
        """True while texts wait or are being embedded."""
        return self._embedding or self._queued_texts > 0

    async def start(self) -> None:
        """Start the worker (on the running event loop)."""
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop the worker."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def embed(
        self, items: list, side: str, lengths: Sequence[int], *, ids: bool = False
    ) -> np.ndarray:
        """Embeddings of `items` (texts, or token id lists where `ids`) on `side`, computed
        together with other callers' items; `lengths` are their tokens, for the batch
        budget. Raises QueueFull when saturated; cancelling the caller cancels the pieces
        not yet embedded."""
        if self._worker is None:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        if self._queued_texts + len(items) > self.max_queue:
            self.stats.rejected += 1
            raise QueueFull
        loop = asyncio.get_running_loop()
        self._queued_texts += len(items)
        self.stats.requests += 1
        futures = []
        for start, end in _pieces(lengths, self.max_batch_tokens):
            future = loop.create_future()
            tokens = sum(lengths[start:end])
            self._jobs.append(_Job(items[start:end], side, ids, tokens, future))
            futures.append(future)
        self._wake()
        if len(futures) == 1:
            return await futures[0]
        return np.concatenate(await asyncio.gather(*futures))

    def _wake(self) -> None:
        if self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(None)

    async def _arrival(self, timeout: float | None) -> bool:
        """Wait until a piece is queued (True) or `timeout` seconds have passed (False)."""
        if not self._jobs:
            loop = asyncio.get_running_loop()
            self._arrived = loop.create_future()
            timer = None if timeout is None else loop.call_later(timeout, self._wake)
            try:
                await self._arrived
            finally:
                self._arrived = None
                if timer is not None:
                    timer.cancel()
        return bool(self._jobs)

    async def _gather(self) -> list[_Job]:
        """The next batch (module docstring): pieces up to the token budget, gathered until
        as many as the last batch served have come, none has come for max_wait, or the
        wait has lasted as long as the last forward pass."""
        await self._arrival(None)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(self.max_wait, self._last_forward)
        jobs: list[_Job] = []
        budget = 0
        while True:
            while self._jobs and budget < self.max_batch_tokens:
                jobs.append(self._jobs.popleft())
                budget += jobs[-1].tokens
            if budget >= self.max_batch_tokens or len(jobs) >= self._returning:
                return jobs
            timeout = min(self.max_wait, deadline - loop.time())
            if timeout <= 0 or not await self._arrival(timeout):
                return jobs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._gather()
            self._queued_texts -= sum(len(job.items) for job in jobs)
            started = loop.time()
            for kind in dict.fromkeys((job.side, job.ids) for job in jobs):
                # callers that gave up (past their deadline, disconnected) are not embedded:
                # under overload that work would only make the next callers late too
                alive = [j for j in jobs if (j.side, j.ids) == kind and not j.future.done()]
                if alive:
                    await self._embed(alive, *kind)
            self._last_forward = loop.time() - started
            self._returning = len(jobs) + len(self._jobs)

    async def _embed(self, jobs: list[_Job], side: str, ids: bool) -> None:
        items = [item for job in jobs for item in job.items]
        self._embedding = True
        try:
            if ids:
                vectors = await asyncio.to_thread(embed_ids, self.encoder, items, side)
            else:
                vectors = await asyncio.to_thread(self.encoder.encode, items, side)
        except Exception as err:  # handed to every waiting caller
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(err)
            return
        finally:
            self._embedding = False
        self.stats.batches += 1
        self.stats.texts += len(items)
        start = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_result(vectors[start : start + len(job.items)])
            start += len(job.items)
