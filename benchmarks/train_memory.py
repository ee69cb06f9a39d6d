"""Peak memory and throughput of `cpt train` at growing batch sizes with one chunk size.

    python benchmarks/train_memory.py PAIRS [--batches 256 4096] [--chunk-size 64]
        [--steps 2] [--max-length 64]

Each batch size runs in its own process (peak RSS is per process), from all-MiniLM-L6-v2.
Gradient caching should keep the peak nearly flat as the batch grows, at a cost per pair
that stays close to constant.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = """
import json, resource, sys, time
from cpt_embed.train.config import TrainConfig
from cpt_embed.train.loop import Trainer
config = TrainConfig(**json.loads(sys.argv[1]))
trainer = Trainer(config)
from cpt_embed.train.data import batches, pair_stream
stream = batches(pair_stream(trainer.sources, config.seed, config.shuffle_buffer),
                 config.batch_size)
first = next(stream)
trainer.train_step(first)  # warm-up step, not timed
start = time.perf_counter()
for _ in range(config.max_steps):
    trainer.train_step(next(stream))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs")
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 4096])
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()
    print(
        f"all-MiniLM-L6-v2, chunk {args.chunk_size}, max_length {args.max_length}, "
        f"{args.steps} timed steps after one warm-up step, fp32, {args.pairs}"
    )
    print("| batch | peak RSS MiB | pairs/s | s/step |")
    print("|---|---|---|---|")
    for batch in args.batches:
        with tempfile.TemporaryDirectory() as out:
            config = {
                "model": "default",
                "data": [args.pairs],
                "output": out,
                "batch_size": batch,
                "chunk_size": args.chunk_size,
                "max_steps": args.steps,
                "max_length": args.max_length,
                "shuffle_buffer": 2 * batch,
            }
            done = subprocess.run(
                [sys.executable, "-c", CHILD, json.dumps(config)],
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(done.stdout.strip().splitlines()[-1])
        pairs_per_s = batch * args.steps / result["seconds"]
        print(
            f"| {batch} | {result['peak_rss_mb']:,.0f} | {pairs_per_s:,.1f} | "
            f"{result['seconds'] / args.steps:,.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
