"""Micro-batching: concurrent callers share forward passes, a full queue refuses at once,
and callers that gave up are not embedded."""

from __future__ import annotations

import asyncio

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
