"""A load generator that mixes real embedding requests with malformed, oversized, stalled
and unauthorised ones, for the abuse tests of `cpt serve`."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
import numpy as np

WORDS = [
    "the",
    "a",
    "search",
    "code",
    "embedding",
    "model",
    "json",
    "file",
    "parse",
    "read",
    "write",
    "cat",
    "sat",
    "mat",
]


@dataclass
class Load:
    """What the clients saw: counts by (kind, status) and latencies of the valid requests."""

    seconds: float = 0.0
    outcomes: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        ok = np.array(self.latencies) * 1000 if self.latencies else np.zeros(1)
        return {
            "seconds": round(self.seconds, 1),
            "requests": sum(self.outcomes.values()),
            "requests_per_s": round(sum(self.outcomes.values()) / self.seconds, 1),
            "valid_answered_per_s": round(len(self.latencies) / self.seconds, 1),
            "valid_p50_ms": round(float(np.percentile(ok, 50)), 1),
            "valid_p99_ms": round(float(np.percentile(ok, 99)), 1),
            "outcomes": {
                f"{kind} {status}": n for (kind, status), n in sorted(self.outcomes.items())
            },
        }


# kind: (weight, statuses that are a correct answer to it)
KINDS = {
    "valid": (60, {200, 503}),
    "bad_json": (5, {400}),
    "wrong_schema": (5, {400}),
    "too_many_inputs": (3, {400}),
    "too_many_tokens": (3, {400}),
    "bad_token_ids": (3, {400}),
    "wrong_model": (3, {404}),
    "bad_key": (5, {401}),
    "unknown_path": (3, {404}),
    "oversized_body": (2, {413}),
    "stalled_body": (1, {503}),
}


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30)))


async def _stalled(url: str, key: str, rng: random.Random) -> int:
    """Announce a body, send a tenth of it and stall: the server's deadline must end it."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(
            f"POST /v1/embeddings HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n".encode()
            + b'{"model": "default", "input": "'
        )
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 120)
        return int(line.split()[1])
    finally:
        writer.close()


async def _one(session: aiohttp.ClientSession, url: str, key: str, kind: str, rng) -> int:
    auth = {"Authorization": f"Bearer {key}"}
    embeddings = f"{url}/v1/embeddings"
    body: dict | None = None
    data: bytes | None = None
    if kind == "valid":
        body = {"model": "default", "input": [_sentence(rng) for _ in range(rng.randint(1, 8))]}
    elif kind == "bad_json":
        data = b'{"model": "default", "input": ["unterminated'
    elif kind == "wrong_schema":
        body = {"model": "default", "input": {"nested": [[["x"]]]}}
    elif kind == "too_many_inputs":
        body = {"model": "default", "input": ["x"] * 2049}
    elif kind == "too_many_tokens":
        body = {"model": "default", "input": "word " * 9000}
    elif kind == "bad_token_ids":
        body = {"model": "default", "input": [[10**9, -1]]}
    elif kind == "wrong_model":
        body = {"model": "gpt-4", "input": "x"}
    elif kind == "bad_key":
        auth = {"Authorization": "Bearer " + "k" * rng.randint(0, 40)}
        body = {"model": "default", "input": "x"}
    elif kind == "unknown_path":
        async with session.get(f"{url}/v1/{'x' * rng.randint(1, 200)}", headers=auth) as r:
            await r.read()
            return r.status
    elif kind == "oversized_body":
        data = json.dumps({"model": "default", "input": "y" * (9 * 1024 * 1024)}).encode()
    elif kind == "stalled_body":
        return await _stalled(url, key, rng)
    if body is not None:
        data = json.dumps(body).encode()
    headers = {**auth, "Content-Type": "application/json"}
    async with session.post(embeddings, data=data, headers=headers) as response:
        await response.read()
        return response.status


async def hammer(url: str, key: str, *, seconds: float, clients: int, seed: int = 0) -> Load:
    """`clients` concurrent loops sending a weighted mix of KINDS to `url` for `seconds`."""
    load = Load()
    names, weights = list(KINDS), [weight for weight, _ in KINDS.values()]
    stop = time.perf_counter() + seconds

    async def client(number: int, session: aiohttp.ClientSession) -> None:
        rng = random.Random(seed * 1000 + number)
        while time.perf_counter() < stop:
            kind = rng.choices(names, weights)[0]
            started = time.perf_counter()
            try:
                status = await _one(session, url, key, kind, rng)
            except (aiohttp.ClientError, ConnectionError, asyncio.IncompleteReadError) as err:
                status = type(err).__name__
            load.outcomes[(kind, status)] += 1
            if kind == "valid" and status == 200:
                load.latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(i, session) for i in range(clients)))
    load.seconds = time.perf_counter() - started
    return load


def wrong_answers(load: Load) -> dict[str, int]:
    """Outcomes that are not a correct answer to their kind of request."""
    return {
        f"{kind} {status}": n
        for (kind, status), n in load.outcomes.items()
        if status not in KINDS[kind][1]
    }
