"""Query latency of dense, hybrid and lexical search over 100k and 1M chunks (issue 28).

    .venv/bin/python benchmarks/hybrid.py [--sizes 100000 1000000] [--queries 50]
                                          [--precisions float32 int8 binary]
                                          [--threads 1] [--json PATH]

The index folders are synthetic and written by the search stage's own functions: random
unit vectors (384-d) in vectors.npy and an exact FAISS index of them (`faiss_index`, flat
float32; or int8 or sign bits: `--precisions`, in folders that share every other file with
the float32 one through hard links), and short texts of code-like identifiers and words
drawn from a Zipf vocabulary as the chunks' text in meta.sqlite and in the lexical index
(`write_lexical`: BM25, identifiers split). They are made once and kept under
cache_root()/bench. A query is a random unit vector (the embedding is not timed) and 2-5
words drawn from the same Zipf distribution; each is searched for k = 10 hits by
`Searcher.search_vector` in every mode, the modes taking turns query by query, so that a
busy moment of the machine falls on all of them alike (lexical search does not depend on
the precision: float32's folder alone). One thread for FAISS and numpy, as `cpt search`.
Reported: median and p90 milliseconds per query, and each against dense search of the same
precision and of float32.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import time
from pathlib import Path

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

from cpt_embed.atomic import atomic_dir, atomic_file
from cpt_embed.model.fingerprint import model_fingerprint
from cpt_embed.paths import cache_root
from cpt_embed.search.chunks import Chunk
from cpt_embed.search.index import PRECISIONS, faiss_index, write_faiss_index
from cpt_embed.search.lexical import LEXICAL, write_lexical
from cpt_embed.search.query import MODES, Searcher
from cpt_embed.search.store import (
    FAISS_INDEX,
    METADATA,
    VECTORS,
    new_metadata,
    write_chunks,
    write_manifest,
)

DIM = 384
K = 10
SIZES = (100_000, 1_000_000)
WORDS = (  # a vocabulary of code, and made-up words besides
    "get set add remove update create delete find load save read write parse format open "
    "close start stop init reset build run send receive handle process check validate "
    "convert encode decode render fetch query insert select merge split join sort filter "
    "map reduce user name id value key item list dict array string number count size index "
    "file path dir line text word token node tree graph edge cache buffer stream socket "
    "request response client server session config option setting error exception log "
    "event message queue task job worker thread lock timer date time json xml html http "
    "url header body table row column field record schema model view controller service"
)
IDENTIFIERS = 20_000
ZIPF = 1.1
TEXT_WORDS = (5, 30)
QUERY_WORDS = (2, 5)
JSON = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "hybrid.json"
VERSION = 1  # of the synthetic folders: bump when their recipe changes


def vocabulary(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The words and compound identifiers (camelCase, snake_case), and their Zipf weights
    in a random order of rank."""
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    made = ["".join(rng.choice(syllables, rng.integers(2, 4))) for _ in range(3000)]
    words = list(dict.fromkeys(WORDS.split() + made))
    identifiers = []
    for _ in range(IDENTIFIERS):
        parts = rng.choice(words, rng.integers(2, 4))
        if rng.random() < 0.5:
            identifiers.append(parts[0] + "".join(p.capitalize() for p in parts[1:]))
        else:
            identifiers.append("_".join(parts))
    terms = np.asarray(list(dict.fromkeys(words + identifiers)))
    rng.shuffle(terms)
    weights = 1.0 / np.arange(1, len(terms) + 1) ** ZIPF
    return terms, weights / weights.sum()


def texts(n: int, terms: np.ndarray, weights: np.ndarray, rng, lengths=TEXT_WORDS) -> list[str]:
    """n texts of `lengths` Zipf-drawn terms each, drawn 100,000 at a time."""
    made: list[str] = []
    for start in range(0, n, 100_000):
        sizes = rng.integers(lengths[0], lengths[1] + 1, min(100_000, n - start))
        drawn = terms[rng.choice(len(terms), sizes.sum(), p=weights)].tolist()
        ends = np.cumsum(sizes).tolist()
        made += [" ".join(drawn[a:b]) for a, b in zip([0, *ends[:-1]], ends, strict=True)]
    return made


def unit_rows(n: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.standard_normal((n, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def index_folder(n: int, fingerprint: str, precision: str = "float32") -> Path:
    """The synthetic index of n chunks at `precision`, made once (about 2 minutes at 1M on 2
    cores; the int8 and binary ones link to the float32 one's files)."""
    folder = cache_root() / "bench" / f"hybrid-{n}-{precision}-v{VERSION}"
    if (folder / "manifest.json").is_file():
        return folder
    if precision != "float32":
        base = index_folder(n, fingerprint)
        with atomic_dir(folder) as tmp:
            for name in (VECTORS, METADATA):
                os.link(base / name, tmp / name)
            shutil.copytree(base / LEXICAL, tmp / LEXICAL, copy_function=os.link)
            vectors = np.load(base / VECTORS)
            write_faiss_index(faiss_index(vectors, "flat", precision), tmp / FAISS_INDEX)
            _manifest(tmp, fingerprint, n, precision)
        return folder
    rng = np.random.default_rng(0)
    terms, weights = vocabulary(rng)
    chunk_texts = texts(n, terms, weights, rng)
    vectors = unit_rows(n, rng)
    with atomic_dir(folder) as tmp:
        np.save(tmp / VECTORS, vectors)
        write_faiss_index(faiss_index(vectors, "flat"), tmp / FAISS_INDEX)
        del vectors
        chunks = [
            Chunk(f"gen/m{row // 100}.py", "python", row % 100 + 1, row % 100 + 1, text)
            for row, text in enumerate(chunk_texts)
        ]
        with new_metadata(tmp) as db:
            write_chunks(db, chunks)
        del chunks
        write_lexical(tmp, chunk_texts)
        _manifest(tmp, fingerprint, n, precision)
    return folder


def _manifest(folder: Path, fingerprint: str, n: int, precision: str) -> None:
    write_manifest(
        folder, model="default", model_fingerprint=fingerprint, dim=DIM, kind="flat",
        precision=precision, lexical=True, roots=[], exclude=[], files=n // 100, chunks=n,
    )  # fmt: skip


def measure(searcher: Searcher, queries: int, modes: tuple[str, ...]) -> dict[str, list[float]]:
    """Seconds per query of each of `modes`, taking turns."""
    rng = np.random.default_rng(1)
    terms, weights = vocabulary(np.random.default_rng(0))
    asked = texts(queries, terms, weights, rng, QUERY_WORDS)
    vectors = unit_rows(queries, rng)
    seconds: dict[str, list[float]] = {mode: [] for mode in modes}
    for mode in modes:  # warm-up: the memory maps' pages
        searcher.search_vector(vectors[0], K, text=asked[0], mode=mode)
    for i, (vector, text) in enumerate(zip(vectors, asked, strict=True)):
        turn = i % len(modes)
        for mode in modes[turn:] + modes[:turn]:
            started = time.perf_counter()
            searcher.search_vector(vector, K, text=text, mode=mode)
            seconds[mode].append(time.perf_counter() - started)
    return seconds


def markdown(rows: list[dict]) -> str:
    lines = [
        "| chunks | precision | mode | median ms | p90 ms | vs dense | vs float32 dense |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['chunks']:,} | {r['precision']} | {r['mode']} | {r['median_ms']:.1f} "
            f"| {r['p90_ms']:.1f} | {r['vs_dense']:.2f}x | {r['vs_float32_dense']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def measure_size(n: int, precisions: list[str], queries: int, threads: int, encoder) -> list:
    """The rows of one size: each precision's modes, against dense search."""
    rows, fingerprint = [], model_fingerprint(encoder)
    for precision in precisions:
        started = time.perf_counter()
        searcher = Searcher(index_folder(n, fingerprint, precision), encoder, "default")
        print(f"{n:,} chunks, {precision}: ready in {time.perf_counter() - started:.0f} s")
        modes = MODES if precision == "float32" else ("hybrid", "dense")
        with threadpool_limits(threads):
            seconds = measure(searcher, queries, modes)
        dense = float(np.median(seconds["dense"]))
        float32 = dense if precision == "float32" else rows[0]["median_ms"] / 1000
        for mode in ("dense", "hybrid", "lexical"):
            if mode not in modes:
                continue
            ms = 1000 * np.asarray(seconds[mode])
            median = float(np.median(ms)) / 1000
            rows.append(
                {
                    "chunks": n,
                    "precision": precision,
                    "mode": mode,
                    "queries": len(ms),
                    "median_ms": round(float(np.median(ms)), 2),
                    "p90_ms": round(float(np.percentile(ms, 90)), 2),
                    "vs_dense": round(median / dense, 2),
                    "vs_float32_dense": round(median / float32, 2),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--threads", type=int, default=1, help="FAISS and numpy threads")
    parser.add_argument("--json", type=Path, default=JSON, help="where to write the rows")
    args = parser.parse_args()
    from cpt_embed import Encoder

    encoder = Encoder.load("default")  # only to match the manifest: no query is embedded
    faiss.omp_set_num_threads(args.threads)
    precisions = ["float32", *(p for p in args.precisions if p != "float32")]
    rows = []
    for n in args.sizes:
        rows += measure_size(n, precisions, args.queries, args.threads, encoder)
    table = markdown(rows)
    print(table)
    result = {
        "date": datetime.date.today().isoformat(),
        "threads": args.threads,
        "k": K,
        "markdown": table,
        "rows": rows,
    }
    with atomic_file(args.json, "w") as handle:
        handle.write(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
