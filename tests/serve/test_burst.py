"""Bursts of the largest requests the default limits admit, at a real `cpt serve`: its
memory stays under 2 GB throughout and comes back to within 25% of its idle level after
(one 7.9 MB input used to take 320 MiB to tokenize, and four of them 5.4 GB, kept)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import aiohttp
import httpx
import pytest
from processes import PeakRss, cpt_serve, rss

MIB = 2**20


def _body(inputs) -> bytes:
    return json.dumps({"model": "default", "input": inputs}).encode()


# kind: (a body just under 8 MiB, or the most work the limits admit; answers allowed)
BODIES = {
    # one input of 7.9 million characters: refused before tokenizing
    "one_huge_input": (_body("word " * 1_580_000), {400, 503}),
    # 2,048 inputs of 3,900 characters: over the characters of a request
    "2048_long_inputs": (_body(["word " * 780] * 2048), {400, 503}),
    # 2.4 million characters, counted until 300,000 tokens
    "counted_to_the_limit": (_body(["word " * 234] * 2048), {400, 503}),
    # 1.2 million token ids in 7.4 MB
    "token_ids": (_body([[1000 + i for i in range(600)]] * 2048), {400, 503}),
    # 2,048 inputs, 286,720 tokens: embedded, or past the deadline on a slow machine
    "embedded": (_body([f"word {i} " + "word " * 138 for i in range(2048)]), {200, 503}),
}
# Bursts one after the other: eight copies of each kind (8 bodies of 8 MiB are what the
# server holds at once), all kinds together, then two of the most work.
BURSTS = [{kind: 8} for kind in list(BODIES)[:4]] + [
    {kind: 2 for kind in list(BODIES)[:4]},
    {"embedded": 2},
]


async def _burst(url: str, copies: dict[str, int]) -> Counter:
    outcomes: Counter = Counter()
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(kind: str) -> None:
            headers = {"Content-Type": "application/json"}
            url_ = f"{url}/v1/embeddings"
            async with session.post(url_, data=BODIES[kind][0], headers=headers) as response:
                await response.read()
                outcomes[(kind, response.status)] += 1

        await asyncio.gather(*(one(kind) for kind, n in copies.items() for _ in range(n)))
    return outcomes


def _settle(pid: int, url: str, target: int, seconds: float = 60) -> int:
    """RSS once the queue is empty and memory is at most `target`, or after `seconds`."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        queued = httpx.get(f"{url}/health", timeout=10).json()["queued_texts"]
        now = rss(pid)
        if not queued and now <= target:
            return now
        time.sleep(1)
    return rss(pid)


@pytest.mark.slow
def test_bursts_of_the_largest_requests_keep_memory_bounded_and_give_it_back():
    with cpt_serve() as (pid, url):
        for i in range(10):  # warm: weights cast, kernels made, pools filled
            body = {"model": "default", "input": [f"warm up {i} " * 30] * 32}
            assert httpx.post(f"{url}/v1/embeddings", json=body, timeout=120).status_code == 200
        time.sleep(2)
        idle = rss(pid)
        sampler = PeakRss(pid)
        sampler.start()
        began = time.perf_counter()
        outcomes = Counter()
        for copies in BURSTS:
            outcomes += asyncio.run(_burst(url, copies))
        ended = time.perf_counter()
        peak = sampler.peak_between(began, ended)
        after = _settle(pid, url, target=int(idle * 1.25))
        sampler.stop()
        summary = {
            "idle_mib": idle // MIB,
            "peak_mib": max(peak, sampler.peak_between(ended, time.perf_counter())) // MIB,
            "after_mib": after // MIB,
            "burst_seconds": round(ended - began, 1),
            "outcomes": {f"{kind} {status}": n for (kind, status), n in sorted(outcomes.items())},
        }
        print("\nburst:", json.dumps(summary))
        wrong = {k: n for (k, status), n in outcomes.items() if status not in BODIES[k][1]}
        assert not wrong, summary
        assert summary["peak_mib"] < 2000, summary
        assert after <= idle * 1.25, summary
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
