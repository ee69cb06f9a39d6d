"""Compact vectors in an exact index (issue 28): float32, int8 and binary (sign bits) FAISS
indexes over the same corpus embeddings, searched with exact re-scoring, on the retrieval
and code sets of the evaluation.

    .venv/bin/python benchmarks/precision.py [--tasks scifact cosqa ...]
                                             [--scale 100000 1000000] [--json PATH]

Model "default" (all-MiniLM-L6-v2); corpus (title + text) on the document side, queries on
the query side, through the evaluation's embedding cache (cpt_embed.eval.cache, bfloat16:
what `cpt eval` caches, so a set embedded before is read, not embedded). Each index is made
by the search stage's own `faiss_index`, written to a file and read back as `Searcher`
reads it, and searched through `nearest` (what `Searcher._dense` calls): int8 and binary
candidates re-scored with the float vectors. Per task and precision: bytes per vector (the
index file / vectors: the codes FAISS holds in memory, plus a header and, for int8, the
trained ranges), recall@10 against exact float search (numpy), nDCG@10 (trec_eval style,
as `cpt eval`) and its ratio to float32's, and one-query latency. Binary is also measured
at other oversampling factors, to show what BINARY_RERANK buys. FAISS and numpy: 1 thread.

The evaluation sets hold at most 6,267 documents. `--scale` measures recall@10 against exact
search at 100k and 1M rows too: benchmarks/search.py's rows (MiniLM embeddings of 8,000
Wikipedia passages, repeated with noise of their own covariance: every row has hundreds of
near-equal neighbours, a hard case for sign bits) and SCALE_QUERIES of its queries.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

from cpt_embed.atomic import atomic_file
from cpt_embed.eval.data import find_data_dir, load_beir
from cpt_embed.eval.metrics import ranking_metrics
from cpt_embed.eval.retrieval import RETRIEVAL_SOURCES
from cpt_embed.search import index as index_module
from cpt_embed.search.index import (
    PRECISIONS,
    faiss_index,
    nearest,
    read_faiss_index,
    write_faiss_index,
)

K = 10
THREADS = 1  # as `cpt search` runs a query (with 2 OpenMP threads on 2 busy cores, an
# int8 or binary query waited 12-24 ms for the second thread, against 0.25 ms on one)
SWEEP = (1, 10, 20, 40)  # binary: candidates per hit re-scored (1: Hamming order alone)
SINGLE = 200  # queries timed one at a time
SCALE_SWEEP = (10, 20, 40, 80)
SCALE_QUERIES = 300
JSON = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "precision.json"


def embeddings(folder: str) -> tuple[np.ndarray, np.ndarray, object, float | None]:
    """(corpus rows, query rows, the BEIR set, seconds spent embedding or None if cached)."""
    from cpt_embed import Encoder
    from cpt_embed.eval.cache import CachedEncoder, default_cache_dir

    data = load_beir(find_data_dir() / folder)
    encoder = CachedEncoder(
        Encoder.load("default"), default_cache_dir(), dtype="bfloat16", show_progress=False
    )
    started = time.perf_counter()
    docs = encoder.encode(data.corpus_texts, "document")
    queries = encoder.encode(data.query_texts, "query")
    seconds = None if encoder.misses == 0 else time.perf_counter() - started
    unit = [
        np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), np.float32)
        for x in (docs, queries)
    ]
    return unit[0], unit[1], data, seconds


@contextlib.contextmanager
def binary_rerank(factor: int) -> Iterator[None]:
    """`nearest` takes `factor` x k candidates from a binary index, for the sweep."""
    kept = index_module.BINARY_RERANK
    index_module.BINARY_RERANK = factor
    try:
        yield
    finally:
        index_module.BINARY_RERANK = kept


def ndcg(data, rows: np.ndarray, scores: np.ndarray) -> float:
    """nDCG@10 (x 100) of a run of corpus rows."""
    run = {
        qid: {data.corpus_ids[i]: float(s) for s, i in zip(row_s, row_i, strict=True) if i >= 0}
        for qid, row_s, row_i in zip(data.query_ids, scores, rows, strict=True)
    }
    return ranking_metrics(run, data.qrels, ("ndcg@10",))["ndcg@10"]


def single_ms(index, docs: np.ndarray, queries: np.ndarray) -> float:
    """Median milliseconds of one query at a time (the first SINGLE queries)."""
    nearest(index, docs, queries[:1], K)  # warm-up
    times = []
    for query in queries[:SINGLE]:
        started = time.perf_counter()
        nearest(index, docs, query[None], K)
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times))


def measure(task: str, folder: str) -> list[dict]:
    """One row per precision (and binary oversampling factor) for one evaluation set."""
    docs, queries, data, embed_s = embeddings(folder)
    exact = np.argsort(-(queries @ docs.T), axis=1, kind="stable")[:, :K]
    rows, base = [], None
    for precision in PRECISIONS:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "vectors.faiss"
            write_faiss_index(faiss_index(docs, "flat", precision), path)
            size = path.stat().st_size
            index = read_faiss_index(path, precision)
        for factor in SWEEP if precision == "binary" else (index_module.rerank_factor(index),):
            with binary_rerank(factor):
                scores, found = nearest(index, docs, queries, K)
                latency = single_ms(index, docs, queries)
            score = ndcg(data, found, scores)
            base = score if base is None else base
            recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(found, exact, strict=True)])
            rows.append(
                {
                    "task": task,
                    "documents": len(docs),
                    "queries": len(queries),
                    "precision": precision,
                    "rerank": factor,
                    "default": precision != "binary" or factor == index_module.BINARY_RERANK,
                    "bytes_per_vector": round(size / len(docs), 1),
                    "recall_at_10": round(float(recall), 4),
                    "ndcg_at_10": round(score, 2),
                    "ndcg_ratio": round(score / base, 4) if base else None,
                    "single_query_ms": round(latency, 3),
                    "embedded_s": None if embed_s is None else round(embed_s, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def measure_scale(sizes: list[int]) -> list[dict]:
    """Recall@10 against exact search of int8 and binary (by oversampling) at each size."""
    from search import Settings, noisy_rows
    from search import embeddings as search_embeddings

    settings = Settings()
    base, asked, _ = search_embeddings(settings.passages, settings.queries)
    queries = np.ascontiguousarray(asked[:SCALE_QUERIES], dtype=np.float32)
    rows = []
    for n in sizes:
        docs = noisy_rows(base, n)
        exact = faiss_index(docs, "flat").search(queries, K)[1]
        for precision in ("int8", "binary"):
            index = faiss_index(docs, "flat", precision)
            factors = SCALE_SWEEP if precision == "binary" else (index_module.INT8_RERANK,)
            for factor in factors:
                with binary_rerank(factor):
                    found = nearest(index, docs, queries, K)[1]
                recall = [len(set(a) & set(b)) / K for a, b in zip(found, exact, strict=True)]
                rows.append(
                    {
                        "rows": n,
                        "precision": precision,
                        "rerank": factor,
                        "recall_at_10": round(float(np.mean(recall)), 4),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    return rows


def scale_markdown(rows: list[dict]) -> str:
    """Recall@10 at scale: a line per size, a column per setting."""
    settings = list(dict.fromkeys((r["precision"], r["rerank"]) for r in rows))
    lines = [
        "| rows | " + " | ".join(f"{p}, {f} x k" for p, f in settings) + " |",
        "|---:|" + "---:|" * len(settings),
    ]
    for n in dict.fromkeys(r["rows"] for r in rows):
        cells = {(r["precision"], r["rerank"]): r["recall_at_10"] for r in rows if r["rows"] == n}
        lines.append(f"| {n:,} | " + " | ".join(f"{cells[s]:.3f}" for s in settings) + " |")
    return "\n".join(lines) + "\n"


def markdown(rows: list[dict]) -> str:
    """The table of the default settings, and the binary sweep."""
    lines = [
        "| task | docs | precision | re-scored | bytes/vector | vs float32 | recall@10 "
        "| nDCG@10 | vs float32 | 1-query ms |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if not r["default"]:
            continue
        float32 = next(x for x in rows if x["task"] == r["task"] and x["precision"] == "float32")
        shrink = float32["bytes_per_vector"] / r["bytes_per_vector"]
        rescored = "-" if r["rerank"] == 1 else f"{r['rerank']} x k"
        lines.append(
            f"| {r['task']} | {r['documents']:,} | {r['precision']} | "
            f"{rescored} | {r['bytes_per_vector']:,.1f} "
            f"| 1/{shrink:.1f} | {r['recall_at_10']:.3f} | {r['ndcg_at_10']:.2f} "
            f"| {r['ndcg_ratio']:.1%} | {r['single_query_ms']:.2f} |"
        )
    sweep = ["", "Binary, by candidates re-scored per hit (recall@10 / nDCG@10 vs float32):", ""]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    sweep.append("| re-scored | " + " | ".join(tasks) + " |")
    sweep.append("|---:|" + "---:|" * len(tasks))
    for factor in SWEEP:
        cells = [
            f"{r['recall_at_10']:.3f} / {r['ndcg_ratio']:.1%}"
            for task in tasks
            for r in rows
            if r["task"] == task and r["precision"] == "binary" and r["rerank"] == factor
        ]
        sweep.append(f"| {factor} x k | " + " | ".join(cells) + " |")
    return "\n".join(lines + sweep) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(RETRIEVAL_SOURCES))
    parser.add_argument(
        "--scale", type=int, nargs="*", default=[100_000, 1_000_000], help="rows; none: skip"
    )
    parser.add_argument("--json", type=Path, default=JSON, help="where to write the rows")
    args = parser.parse_args()
    started = time.perf_counter()
    faiss.omp_set_num_threads(THREADS)
    rows: list[dict] = []
    with threadpool_limits(THREADS):
        for task in args.tasks:
            rows += measure(task, RETRIEVAL_SOURCES[task][0])
        scale = measure_scale(args.scale) if args.scale else []
    table = markdown(rows)
    if scale:
        table += "\nRecall@10 against exact search at scale (benchmarks/search.py's rows):\n\n"
        table += scale_markdown(scale)
    print(table)
    seconds = time.perf_counter() - started
    print(f"({seconds:.0f} s)")
    result = {
        "date": datetime.date.today().isoformat(),
        "model": "default (all-MiniLM-L6-v2)",
        "faiss": faiss.__version__,
        "threads": THREADS,
        "seconds": round(seconds, 1),
        "markdown": table,
        "rows": rows,
        "scale_rows": scale,
    }
    with atomic_file(args.json, "w") as handle:
        handle.write(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
