"""Vector search speed and recall at 100k and 1M rows: our index kinds against numpy and
FAISS IndexFlatIP, in one run.

    python benchmarks/search.py [--sizes 100000 1000000] [--queries 1000] [--single 200]
                                [--passages 8000] [--hnsw-max 100000] [--quick] [--plot PNG]

Rows: all-MiniLM-L6-v2 document-side embeddings (384-d, unit norm) of Wikipedia passages
(the first 48 words of each paragraph after an article's first), each repeated with
Gaussian noise of the passages' own covariance and re-normalised, up to each size (a smaller
size is a prefix of the largest). Queries: query-side embeddings of the first sentences of
the first articles, whose other paragraphs are in the corpus. The embeddings are cached
under cache_root()/bench ($CPT_CACHE, else ~/.cache/cpt-embed).

For each size and method: build seconds, index bytes (the vectors.faiss file; the array for
numpy), queries/s with all queries in one batch and one query at a time (a sample, at most
SINGLE_SECONDS each), and recall@10 against exact float32 search (the numpy result). Ours =
`faiss_index` of each kind, written to vectors.faiss and read back as `Searcher` does, searched
through `nearest` (what `Searcher.search_vector` calls). numpy (OpenBLAS), FAISS (OpenMP)
and torch are set to 2 threads.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import torch
from threadpoolctl import threadpool_limits

from cpt_embed.atomic import atomic_file
from cpt_embed.eval.data import find_data_dir
from cpt_embed.paths import cache_root
from cpt_embed.search.index import KINDS, RERANK, faiss_index, nearest

DATA = find_data_dir()  # $CPT_DATA, else ../shared/data
THREADS = 2
K = 10
PASSAGE_WORDS = 48  # about 64 tokens
MIN_PARAGRAPH_WORDS = 20
QUERY_WORDS = (5, 40)
QUERY_BLOCK = 64  # numpy: queries per matmul (64 x 1M scores = 256 MB)
NOISE_BLOCK = 65_536
SINGLE_SECONDS = 4.0  # one-query timing stops after this long (and at least MIN_SINGLE)
MIN_SINGLE = 20
NUMPY, FAISS_FLAT = "numpy", "FAISS IndexFlatIP"

Search = Callable[[np.ndarray], np.ndarray]  # (m, dim) queries -> (m, K) row ids


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one run measures (the defaults: the documented run)."""

    sizes: tuple[int, ...] = (100_000, 1_000_000)
    queries: int = 1000
    single: int = 200
    passages: int = 8000
    hnsw_max: int = 100_000


QUICK = Settings(sizes=(10_000,), queries=200, single=50, passages=1000, hnsw_max=10_000)


def wikipedia_texts(passages: int, queries: int) -> tuple[list[str], list[str]]:
    """Passages (first words of the paragraphs after each article's first) and queries
    (first sentences of articles), in file order."""
    docs: list[str] = []
    firsts: list[str] = []
    with open(DATA / "unsupervised" / "wikipedia_en" / "docs.jsonl", encoding="utf-8") as handle:
        for line in handle:
            paragraphs = [
                p
                for p in json.loads(line)["text"].split("\n")
                if len(p.split()) >= MIN_PARAGRAPH_WORDS
            ]
            if not paragraphs:
                continue
            first = re.split(r"(?<=[.!?])\s+", paragraphs[0], maxsplit=1)[0]
            if len(firsts) < queries and QUERY_WORDS[0] <= len(first.split()) <= QUERY_WORDS[1]:
                firsts.append(first)
            docs.extend(" ".join(p.split()[:PASSAGE_WORDS]) for p in paragraphs[1:])
            if len(docs) >= passages and len(firsts) >= queries:
                return docs[:passages], firsts
    raise ValueError(
        f"the Wikipedia extract has fewer than {passages} passages or {queries} queries"
    )


def embeddings(passages: int, queries: int) -> tuple[np.ndarray, np.ndarray, float | None]:
    """(passage rows, query rows, seconds spent embedding or None when cached)."""
    docs, firsts = wikipedia_texts(passages, queries)
    key = hashlib.sha256(json.dumps(["default", docs, firsts]).encode()).hexdigest()[:16]
    path = cache_root() / "bench" / f"search-{passages}-{queries}-{key}.npz"
    if path.is_file():
        with np.load(path) as cached:
            return cached["passages"], cached["queries"], None
    from cpt_embed import Encoder

    started = time.perf_counter()
    encoder = Encoder.load("default", device="cpu")
    base = encoder.encode(docs, side="document")
    asked = encoder.encode(firsts, side="query")
    seconds = time.perf_counter() - started
    with atomic_file(path) as handle:
        np.savez(handle, passages=base, queries=asked)
    return base, asked, seconds


def noisy_rows(base: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """n unit rows: random rows of `base` plus Gaussian noise with the covariance of `base`,
    re-normalised: a copy keeps cosine ~0.7 to its source, and a row's nearest neighbour is
    about as close (~0.6) as a real passage's among the passages."""
    rng = np.random.default_rng(seed)
    values, axes = np.linalg.eigh(np.cov(base, rowvar=False))
    shape = (axes * np.sqrt(values.clip(0))).T.astype(np.float32)
    rows = np.empty((n, base.shape[1]), dtype=np.float32)
    for start in range(0, n, NOISE_BLOCK):
        stop = min(start + NOISE_BLOCK, n)
        block = base[rng.integers(0, len(base), stop - start)]
        block += rng.standard_normal(block.shape, dtype=np.float32) @ shape
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        rows[start:stop] = block
    return rows


def numpy_search(rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Exact top K by matmul + argpartition, QUERY_BLOCK queries at a time."""
    found = np.empty((len(queries), K), dtype=np.int64)
    for start in range(0, len(queries), QUERY_BLOCK):
        scores = queries[start : start + QUERY_BLOCK] @ rows.T
        top = np.argpartition(scores, -K, axis=1)[:, -K:]
        order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1)
        found[start : start + QUERY_BLOCK] = np.take_along_axis(top, order, 1)
    return found


def describe(index: faiss.Index) -> str:
    """The search settings an index file carries."""
    if isinstance(index, faiss.IndexHNSW):
        return f"M {index.hnsw.nb_neighbors(1)}, efSearch {index.hnsw.efSearch}"
    if isinstance(index, faiss.IndexIVF):
        return (
            f"{index.nlist} lists, nprobe {index.nprobe}, PQ {index.pq.M}x{index.pq.nbits} bits, "
            f"top {RERANK * K} re-scored"
        )
    return "exact"


def written(index: faiss.Index, folder: Path) -> tuple[Path, int]:
    """`index` written as vectors.faiss in `folder`: (its path, its bytes)."""
    path = folder / "vectors.faiss"
    faiss.write_index(index, str(path))
    return path, path.stat().st_size


def prepare(method: str, rows: np.ndarray, folder: Path) -> tuple[Search, int, str, float]:
    """(search, index bytes, settings, build seconds) of one method over `rows`; ours is
    searched as `Searcher` gets it: written to vectors.faiss and read back."""
    if method == NUMPY:
        return (lambda q: numpy_search(rows, q)), rows.nbytes, "exact", 0.0
    started = time.perf_counter()
    if method == FAISS_FLAT:
        flat = faiss.IndexFlatIP(rows.shape[1])
        flat.add(rows)
        built = time.perf_counter() - started
        return (lambda q: flat.search(q, K)[1]), written(flat, folder)[1], "exact", built
    made = faiss_index(rows, method.removeprefix("ours "))
    built = time.perf_counter() - started
    path, size = written(made, folder)
    del made
    index = faiss.read_index(str(path))
    return (lambda q: nearest(index, rows, q, K)[1]), size, describe(index), built


def timed(search: Search, queries: np.ndarray, single: int) -> tuple[np.ndarray, float, float, int]:
    """(batch result, batch q/s, one-at-a-time q/s, queries timed one at a time)."""
    started = time.perf_counter()
    found = search(queries)
    batch = len(queries) / (time.perf_counter() - started)
    search(queries[:1])  # warm-up
    done, started = 0, time.perf_counter()
    while done < min(single, len(queries)):
        search(queries[done : done + 1])
        done += 1
        if done >= MIN_SINGLE and time.perf_counter() - started > SINGLE_SECONDS:
            break
    return found, batch, done / (time.perf_counter() - started), done


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) for a, b in zip(found, truth, strict=True)]) / K)


def measure_size(rows: np.ndarray, queries: np.ndarray, settings: Settings) -> list[dict]:
    methods = [NUMPY, FAISS_FLAT] + [
        f"ours {kind}" for kind in KINDS if kind != "hnsw" or len(rows) <= settings.hnsw_max
    ]
    results, truth = [], None
    for method in methods:
        with tempfile.TemporaryDirectory() as folder:
            search, size, setting, built = prepare(method, rows, Path(folder))
        found, batch, one, count = timed(search, queries, settings.single)
        truth = found if truth is None else truth  # numpy comes first: exact
        results.append(
            {
                "rows": len(rows),
                "method": method,
                "setting": setting,
                "build_s": round(built, 2),
                "index_bytes": size,
                "batch_qps": round(batch, 1),
                "single_qps": round(one, 1),
                "single_queries": count,
                "recall_at_10": round(recall(found, truth), 4),
            }
        )
        print(json.dumps(results[-1]), flush=True)
        del search
    for row in results:
        for peer, name in ((NUMPY, "numpy"), (FAISS_FLAT, "faiss_flat")):
            base = next(r for r in results if r["method"] == peer)
            row[f"batch_vs_{name}"] = round(row["batch_qps"] / base["batch_qps"], 2)
            row[f"single_vs_{name}"] = round(row["single_qps"] / base["single_qps"], 2)
    return results


def markdown(rows: list[dict], settings: Settings, embed_s: float | None, dim: int) -> str:
    lines = [
        "| rows | method | setting | build s | index MB | batch q/s | vs numpy | vs FAISS flat "
        "| 1-query q/s | vs numpy | vs FAISS flat | recall@10 |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = [
            f"{r['rows']:,}",
            r["method"],
            r["setting"],
            f"{r['build_s']:.1f}",
            f"{r['index_bytes'] / 2**20:,.0f}",
            f"{r['batch_qps']:,.0f}",
            f"{r['batch_vs_numpy']:.2f}x",
            f"{r['batch_vs_faiss_flat']:.2f}x",
            f"{r['single_qps']:,.0f}",
            f"{r['single_vs_numpy']:.2f}x",
            f"{r['single_vs_faiss_flat']:.2f}x",
            f"{r['recall_at_10']:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    largest = max(r["rows"] for r in rows)
    flat = next(r for r in rows if r["rows"] == largest and r["method"] == "ours flat")
    embedded = "cached" if embed_s is None else f"embedded in {embed_s:.0f} s"
    text = [
        f"Data: {settings.passages:,} all-MiniLM-L6-v2 embeddings ({dim}-d) of Wikipedia "
        f"passages ({embedded}), each repeated with Gaussian noise of their own covariance and "
        f"re-normalised; {settings.queries:,} query-side embeddings of articles' first "
        f"sentences; {THREADS} threads for numpy, FAISS and torch. One-query q/s: up to "
        f"{settings.single} queries, at most {SINGLE_SECONDS:.0f} s per method; recall@10 "
        "against exact float32 search (the numpy result).",
        f"At {largest:,} rows our flat index is FAISS IndexFlatIP itself, so its ratios to it "
        f"({flat['batch_vs_faiss_flat']:.2f}x batch, {flat['single_vs_faiss_flat']:.2f}x one "
        f"query at a time) are this run's timing noise; against numpy it runs at "
        f"{flat['batch_vs_numpy']:.2f}x / {flat['single_vs_numpy']:.2f}x.",
    ]
    for kind in ("hnsw", "ivfpq"):
        measured = [r for r in rows if r["method"] == f"ours {kind}"]
        if not measured:
            continue
        r = measured[-1]
        extra = (
            " (plus the float32 rows it re-scores candidates from: vectors.npy, memory-mapped)"
            if kind == "ivfpq"
            else ""
        )
        text.append(
            f"At {r['rows']:,} rows ours {kind} answers one query at a time "
            f"{r['single_vs_faiss_flat']:.1f}x as fast as FAISS flat at recall@10 "
            f"{r['recall_at_10']:.3f}, from a {r['index_bytes'] / 2**20:,.0f} MB index{extra} "
            f"built in {r['build_s']:.0f} s."
        )
    skipped = [s for s in settings.sizes if s > settings.hnsw_max]
    if skipped:
        text.append(
            f"HNSW is not built above {settings.hnsw_max:,} rows: its build grows faster than "
            f"linearly, so at {skipped[0]:,} rows it alone would take minutes on 2 cores, past "
            "this benchmark's time budget."
        )
    return "\n".join(lines) + "\n\n" + " ".join(text) + "\n"


def command(settings: Settings, quick: bool) -> str:
    parts = [".venv/bin/python benchmarks/search.py"]
    reference = QUICK if quick else Settings()
    if quick:
        parts.append("--quick")
    for field in dataclasses.fields(Settings):
        value = getattr(settings, field.name)
        if value != getattr(reference, field.name):
            shown = " ".join(map(str, value)) if isinstance(value, tuple) else value
            parts.append(f"--{field.name.replace('_', '-')} {shown}")
    return " ".join(parts)


def run(quick: bool = False, settings: Settings | None = None) -> dict:
    """The benchmark as `benchmarks/run.py` wants it: name, title, command, markdown, rows."""
    settings = settings or (QUICK if quick else Settings())
    faiss.omp_set_num_threads(THREADS)
    torch.set_num_threads(THREADS)
    with threadpool_limits(THREADS):
        base, queries, embed_s = embeddings(settings.passages, settings.queries)
        rows = noisy_rows(base, max(settings.sizes))
        results = []
        for size in sorted(settings.sizes):
            results += measure_size(rows[:size], queries, settings)
    return {
        "name": "search",
        "title": "Search: our index kinds vs numpy and FAISS IndexFlatIP",
        "command": command(settings, quick),
        "markdown": markdown(results, settings, embed_s, base.shape[1]),
        "rows": results,
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    sizes = sorted({r["rows"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    markers = "os^Dv"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key, title in (
        (axes[0], "batch_qps", "all queries in one batch"),
        (axes[1], "single_qps", "one query at a time"),
    ):
        for i, method in enumerate(methods):
            for j, size in enumerate(sizes):
                hit = [r for r in rows if r["method"] == method and r["rows"] == size]
                if hit:
                    peer = method in (NUMPY, FAISS_FLAT)
                    ax.scatter(
                        hit[0]["recall_at_10"],
                        hit[0][key],
                        facecolors="none" if peer else f"C{i}",
                        edgecolors=f"C{i}",
                        marker=markers[j % len(markers)],
                        s=110 if peer else 45,
                        label=f"{method}, {size:,} rows",
                    )
        ax.set_yscale("log")
        ax.set_xlabel("recall@10")
        ax.set_ylabel("queries/s (log)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle("Vector search, 384-d, 2 threads")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k rows, 200 queries: a smoke run")
    parser.add_argument("--sizes", type=int, nargs="+")
    parser.add_argument("--queries", type=int)
    parser.add_argument("--single", type=int, help="queries timed one at a time")
    parser.add_argument("--passages", type=int, help="real passages embedded")
    parser.add_argument("--hnsw-max", type=int, help="largest size to build HNSW at")
    parser.add_argument("--plot", type=Path, help="write the PNG here")
    args = parser.parse_args()
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(Settings)
        if getattr(args, f.name) is not None
    }
    if "sizes" in given:
        given["sizes"] = tuple(given["sizes"])
    settings = dataclasses.replace(QUICK if args.quick else Settings(), **given)
    started = time.perf_counter()
    result = run(args.quick, settings)
    print(result["markdown"])
    print(f"({time.perf_counter() - started:.0f} s)")
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
