"""Memory handed back after bursts: the trimmer calls malloc_trim once the server has been
idle for a moment after enough bytes of bodies, and never while a request or the batcher
is at work."""

from __future__ import annotations

import asyncio
import ctypes.util

import pytest

from cpt_embed.serve import memory
from cpt_embed.serve.memory import TRIM_DELAY_SECONDS, Trimmer


@pytest.fixture
def trims(monkeypatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(memory, "_malloc_trim", lambda: calls.append)
    return calls


def test_the_allocator_is_trimmed_once_idle_after_enough_bytes(trims):
    working = [False]

    async def scenario():
        trimmer = Trimmer(after_bytes=1000, working=lambda: working[0])
        trimmer.busy()
        trimmer.read(600)
        trimmer.idle()  # not enough bytes yet
        await asyncio.sleep(TRIM_DELAY_SECONDS + 0.2)
        assert trims == []
        trimmer.busy()
        trimmer.read(600)
        trimmer.idle()
        trimmer.busy()  # another request came: no trim in the middle of it
        await asyncio.sleep(TRIM_DELAY_SECONDS + 0.2)
        assert trims == []
        working[0] = True  # the batcher still embeds a gone caller's piece
        trimmer.idle()
        await asyncio.sleep(TRIM_DELAY_SECONDS + 0.2)
        assert trims == []
        working[0] = False
        await asyncio.sleep(TRIM_DELAY_SECONDS + 0.2)
        assert trims == [0] and trimmer.pending == 0

    asyncio.run(scenario())


@pytest.mark.skipif(ctypes.util.find_library("c") is None, reason="no C library found")
def test_malloc_trim_is_found_on_glibc():
    trim = memory._malloc_trim()
    if trim is not None:  # glibc: it runs and returns 0 or 1
        assert trim(0) in (0, 1)
