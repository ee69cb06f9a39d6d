"""Micro-batching: concurrent requests share forward passes.

Requests wait in a bounded queue; one worker takes as many as fit `max_batch_tokens` (or
whatever arrived within `max_wait` of the first) and embeds them in one `encode` call on a
worker thread. A full queue refuses new work at once (the server answers 503) instead of
growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import numpy as np

from cpt_embed.model import Encoder


class QueueFull(Exception):
    """The queue holds `max_queue` texts already; retry later."""


@dataclass
class _Job:
    texts: list[str]
    side: str
    tokens: int
    future: asyncio.Future = field(repr=False)


@dataclass
class BatcherStats:
    """Counters for /metrics."""

    requests: int = 0
    texts: int = 0
    batches: int = 0
    rejected: int = 0


class MicroBatcher:
    """Embeds lists of texts for many concurrent callers with few forward passes."""

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
        self._queue: asyncio.Queue[_Job] | None = None
        self._queued_texts = 0
        self._worker: asyncio.Task | None = None

    @property
    def queued(self) -> int:
        """Texts waiting to be embedded."""
        return self._queued_texts

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def embed(self, texts: list[str], side: str, tokens: int) -> np.ndarray:
        """Embeddings of `texts` on `side`, computed together with other callers' texts;
        `tokens` is their size for the batch budget. Raises QueueFull when saturated."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        if self._queued_texts + len(texts) > self.max_queue:
            self.stats.rejected += 1
            raise QueueFull
        future = asyncio.get_running_loop().create_future()
        self._queued_texts += len(texts)
        self.stats.requests += 1
        self._queue.put_nowait(_Job(texts, side, tokens, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            budget = jobs[0].tokens
            deadline = loop.time() + self.max_wait
            while budget < self.max_batch_tokens:
                if not self._queue.empty():
                    job = self._queue.get_nowait()
                else:
                    timeout = deadline - loop.time()
                    if timeout <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(self._queue.get(), timeout)
                    except TimeoutError:
                        break
                jobs.append(job)
                budget += job.tokens
            self._queued_texts -= sum(len(job.texts) for job in jobs)
            # callers that gave up (past their deadline, disconnected) are not embedded:
            # under overload that work would only make the next callers late too
            jobs = [job for job in jobs if not job.future.done()]
            for side in dict.fromkeys(job.side for job in jobs):
                await self._embed([job for job in jobs if job.side == side], side)

    async def _embed(self, jobs: list[_Job], side: str) -> None:
        texts = [t for job in jobs for t in job.texts]
        try:
            vectors = await asyncio.to_thread(self.encoder.encode, texts, side)
        except Exception as err:  # handed to every waiting caller
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(err)
            return
        self.stats.batches += 1
        self.stats.texts += len(texts)
        start = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_result(vectors[start : start + len(job.texts)])
            start += len(job.texts)
