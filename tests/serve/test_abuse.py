"""`cpt serve` on loopback under concurrent clients that mix valid requests with malformed,
oversized, stalled and unauthorised ones: every request gets a correct answer, nothing
crashes, and the server's memory stays flat."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import httpx
import pytest
from abuse import hammer, wrong_answers
from processes import PeakRss, cpt_serve
from typer.testing import CliRunner

from cpt_embed.cli import app
from cpt_embed.serve.process import OPENMP_WAITING, restart_with_server_env

KEY = "abuse-test-key"


def _serve(timeout: float):
    return cpt_serve("--timeout", str(timeout), "--max-queue", "512", env={"CPT_API_KEY": KEY})


def _abuse(seconds: float, clients: int, timeout: float, warm_up: float) -> dict:
    with _serve(timeout) as (pid, url):
        warm = asyncio.run(hammer(url, KEY, seconds=warm_up, clients=clients, seed=1))
        assert not wrong_answers(warm), warm.summary()
        rss = PeakRss(pid)
        rss.start()
        began = time.perf_counter()
        load = asyncio.run(hammer(url, KEY, seconds=seconds, clients=clients, seed=2))
        ended = time.perf_counter()
        rss.stop()
        third = (ended - began) / 3
        first, last = rss.peak_between(began, began + third), rss.peak_between(ended - third, ended)
        summary = load.summary() | {
            "clients": clients,
            "peak_rss_mib_first_third": round(first / 2**20),
            "peak_rss_mib_last_third": round(last / 2**20),
        }
        print("\nabuse:", json.dumps(summary))
        assert not wrong_answers(load), summary
        # flat: the allocator settles within a few percent, no growth with the requests served
        assert last <= first * 1.25 + 64 * 2**20, summary
        assert load.summary()["valid_answered_per_s"] > 1, summary
        health = httpx.get(f"{url}/health", timeout=10)
        assert health.status_code == 200 and health.json()["queued_texts"] == 0
        return summary


def test_the_server_answers_a_mix_of_good_and_abusive_requests_correctly():
    _abuse(seconds=8, clients=16, timeout=2, warm_up=3)


@pytest.fixture
def no_openmp_waiting(monkeypatch):
    for name in OPENMP_WAITING:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_openmp_waiting")
def test_the_server_restarts_itself_with_short_openmp_spinning():
    with _serve(timeout=2) as (pid, _), open(f"/proc/{pid}/environ", "rb") as handle:
        environ = handle.read().split(b"\0")
    assert b"GOMP_SPINCOUNT=20000" in environ


@pytest.mark.usefixtures("no_openmp_waiting")
@pytest.mark.parametrize("name", ["OMP_WAIT_POLICY", "GOMP_SPINCOUNT"])
def test_the_server_keeps_the_openmp_waiting_a_user_set(monkeypatch, name):
    monkeypatch.setenv(name, "PASSIVE" if name == "OMP_WAIT_POLICY" else "0")
    monkeypatch.setattr(os, "execve", lambda *args: pytest.fail(f"restarted: {args}"))
    restart_with_server_env([sys.executable, "-m", "cpt_embed.cli", "serve", "--port", "1"])


@pytest.mark.usefixtures("no_openmp_waiting")
def test_the_server_restart_is_for_serve_alone(monkeypatch, tiny_bert, tmp_path):
    monkeypatch.setattr(os, "execve", lambda *args: pytest.fail(f"restarted: {args}"))
    texts = tmp_path / "serve.txt"
    texts.write_text("one line\nanother\n")
    args = ["embed", str(texts), "-o", str(tmp_path / "v.npy"), "-m", str(tiny_bert)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_64_clients_for_60_s_of_abuse_leave_the_server_well_and_its_memory_flat():
    _abuse(seconds=60, clients=64, timeout=2, warm_up=10)
