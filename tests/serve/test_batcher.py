"""Micro-batching: concurrent callers share forward passes, a full queue refuses at once,
callers that gave up are not embedded, a lone caller does not wait for others, and callers
that come back one by one are not split into straggling batches."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from cpt_embed.serve.batcher import MicroBatcher, QueueFull


def test_concurrent_requests_share_forward_passes_and_a_full_queue_refuses(encoder):
    async def scenario():
        batcher = MicroBatcher(encoder, max_batch_tokens=10_000, max_wait=0.05, max_queue=40)
        await batcher.start()
        try:
            results = await asyncio.gather(
                *(batcher.embed([f"text number {i}"], "query", [6]) for i in range(32))
            )
            stats = (batcher.stats.requests, batcher.stats.batches)
            with pytest.raises(QueueFull):
                await asyncio.gather(
                    *(batcher.embed(["x"] * 30, "query", [3] * 30) for _ in range(2))
                )
        finally:
            await batcher.stop()
        return results, stats

    results, (requests, batches) = asyncio.run(scenario())
    # each caller gets its own row (batch composition may move bf16 results by ~1e-6)
    expected = encoder.encode([f"text number {i}" for i in range(32)])
    np.testing.assert_allclose(np.concatenate(results), expected, atol=1e-3)
    assert requests == 32 and batches <= 4


def test_callers_that_gave_up_are_not_embedded(encoder):
    async def scenario():
        batcher = MicroBatcher(encoder, max_batch_tokens=10_000, max_wait=0.05, max_queue=100)
        await batcher.start()
        try:
            gone = asyncio.ensure_future(batcher.embed(["given up"] * 10, "query", [3] * 10))
            await asyncio.sleep(0)
            gone.cancel()
            kept = await batcher.embed(["still waiting"], "query", [3])
        finally:
            await batcher.stop()
        return kept, batcher.stats

    kept, stats = asyncio.run(scenario())
    assert stats.texts == 1  # the ten texts of the cancelled caller were dropped
    np.testing.assert_allclose(kept, encoder.encode(["still waiting"]), atol=1e-3)


class SlowEncoder:
    """An encoder whose every forward pass takes `seconds` (asleep, on the worker thread)
    and records how many texts it embedded."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.batches: list[int] = []

    def encode(self, texts: list[str], side: str) -> np.ndarray:
        time.sleep(self.seconds)
        self.batches.append(len(texts))
        return np.zeros((len(texts), 4), dtype=np.float32)


def test_a_lone_caller_is_not_held_for_max_wait():
    async def scenario():
        batcher = MicroBatcher(SlowEncoder(0), max_wait=3600)
        await batcher.start()
        try:
            for _ in range(3):  # one request at a time: nobody else to wait for
                await asyncio.wait_for(batcher.embed(["alone"], "query", [2]), 60)
        finally:
            await batcher.stop()

    asyncio.run(scenario())


def test_callers_that_come_back_one_by_one_share_one_forward_pass_per_round():
    # closed-loop clients send again once answered, one after another over a round longer
    # than max_wait (each pause shorter): each round is still one batch, with no stragglers
    # left to wait through the next forward pass
    callers, rounds, pause = 8, 3, 0.02
    encoder = SlowEncoder(0.5)

    async def client(batcher: MicroBatcher, i: int) -> None:
        for _ in range(rounds):
            await batcher.embed([f"client {i}"], "query", [3])
            await asyncio.sleep(i * pause)

    async def scenario():
        batcher = MicroBatcher(encoder, max_wait=5 * pause)
        await batcher.start()
        try:
            await asyncio.gather(*(client(batcher, i) for i in range(callers)))
        finally:
            await batcher.stop()

    asyncio.run(scenario())
    assert encoder.batches == [callers] * rounds
