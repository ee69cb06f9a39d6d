"""Load test of `cpt serve` on loopback: requests/s and latency at several concurrency
levels, against offline `Encoder.encode` throughput on the same texts in the same run.

    python benchmarks/serve.py [--clients 1 8 64] [--requests 400] [--texts-per-request 1]

Starts the server in a subprocess on 127.0.0.1, sends `--requests` POST /v1/embeddings per
level from that many concurrent clients (httpx, asyncio), one STS-B sentence per request by
default, and prints a Markdown table: requests/s, texts/s, p50 and p99 latency, and served
texts/s as a fraction of offline texts/s.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

DATA = Path(os.environ.get("CPT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def sentences() -> list[str]:
    with open(DATA / "sts" / "stsb" / "test.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return list(dict.fromkeys(s for r in rows for s in (r["sentence1"], r["sentence2"])))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    cli = [sys.executable, "-m", "cpt_embed.cli", "serve", "--port", str(port)]
    process = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not start within 120 s")


async def load(url: str, texts: list[str], clients: int, requests: int, per: int):
    latencies: list[float] = []
    counter = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        for i in counter:
            batch = [texts[(i * per + j) % len(texts)] for j in range(per)]
            started = time.perf_counter()
            response = await http.post(url, json={"model": "default", "input": batch})
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        seconds = time.perf_counter() - started
    return seconds, sorted(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--texts-per-request", type=int, default=1)
    args = parser.parse_args()
    texts = sentences()

    from cpt_embed import Encoder

    encoder = Encoder.load("default")
    encoder.encode(texts[:256])
    n = args.requests * args.texts_per_request
    sample = [texts[i % len(texts)] for i in range(n)]
    started = time.perf_counter()
    encoder.encode(sample)
    offline = n / (time.perf_counter() - started)
    del encoder

    port = free_port()
    server = start_server(port)
    url = f"http://127.0.0.1:{port}/v1/embeddings"
    try:
        asyncio.run(load(url, texts, 8, 64, args.texts_per_request))  # warm-up
        print(f"offline encode: {offline:,.0f} texts/s ({n} STS-B sentences)")
        print("| clients | requests/s | texts/s | p50 ms | p99 ms | served / offline |")
        print("|---:|---:|---:|---:|---:|---:|")
        for clients in args.clients:
            seconds, latencies = asyncio.run(
                load(url, texts, clients, args.requests, args.texts_per_request)
            )
            rate = args.requests / seconds
            p50 = statistics.median(latencies) * 1000
            p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000
            served = rate * args.texts_per_request
            print(
                f"| {clients} | {rate:,.0f} | {served:,.0f} | {p50:.1f} | {p99:.1f} "
                f"| {served / offline:.2f} |",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
