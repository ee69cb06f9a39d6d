"""Load test of `cpt serve` against infinity-emb (torch engine) on loopback: requests/s and
latency at several concurrency levels, with offline `Encoder.encode` throughput on the same
texts in the same run.

    python benchmarks/serve.py [--clients 1 8 64] [--requests 25] [--repeats 3] [--no-peer]
                               [--peer fp32 bf16 ...]

Starts `cpt serve` and infinity-emb (`infinity_emb v2 --engine torch`, one server per
setting, from a venv of its own created on first use under ~/.cache/cpt-embed/bench/) on
free ports of 127.0.0.1, all serving all-MiniLM-L6-v2 from the same local folder. The same
aiohttp client in this process sends each of them the same POST /v1/embeddings (one STS-B
sentence each, float format) from 1, 8 and 64 concurrent clients, `--requests` per client,
on the same cores as the servers; within each repeat the servers take turns, so that a
change in the machine's load falls on all of them. Reports the median over the repeats of
requests/s, p50 and p99 latency, each server's CPU time per request and the client's, the
load average, and our requests/s over infinity's (its fp32 default and its best setting).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
from encode import stsb_sentences
from peers import bench_venv

COMMAND = ".venv/bin/python benchmarks/serve.py"
OURS = "cpt serve"
INFINITY_VERSION = "0.0.78"
INFINITY_VENV_TORCH = "torch==2.13.0"  # the CPU build; installed first, then pinned
INFINITY_SPEC = f"infinity_emb[server,torch]=={INFINITY_VERSION}"
# infinity's settings, by label: its CPU default (fp32, batches of 32) and bf16 weights
# (this CPU has AVX-512 BF16) in batches of 32, 16 (its best at 8 clients) and 64 (at 64
# clients; 128 ran the same). fp32 in batches of 64 ran below bf16's; torch.compile and
# ONNX are left out: the first is off by default, the second is another engine.
INFINITY_SETTINGS: dict[str, list[str]] = {
    "fp32": ["--dtype", "float32"],
    "bf16": ["--dtype", "bfloat16"],
    "bf16-b16": ["--dtype", "bfloat16", "--batch-size", "16"],
    "bf16-b64": ["--dtype", "bfloat16", "--batch-size", "64"],
}
DEFAULT_PEERS = ("fp32", "bf16", "bf16-b16", "bf16-b64")


@dataclass
class Server:
    """A server under test: its label, process (its CPU time is read from /proc) and URL."""

    label: str
    process: subprocess.Popen
    url: str
    log: Path | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """User + system CPU time of this process (the load generator) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wait_ready(server: Server, health: str, seconds: float = 300) -> Server:
    """`server` once GET `health` answers 200; its log's end if it exits or never does."""
    deadline = time.time() + seconds
    while time.time() < deadline and server.process.poll() is None:
        try:
            if httpx.get(health, timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.3)
    server.process.kill()
    tail = server.log.read_text(errors="replace")[-3000:] if server.log else ""
    raise SystemExit(f"{server.label} did not start within {seconds:.0f} s\n{tail}")


def start_ours(port: int) -> Server:
    cli = [sys.executable, "-m", "cpt_embed.cli", "serve", "--port", str(port)]
    process = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server(OURS, process, f"http://127.0.0.1:{port}/v1/embeddings")
    return wait_ready(server, f"http://127.0.0.1:{port}/health")


def infinity_python() -> Path:
    """The python of the venv for infinity-emb: it pins transformers 4 and
    sentence-transformers 3, which must never enter the project's environment."""
    return bench_venv(
        "infinity-venv",
        INFINITY_VENV_TORCH,
        (INFINITY_SPEC,),
        "infinity-emb (once: about 2 minutes, 1.5 GB)",
    )


def start_infinity(port: int, label: str, model: str, logs: Path) -> Server:
    """infinity-emb's server for setting `label` of INFINITY_SETTINGS, offline, serving the
    model folder `model` as "default" at /v1/embeddings, without its access log (ours has
    none either) and without telemetry."""
    python = infinity_python()
    cli = [
        str(python.parent / "infinity_emb"),
        "v2",
        "--model-id",
        model,
        "--served-model-name",
        "default",
        "--engine",
        "torch",
        "--device",
        "cpu",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--url-prefix",
        "/v1",
        "--log-level",
        "warning",
        *INFINITY_SETTINGS[label],
    ]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        "DO_NOT_TRACK": "1",
    }
    log = logs / f"infinity-{label}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(cli, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = Server(f"infinity {label}", process, f"http://127.0.0.1:{port}/v1/embeddings", log)
    return wait_ready(server, f"http://127.0.0.1:{port}/health")


def infinity_version() -> str:
    """infinity-emb's version and its torch's, as its venv has them."""
    python = infinity_python()
    code = "import importlib.metadata as m; print(m.version('infinity_emb'), m.version('torch'))"
    found = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    infinity, torch = found.stdout.split()
    return f"{infinity} (torch {torch})"


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


def measure(server: Server, texts: list[str], clients: int, requests: int) -> dict:
    """One repeat: `requests` POSTs from `clients` clients to `server`."""
    cpu, own = cpu_seconds(server.process.pid), own_cpu_seconds()
    seconds, latencies = asyncio.run(load(server.url, texts, clients, requests))
    cpu, own = cpu_seconds(server.process.pid) - cpu, own_cpu_seconds() - own
    n = len(latencies)
    return {
        "server": server.label,
        "clients": clients,
        "requests": n,
        "requests_per_s": n / seconds,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(n - 1, int(0.99 * n))],
        "server_cpu_ms_per_request": 1000 * cpu / n,
        "client_cpu_ms_per_request": 1000 * own / n,
        "load_average": os.getloadavg()[0],
    }


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


def median_row(runs: list[dict]) -> dict:
    """The repeat with the median requests/s, its load average the repeats' mean."""
    middle = sorted(runs, key=lambda r: r["requests_per_s"])[len(runs) // 2]
    return {**middle, "load_average": statistics.mean(r["load_average"] for r in runs)}


def start_servers(peers: tuple[str, ...], logs: Path) -> list[Server]:
    """Ours and one infinity-emb server per setting in `peers`, all ready."""
    servers = [start_ours(free_port())]
    if peers:
        from cpt_embed.model.resolve import resolve_model

        model = str(resolve_model("default"))
        servers += [start_infinity(free_port(), label, model, logs) for label in peers]
    return servers


def run(
    quick: bool = False,
    clients: tuple[int, ...] = (1, 8, 64),
    requests: int = 25,
    repeats: int = 3,
    peers: tuple[str, ...] = DEFAULT_PEERS,
) -> dict:
    """Served throughput, ours and infinity-emb's, and offline throughput; the dict
    `benchmarks/run.py` writes to docs. quick=True: 1 and 8 clients, one repeat, no peer."""
    if quick:
        clients, requests, repeats, peers = (1, 8), 5, 1, ()
    texts = stsb_sentences()
    offline = offline_rate(texts, requests * max(clients), repeats)
    version = infinity_version() if peers else ""
    rows = []
    with tempfile.TemporaryDirectory(prefix="cpt-bench-serve-") as logs:
        servers = start_servers(peers, Path(logs))
        try:
            for server in servers:
                asyncio.run(load(server.url, texts, 8, 64))  # warm-up
            for level in clients:
                runs: dict[str, list[dict]] = {server.label: [] for server in servers}
                for _ in range(repeats):
                    for server in servers:
                        runs[server.label].append(measure(server, texts, level, requests * level))
                rows += [median_row(runs[server.label]) for server in servers]
        finally:
            for server in servers:
                server.process.terminate()
            for server in servers:
                server.process.wait(30)
    return {
        "name": "serve",
        "title": "Serving: `cpt serve` vs infinity-emb under load, and offline encode",
        "command": COMMAND,
        "markdown": markdown(rows, offline, requests, repeats, peer_note(version, peers)),
        "rows": [{"offline_texts_per_s": offline, "infinity": version}, *rows],
    }


def peer_note(version: str, peers: tuple[str, ...]) -> str:
    """What the peer was: its version and each setting's flags."""
    if not peers:
        return ""
    flags = ", ".join(f"{label} `{' '.join(INFINITY_SETTINGS[label])}`" for label in peers)
    return f" infinity-emb {version}, `--engine torch --device cpu`; its settings: {flags}."


def markdown(rows: list[dict], offline: float, requests: int, repeats: int, note: str) -> str:
    """The tables: every server at every client count, then ours over infinity's; `note`
    names the peer's version and settings. The load average is the 1-minute one, this
    test's own processes included."""
    lines = [
        f"Offline `Encoder.encode`: {offline:,.0f} texts/s. One sentence per request; "
        f"{requests} requests per client per repeat, median of {repeats} repeats; the servers "
        f"take turns within each repeat.{note}",
        "",
        "| clients | server | requests/s | p50 ms | p99 ms | server CPU ms / request "
        "| client CPU ms / request | load average |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['clients']} | {row['server']} | {row['requests_per_s']:,.0f} "
            f"| {row['p50_ms']:.1f} | {row['p99_ms']:.1f} "
            f"| {row['server_cpu_ms_per_request']:.2f} "
            f"| {row['client_cpu_ms_per_request']:.2f} | {row['load_average']:.1f} |"
        )
    theirs = [r for r in rows if r["server"] != OURS]
    if not theirs:
        return "\n".join(lines)
    lines += [
        "",
        "| clients | ours / infinity fp32 | ours / infinity's best (its setting) "
        "| served / offline |",
        "|---:|---:|---:|---:|",
    ]
    for ours in (r for r in rows if r["server"] == OURS):
        level = [r for r in theirs if r["clients"] == ours["clients"]]
        best = max(level, key=lambda r: r["requests_per_s"])
        fp32 = [r for r in level if r["server"] == "infinity fp32"]
        default = f"{ours['requests_per_s'] / fp32[0]['requests_per_s']:.2f}x" if fp32 else "-"
        lines.append(
            f"| {ours['clients']} | {default} "
            f"| {ours['requests_per_s'] / best['requests_per_s']:.2f}x ({best['server']}) "
            f"| {ours['requests_per_s'] / offline:.2f} |"
        )
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """Requests/s against concurrent clients, one line per server, offline as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    offline = result["rows"][0]["offline_texts_per_s"]
    rows = result["rows"][1:]
    figure, axis = plt.subplots(figsize=(5, 3.5))
    for label in dict.fromkeys(r["server"] for r in rows):
        mine = [r for r in rows if r["server"] == label]
        axis.plot(
            [r["clients"] for r in mine], [r["requests_per_s"] for r in mine], "o-", label=label
        )
    axis.axhline(offline, color="grey", linestyle="--", label="offline encode")
    axis.set_xscale("log", base=2)
    axis.set_xlabel("concurrent clients")
    axis.set_ylabel("requests/s (one sentence each)")
    axis.set_ylim(bottom=0)
    axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--requests", type=int, default=25, help="requests per client")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--peer",
        nargs="+",
        choices=sorted(INFINITY_SETTINGS),
        default=list(DEFAULT_PEERS),
        help="infinity-emb's settings to run (each its own server)",
    )
    parser.add_argument("--no-peer", action="store_true", help="cpt serve alone")
    args = parser.parse_args()
    result = run(
        clients=tuple(args.clients),
        requests=args.requests,
        repeats=args.repeats,
        peers=() if args.no_peer else tuple(args.peer),
    )
    print(result["markdown"])


if __name__ == "__main__":
    main()
