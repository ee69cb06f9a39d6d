"""Training throughput on one process vs two torchrun "nodes" on loopback, same global batch.

    python benchmarks/train_nodes.py [--batch 128] [--chunk 32] [--steps 8] [--max-length 64]

Trains all-MiniLM-L6-v2 with `cpt train` on (docstring, code) pairs mined from the Python
standard library: once as one process with every core, once as two torchrun launchers
(`--nnodes 2 --nproc-per-node 1 --rdzv-backend c10d`, gloo) each with half the cores. Both
see the same global batches (the losses differ only by dropout, which draws per process;
tests/train/test_torchrun.py checks equality without dropout); the table gives pairs/s over
the steps after the first (model loading and rendezvous excluded) and the wall time of the
whole command. On one 2-core machine this measures the cost of the distributed step
(all-gather of embeddings, all-reduce of gradients), not a speed-up from more hardware.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train import mine_pairs  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _step_rate(output: Path, batch: int) -> tuple[float, list[float]]:
    """Pairs/s over steps 2..N from the cumulative rate the training log keeps, and the
    losses."""
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]
    seconds = [r["step"] * batch / r["pairs_per_s"] for r in rows]
    per_step = [b - a for a, b in zip(seconds, seconds[1:], strict=False)]
    return batch / statistics.median(per_step), [r["loss"] for r in rows]


def run_training(work: Path, pairs: Path, args: argparse.Namespace, nodes: int) -> dict:
    output = work / f"nodes{nodes}"
    flags = ["--model", "default", "--data", str(pairs), "--output", str(output)]
    flags += ["--batch-size", str(args.batch), "--chunk-size", str(args.chunk)]
    flags += ["--max-steps", str(args.steps), "--max-length", str(args.max_length)]
    flags += ["--lr", "2e-5", "--warmup", "0", "--log-every", "1", "--save-every", "1000"]
    flags += ["--device", "cpu", "--shuffle-buffer", "1"]
    cores = os.cpu_count() or 1
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // nodes))}
    if nodes == 1:
        commands = [[sys.executable, "-m", "cpt_embed.cli", "train", *flags]]
    else:
        launcher = [str(Path(sys.executable).with_name("torchrun")), "--nnodes", str(nodes)]
        launcher += ["--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-id", "bench"]
        launcher += ["--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--max-restarts", "0"]
        commands = [[*launcher, "-m", "cpt_embed.cli", "train", *flags]] * nodes
    started = time.perf_counter()
    processes = [
        subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for c in commands
    ]
    for process in processes:
        out = process.communicate()[0].decode(errors="replace")
        if process.returncode:
            raise SystemExit(f"training with {nodes} node(s) failed:\n{out[-2000:]}")
    wall = time.perf_counter() - started
    rate, losses = _step_rate(output, args.batch)
    return {"nodes": nodes, "pairs_per_s": rate, "wall_s": wall, "losses": losses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pairs = mine_pairs(work / "mined", args.batch * args.steps)
        pairs_file = work / "pairs.jsonl"
        pairs_file.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
        rows = [run_training(work, pairs_file, args, nodes) for nodes in (1, 2)]
    gap = max(abs(a - b) for a, b in zip(rows[0]["losses"], rows[1]["losses"], strict=True))
    print(f"batch {args.batch}, chunk {args.chunk}, {args.steps} steps, {args.max_length} tokens")
    print("| processes | pairs/s (steps 2..N) | wall s (whole command) | ratio to 1 |")
    print("|---|---:|---:|---:|")
    for row in rows:
        ratio = row["pairs_per_s"] / rows[0]["pairs_per_s"]
        print(f"| {row['nodes']} | {row['pairs_per_s']:.1f} | {row['wall_s']:.1f} | {ratio:.2f} |")
    print(f"largest loss difference between the two runs (dropout): {gap:.3f}")


if __name__ == "__main__":
    main()
