"""Ragged rows against padded batches in `Encoder.encode` on CPU (all-MiniLM-L6-v2, bf16).

    python benchmarks/ragged.py [--repeats 5]

Prints a Markdown table of texts/s with the default policy (a batch runs as one ragged row
where its sequences are long enough to attend one at a time, attention.EACH_FROM_TOKENS, or
padding would be >= RAGGED_FROM_PADDING of its tokens) and with every batch padded,
both in one process, interleaved, median of `--repeats`: unsorted calls of 64 STS-B
sentences (what a server's micro-batches look like), 1,600 sentences in one call, 400
SciFact abstracts and 400 CoSQA functions.
"""

from __future__ import annotations

import argparse
import statistics
import time

from encode import KINDS

import cpt_embed.model.runtime.attention as attention
import cpt_embed.model.runtime.batching as batching
from cpt_embed import Encoder

NEVER = 2.0  # a padding share no batch reaches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    encoder = Encoder.load("default")
    encoder.encode(["warm up"])
    cases = [
        ("short, 64 unsorted per call", KINDS["short"]()[:1600], 64),
        ("short, 1,600 in one call", KINDS["short"]()[:1600], None),
        ("medium, 400", KINDS["medium"]()[:400], None),
        ("code, 400", KINDS["code"]()[:400], None),
    ]
    policy, each = batching.RAGGED_FROM_PADDING, attention.EACH_FROM_TOKENS
    print(f"| texts | ragged (long, or padding >= {policy:.0%}) | always padded | ratio |")
    print("|---|---:|---:|---:|")
    for name, texts, per_call in cases:
        rates: dict[float, list[float]] = {policy: [], NEVER: []}
        for _ in range(args.repeats):
            for share in rates:
                batching.RAGGED_FROM_PADDING = share
                attention.EACH_FROM_TOKENS = each if share == policy else 1 << 30
                started = time.perf_counter()
                for start in range(0, len(texts), per_call or len(texts)):
                    encoder.encode(texts[start : start + (per_call or len(texts))])
                rates[share].append(len(texts) / (time.perf_counter() - started))
        ours, padded = (statistics.median(rates[share]) for share in (policy, NEVER))
        print(f"| {name} | {ours:,.0f} | {padded:,.0f} | {ours / padded:.2f}x |", flush=True)
    batching.RAGGED_FROM_PADDING = policy
    attention.EACH_FROM_TOKENS = each


if __name__ == "__main__":
    main()
