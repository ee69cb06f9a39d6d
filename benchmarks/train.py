"""Training speed and memory of cpt-embed vs sentence-transformers, side by side in one run.

    python benchmarks/train.py [--batch 256] [--chunk 64] [--max-length 64] [--steps 3]
    python benchmarks/train.py --memory [--batches 256 4096] [--lengths 128 256]
    python benchmarks/train.py --gpu --model smollm2 --model qwen.gguf --batch 4096 \\
        --max-length 128 [--pairs pairs.jsonl]
    python benchmarks/train.py --quick          # a smoke run of the CPU table

CPU (the default): all-MiniLM-L6-v2 on (docstring, code) pairs mined from the Python
standard library at run time, the same batch, max length, learning rate (2e-5, no warm-up),
scale 20 and chunk / mini-batch size for both libraries:
- batch B in one chunk: `cpt train`'s step in float32 and bfloat16 (autocast) vs
  `SentenceTransformerTrainer` with MultipleNegativesRankingLoss (MNRL), float32 and bf16;
- batch B in chunks of C (gradient caching): ours vs CachedMNRL(mini_batch_size=C).
The caching cost is ours cached over ours in one chunk, per pair, at the same batch.
--memory: our peak RSS at batches of the given sizes (chunks of C) and max lengths, and
the chunk memory `cpt train` announces before its first step.
--gpu: each model at batch B (gradient caching: ours with the chunk size its GPU's memory
allows, packed rows, bfloat16; CachedMNRL with --st-mini-batch rows, bf16), pairs/s, model
FLOPs utilisation, peak GPU memory, GPU utilisation (nvidia-smi, sampled in the timed steps).

Every configuration runs in its own process, so its peak memory is its own. Our step is
timed from the pairs (token ids from the cache tokenized before timing, as `cpt train`
reads them) to the optimiser update, preparing the batch included; sentence-transformers'
between its on_step_end callbacks, its data loader and collator included (it tokenizes
there). MFU counts the same model FLOPs for both (train/flops.py: 2 N tokens + attention per
forward; 3 forwards a step, 4 with gradient caching) over our count of the batch's tokens.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from train_peer import run_st, sync
from train_report import gpu_markdown, label, markdown, memory_markdown, plot, ratios

LR = 2e-5
SCALE = 20.0
HERE = pathlib.Path(__file__).resolve().parent


@dataclass(frozen=True)
class Setup:
    """One configuration; `chunk` None: the batch in one chunk (ours: chunk_tokens from the
    GPU's memory on CUDA)."""

    library: str  # "cpt-embed" or "sentence-transformers"
    loss: str  # "ours", "mnrl" or "cached-mnrl"
    batch: int
    chunk: int | None
    dtype: str  # "float32" or "bfloat16"
    model: str = "default"
    device: str = "cpu"
    max_length: int = 64
    grad_cache: bool | None = None  # ours: None decides by memory (the default)


def cpu_setups(batch: int, chunk: int, quick: bool) -> list[Setup]:
    """Each of ours next to its peer, so that both see the same load on a shared machine:
    ours as `cpt train` runs by default (chunks of `chunk` texts, kept in one graph while the
    batch's activations fit in memory) against MNRL (the batch in one graph), and ours with
    gradient caching forced against CachedMNRL."""
    ours, st = "cpt-embed", "sentence-transformers"
    chosen = [
        Setup(ours, "ours", batch, chunk, "float32"),
        Setup(st, "mnrl", batch, None, "float32"),
        Setup(ours, "ours", batch, chunk, "float32", grad_cache=True),
        Setup(st, "cached-mnrl", batch, chunk, "float32"),
        Setup(ours, "ours", batch, chunk, "bfloat16"),
        Setup(st, "mnrl", batch, None, "bfloat16"),
    ]
    return [s for s in chosen if s.dtype == "float32"] if quick else chosen


# ---------------------------------------------------------------------------- pairs
def mine_pairs(folder: pathlib.Path, needed: int) -> list[dict[str, str]]:
    """(docstring, code) pairs from the Python standard library, no x or y text twice."""
    from cpt_embed.data.mine import mine_code
    from cpt_embed.data.shards import pair_files, read_shard

    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    mine_code([stdlib], folder, limit=needed, show_progress=False)
    return _distinct(r for path in pair_files(folder) for r in read_shard(path))


def _distinct(records) -> list[dict[str, str]]:
    pairs, xs, ys = [], set(), set()
    for record in records:
        if record["x"] not in xs and record["y"] not in ys:
            xs.add(record["x"])
            ys.add(record["y"])
            pairs.append({"x": record["x"], "y": record["y"]})
    return pairs


def read_pairs(path: pathlib.Path) -> list[dict[str, str]]:
    """Distinct pairs of a pair file or folder (mined before, e.g. on another machine)."""
    from cpt_embed.data.shards import pair_files, read_shard

    return _distinct(r for p in pair_files(path) for r in read_shard(p))


def step_batches(count: int, batch: int, steps: int) -> list[list[int]]:
    """`steps` batches of pair indices taken in turn from `count` pairs, wrapping around."""
    if batch > count:
        raise SystemExit(f"batch {batch} needs more than the {count} pairs available")
    return [[(s * batch + i) % count for i in range(batch)] for s in range(steps)]


# ---------------------------------------------------------------------------- one process
def _child(spec: dict[str, Any]) -> dict[str, Any]:
    """Train `spec["steps"]` steps of one configuration in this process; time each step."""
    import resource

    import torch

    setup = Setup(**spec["setup"])
    with open(spec["pairs"], encoding="utf-8") as handle:
        pairs = [json.loads(line) for line in handle]
    batches = step_batches(len(pairs), setup.batch, spec["steps"])
    if setup.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    if setup.library == "cpt-embed":
        result = _run_ours(setup, batches, spec)
    else:
        result = run_st(setup, [[pairs[i] for i in b] for b in batches], spec, LR, SCALE)
    result |= {
        "threads": torch.get_num_threads(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if setup.device.startswith("cuda"):
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def _trainer(setup: Setup, spec: dict):
    from cpt_embed.train.config import TrainConfig
    from cpt_embed.train.loop import Trainer

    config = TrainConfig(
        model=setup.model,
        data=[spec["pairs"]],
        output=spec["output"],
        batch_size=setup.batch,
        chunk_size=setup.chunk or setup.batch,
        chunk_tokens=None,
        max_steps=spec["steps"],
        max_length=setup.max_length,
        lr=LR,
        warmup=0.0,
        dtype=setup.dtype,
        device=setup.device,
        grad_cache=setup.grad_cache,
    )
    if setup.device.startswith("cuda") and setup.chunk is not None:
        config.chunk_tokens = setup.chunk * setup.max_length
    return Trainer(config)


def _run_ours(setup: Setup, batches: list[list[int]], spec: dict) -> dict[str, Any]:
    """Our steps on the batches (pair i = line i of the pairs file), each prepared from the
    token cache and run, timed together."""
    from cpt_embed.train.batch import from_refs
    from cpt_embed.train.data import PairStore
    from cpt_embed.train.flops import forward_flops

    trainer = _trainer(setup, spec)
    store = PairStore(trainer.sources, trainer.encoder.tokens)  # tokenized here, untimed
    meter, pin = trainer.meter, setup.device.startswith("cuda")
    steps, prepare_s, flops, window, cached = [], [], [], [], []
    for batch in batches:
        started, wall = time.perf_counter(), time.time()
        prepared = from_refs(
            store, [(0, 0, i) for i in batch], trainer.encoder.tokens, trainer.plan, pin=pin
        )
        prepared_at = time.perf_counter()
        trainer.run_step(prepared)
        sync(setup.device)
        steps.append(time.perf_counter() - started)
        prepare_s.append(prepared_at - started)
        cached.append(trainer.caches(prepared))
        passes = 4 if cached[-1] else 3
        flops.append(
            passes * forward_flops(meter.params, meter.layers, meter.width, prepared.lengths)
        )
        window.append((wall, time.time()))
    peak, source = meter.peak()
    return {
        "step_s": steps[1:],
        "prepare_s": prepare_s[1:],
        "flops": flops[1:],
        "peak_flops": peak,
        "peak_source": source,
        "window": [window[1][0], window[-1][1]],
        "plan": trainer.plan_line(),
        "chunks": [len(side.chunks) for side in prepared.sides],
        "cached": sum(cached[1:]) / max(1, len(cached) - 1),
    }


def measure(setup: Setup, pairs_file: pathlib.Path, steps: int) -> dict:
    """Run `setup` in a fresh process (one warm-up step, then `steps` timed), sampling GPU
    utilisation with nvidia-smi meanwhile on CUDA."""
    with tempfile.TemporaryDirectory() as out:
        spec = {
            "setup": asdict(setup),
            "pairs": str(pairs_file),
            "output": out,
            "steps": steps + 1,
            "result": str(pathlib.Path(out) / "result.json"),
        }
        sampler = GpuSampler() if setup.device.startswith("cuda") else None
        done = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            capture_output=True,
            text=True,
        )
        samples = sampler.stop() if sampler else []
        if done.returncode:
            raise RuntimeError(f"{setup} failed:\n{done.stderr[-3000:]}")
        result = json.loads(pathlib.Path(spec["result"]).read_text())
    if samples:
        start, end = result["window"]
        inside = [u for t, u in samples if start <= t <= end] or [u for _, u in samples]
        result["gpu_util"] = statistics.mean(inside)
    return result


class GpuSampler:
    """nvidia-smi's GPU utilisation every 200 ms in a background process: (time, percent)."""

    def __init__(self) -> None:
        handle, name = tempfile.mkstemp(suffix=".csv")
        self.path = pathlib.Path(name)
        query = ["--query-gpu=timestamp,utilization.gpu", "--format=csv,noheader,nounits"]
        try:
            with open(handle, "w") as out:  # the child keeps its own copy of the descriptor
                self.process = subprocess.Popen(
                    ["nvidia-smi", *query, "-lms", "200"], stdout=out, stderr=subprocess.DEVNULL
                )
        except FileNotFoundError:
            self.process = None

    def stop(self) -> list[tuple[float, float]]:
        if self.process is None:
            return []
        self.process.terminate()
        self.process.wait(10)
        samples = []
        for line in self.path.read_text().splitlines():
            stamp, _, util = line.rpartition(",")
            try:
                when = time.mktime(time.strptime(stamp.strip().split(".")[0], "%Y/%m/%d %H:%M:%S"))
                samples.append((when, float(util)))
            except ValueError:
                continue
        return samples


# ---------------------------------------------------------------------------- the runs
def _row(setup: Setup, result: dict, seconds: float) -> dict[str, Any]:
    step = statistics.median(result["step_s"])
    row = {
        **asdict(setup),
        "timed_steps": len(result["step_s"]),
        "step_s": step,
        "all_step_s": result["step_s"],
        "pairs_per_s": setup.batch / step,
        "ms_per_pair": 1000 * step / setup.batch,
        "peak_rss_mb": result["peak_rss_mb"],
        "peak_gpu_mb": result.get("peak_gpu_mb"),
        "gpu_util": result.get("gpu_util"),
        "threads": result["threads"],
        "process_s": seconds,
    }
    if result.get("flops"):
        row["tflops"] = statistics.median(result["flops"]) / step / 1e12
    if "prepare_s" in result:
        row["cached_share"] = result["cached"]
        row["prepare_share"] = statistics.median(result["prepare_s"]) / step
        row["plan"] = result["plan"]
        row["peak_source"] = result["peak_source"]
        row["peak_tflops"] = result["peak_flops"] / 1e12
    return row


def benchmark(setups: list[Setup], pairs_file: pathlib.Path, steps: int) -> list[dict]:
    """Rows of raw numbers, one per configuration, each measured in its own process."""
    rows = []
    for setup in setups:
        started = time.perf_counter()
        result = measure(setup, pairs_file, steps)
        rows.append(_row(setup, result, time.perf_counter() - started))
        print(
            f"{label(rows[-1])}: {rows[-1]['pairs_per_s']:.1f} pairs/s",
            file=sys.stderr,
            flush=True,
        )
    peaks = {(r["dtype"], r["model"]): r["peak_tflops"] for r in rows if "peak_tflops" in r}
    for row in rows:
        peak = peaks.get((row["dtype"], row["model"]))
        if peak and "tflops" in row:
            row["mfu"] = row["tflops"] / peak
    return rows


def memory_rows(batches: list[int], lengths: list[int], chunk: int, pairs_file, steps: int):
    """Our peak RSS at each batch and max length, chunks of `chunk` texts, gradient caching
    forced (by default a batch that fits a quarter of the free memory runs in one graph)."""
    setups = [
        Setup("cpt-embed", "ours", batch, chunk, "float32", max_length=length, grad_cache=True)
        for length in lengths
        for batch in batches
    ]
    return benchmark(setups, pairs_file, steps)


def command(argv: list[str]) -> str:
    return " ".join([".venv/bin/python benchmarks/train.py", *argv]).strip()


def _pairs_file(
    tmp: pathlib.Path, given: pathlib.Path | None, needed: int
) -> tuple[pathlib.Path, int]:
    pairs = read_pairs(given)[:needed] if given else mine_pairs(tmp / "mined", min(needed, 20000))
    path = tmp / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    return path, len(pairs)


def run(quick: bool = False, **options: Any) -> dict:
    """The CPU table (what `make bench` runs); quick is a small smoke run."""
    batch = options.get("batch") or (8 if quick else 256)
    chunk = options.get("chunk") or (4 if quick else 64)
    steps = options.get("steps") or (1 if quick else 3)
    length = options.get("max_length") or (32 if quick else 64)
    setups = [replace(s, max_length=length) for s in cpu_setups(batch, chunk, quick)]
    with tempfile.TemporaryDirectory() as tmp:
        pairs_file, n_pairs = _pairs_file(pathlib.Path(tmp), None, batch * (steps + 1))
        rows = benchmark(setups, pairs_file, steps)
    found = ratios(rows)
    return {
        "name": "train",
        "title": "Training speed: cpt-embed vs sentence-transformers",
        "command": command(options.get("argv", ["--quick"] if quick else [])),
        "markdown": markdown(rows, found, n_pairs, LR, SCALE),
        "rows": rows,
        "ratios": found,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, help="pairs per step (CPU 256, GPU 4096)")
    parser.add_argument("--chunk", type=int, help="chunk / mini-batch size in texts (64)")
    parser.add_argument("--max-length", type=int, help="tokens per text (CPU 64, GPU 128)")
    parser.add_argument("--steps", type=int, help="timed steps after the warm-up (3)")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--memory", action="store_true", help="peak memory by batch size")
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 4096])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--gpu", action="store_true", help="the GPU table (--model ...)")
    parser.add_argument("--model", action="append", help="--gpu: a start point (repeatable)")
    parser.add_argument("--device", default="cuda", help="--gpu: the device (cpu to test)")
    parser.add_argument("--st-mini-batch", type=int, default=512, help="--gpu: CachedMNRL's")
    parser.add_argument("--pairs", type=pathlib.Path, help="pairs to train on (default: mined)")
    parser.add_argument("--plot", type=pathlib.Path, help="also write a PNG here")
    parser.add_argument("--json", type=pathlib.Path, help="also write the raw result here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        pathlib.Path(spec["result"]).write_text(json.dumps(_child(spec)))
        return
    argv = sys.argv[1:]
    if args.gpu or args.memory:
        result = _special(args, argv)
    else:
        options = {k: getattr(args, k) for k in ("batch", "chunk", "max_length", "steps")}
        result = run(args.quick, **options, argv=argv)
    print(result["markdown"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.plot and not args.memory:
        plot(result, args.plot)


def _special(args: argparse.Namespace, argv: list[str]) -> dict:
    """--gpu or --memory."""
    steps = args.steps or (3 if args.gpu else 1)
    with tempfile.TemporaryDirectory() as tmp:
        if args.memory:
            pairs_file, n_pairs = _pairs_file(pathlib.Path(tmp), args.pairs, max(args.batches) * 2)
            rows = memory_rows(args.batches, args.lengths, args.chunk or 64, pairs_file, steps)
            text = memory_markdown(rows)
        else:
            batch, length = args.batch or 4096, args.max_length or 128
            pairs_file, n_pairs = _pairs_file(pathlib.Path(tmp), args.pairs, batch * (steps + 1))
            setups = [
                setup
                for model in args.model or ["smollm2"]
                for setup in (
                    Setup("cpt-embed", "ours", batch, None, "bfloat16", model, args.device, length),
                    Setup(
                        "sentence-transformers",
                        "cached-mnrl",
                        batch,
                        args.st_mini_batch,
                        "bfloat16",
                        model,
                        args.device,
                        length,
                    ),
                )
            ]
            rows = benchmark(setups, pairs_file, steps)
            text = gpu_markdown(rows, n_pairs)
    return {
        "name": "train-memory" if args.memory else "train-gpu",
        "title": "Training memory by batch size" if args.memory else "Training on a GPU",
        "command": command(argv),
        "markdown": text,
        "rows": rows,
    }


if __name__ == "__main__":
    main()
