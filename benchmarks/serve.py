"""Load test of `cpt serve` on loopback: requests/s and latency at several concurrency
levels, against offline `Encoder.encode` throughput on the same texts in the same run.

    python benchmarks/serve.py [--clients 1 8 64] [--requests 25] [--repeats 3]

Starts `cpt serve` in a subprocess on 127.0.0.1 and sends POST /v1/embeddings (one STS-B
sentence each, float format) from 1, 8 and 64 concurrent aiohttp clients in this process,
`--requests` per client, on the same cores as the server. Reports the median over the
repeats of requests/s, p50 and p99 latency, the server's CPU time per request, and served
texts/s as a fraction of offline texts/s (one `encode` call on the same number of
sentences, median of the same repeats, measured before the server starts).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import httpx
from encode import stsb_sentences

COMMAND = ".venv/bin/python benchmarks/serve.py"


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(url: str, texts: list[str], clients: int, requests: int) -> tuple[float, list]:
    """Seconds for `requests` POSTs from `clients` concurrent clients, and their latencies."""
    latencies: list[float] = []
    counter = iter(range(requests))

    async def client(session: aiohttp.ClientSession) -> None:
        for i in counter:
            started = time.perf_counter()
            body = {"model": "default", "input": [texts[i % len(texts)]]}
            async with session.post(url, json=body) as response:
                response.raise_for_status()
                await response.read()
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        seconds = time.perf_counter() - started
    return seconds, sorted(latencies)


def offline_rate(texts: list[str], n: int, repeats: int) -> float:
    """Texts/s of one `Encoder.encode` call on `n` sentences, median of `repeats`."""
    from cpt_embed import Encoder

    encoder = Encoder.load("default")
    sample = [texts[i % len(texts)] for i in range(n)]
    encoder.encode(sample[:256])
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        encoder.encode(sample)
        times.append(time.perf_counter() - started)
    return n / statistics.median(times)


def run(
    quick: bool = False,
    clients: tuple[int, ...] = (1, 8, 64),
    requests: int = 25,
    repeats: int = 3,
) -> dict:
    """Served vs offline throughput; the dict `benchmarks/run.py` writes to docs."""
    if quick:
        clients, requests, repeats = (1, 8), 5, 1
    texts = stsb_sentences()
    rows = []
    offline = offline_rate(texts, requests * max(clients), repeats)
    port = free_port()
    server = start_server(port)
    url = f"http://127.0.0.1:{port}/v1/embeddings"
    try:
        asyncio.run(load(url, texts, 8, 64))  # warm-up
        for level in clients:
            runs = []
            for _ in range(repeats):
                cpu = cpu_seconds(server.pid)
                seconds, latencies = asyncio.run(load(url, texts, level, requests * level))
                cpu = cpu_seconds(server.pid) - cpu
                n = len(latencies)
                runs.append(
                    {
                        "clients": level,
                        "requests": n,
                        "requests_per_s": n / seconds,
                        "p50_ms": 1000 * statistics.median(latencies),
                        "p99_ms": 1000 * latencies[min(n - 1, int(0.99 * n))],
                        "server_cpu_ms_per_request": 1000 * cpu / n,
                    }
                )
            middle = sorted(runs, key=lambda r: r["requests_per_s"])[len(runs) // 2]
            rows.append({**middle, "served_over_offline": middle["requests_per_s"] / offline})
    finally:
        server.terminate()
        server.wait(10)
    lines = [
        f"Offline `Encoder.encode`: {offline:,.0f} texts/s. One sentence per request; "
        f"{requests} requests per client per repeat, median of {repeats} repeats.",
        "",
        "| clients | requests/s | p50 ms | p99 ms | server CPU ms / request | served / offline |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['clients']} | {row['requests_per_s']:,.0f} | {row['p50_ms']:.1f} "
            f"| {row['p99_ms']:.1f} | {row['server_cpu_ms_per_request']:.2f} "
            f"| {row['served_over_offline']:.2f} |"
        )
    return {
        "name": "serve",
        "title": "Serving: `cpt serve` under load vs offline encode",
        "command": COMMAND,
        "markdown": "\n".join(lines),
        "rows": [{"offline_texts_per_s": offline}, *rows],
    }


def plot(result: dict, path: Path) -> None:
    """Requests/s against concurrent clients, with the offline rate as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    offline = result["rows"][0]["offline_texts_per_s"]
    rows = result["rows"][1:]
    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.plot(
        [r["clients"] for r in rows], [r["requests_per_s"] for r in rows], "o-", label="served"
    )
    axis.axhline(offline, color="grey", linestyle="--", label="offline encode")
    axis.axhline(0.8 * offline, color="grey", linestyle=":", label="0.8 x offline (target)")
    axis.set_xscale("log", base=2)
    axis.set_xlabel("concurrent clients")
    axis.set_ylabel("requests/s (one sentence each)")
    axis.set_ylim(bottom=0)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--requests", type=int, default=25, help="requests per client")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    result = run(clients=tuple(args.clients), requests=args.requests, repeats=args.repeats)
    print(result["markdown"])


if __name__ == "__main__":
    main()
