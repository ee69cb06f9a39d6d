"""The thread governor (src/cpt_embed/model/runtime/threads.py) against a fixed thread count,
quiet and with one core kept busy by another process, in the same run.

    python benchmarks/threads.py [--kinds short medium] [--threads 2] [--repeats 3]

Encodes the texts of benchmarks/encode.py (all-MiniLM-L6-v2, our defaults) with torch at
--threads: governed (the default) and fixed (the governor told to keep the caller's count,
as before it existed), then the same while a Python busy loop holds a core, and fixed at
one thread under that load for reference. Texts/s, median of --repeats, and each setting
under load as a share of its quiet speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from encode import KINDS, busy_core

from cpt_embed import Encoder
from cpt_embed.model.runtime import threads as governor_module


@contextmanager
def fixed_threads() -> Iterator[None]:
    """The governor keeps the caller's thread count meanwhile (the code before it)."""
    step = governor_module.GOVERNOR.step
    governor_module.GOVERNOR.step = lambda cap: cap
    try:
        yield
    finally:
        governor_module.GOVERNOR.step = step


def speed(encode: Callable[[], object], texts: int, repeats: int) -> float:
    """Texts/s: median of `repeats` timed calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        encode()
        times.append(time.perf_counter() - start)
    return texts / statistics.median(times)


def measure(kinds: list[str], threads: int, repeats: int, limit: int) -> list[dict]:
    """One row per kind: texts/s quiet and contended, governed and fixed."""
    encoder = Encoder.load("default")
    rows = []
    for kind in kinds:
        texts = KINDS[kind]()[:limit]
        encoder.encode(texts[:32])

        def run(governed: bool, count: int = threads, texts: list[str] = texts) -> float:
            torch.set_num_threads(count)
            if governed:
                return speed(lambda: encoder.encode(texts), len(texts), repeats)
            with fixed_threads():
                return speed(lambda: encoder.encode(texts), len(texts), repeats)

        row = {"kind": kind, "texts": len(texts), "quiet_governed": run(True)}
        row["quiet_fixed"] = run(False)
        with busy_core(True):
            time.sleep(0.5)
            row["busy_governed"] = run(True)
            row["busy_fixed"] = run(False)
            row["busy_one_thread"] = run(False, 1)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=["short", "medium"], choices=list(KINDS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=400)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows = measure(args.kinds, args.threads, args.repeats, args.limit)
    print(f"load average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end\n")
    print(
        "| texts | quiet, governed | quiet, fixed | busy core, governed | busy core, fixed "
        "| busy core, 1 thread | governed busy / quiet | fixed busy / quiet |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['kind']} ({r['texts']}) | {r['quiet_governed']:,.0f} | {r['quiet_fixed']:,.0f} "
            f"| {r['busy_governed']:,.0f} | {r['busy_fixed']:,.0f} | {r['busy_one_thread']:,.0f} "
            f"| {r['busy_governed'] / r['quiet_governed']:.2f}x "
            f"| {r['busy_fixed'] / r['quiet_fixed']:.2f}x |"
        )


if __name__ == "__main__":
    main()
