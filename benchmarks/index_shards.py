"""Building an IVF-PQ index from Parquet embedding shards, streamed: recall, time, memory.

    python benchmarks/index_shards.py [--vectors 1000000] [--shards 10] [--queries 1000]
                                      [--batch-rows 65536] [--model default]

Vectors: `--vectors` synthetic embeddings of the model's dimension (384 for the default
all-MiniLM-L6-v2), unit norm, drawn around 2,000 Gaussian cluster centres with a power-law
variance spectrum in a random rotation (as sentence embeddings have: a few strong directions,
a long tail), written as `--shards` Parquet files of (id, embedding) rows the way
`cpt embed -o NAME.parquet` writes them. Queries: fresh draws from the same clusters.

The build (`build_index_from_embeddings`, what `cpt index build --from-embeddings --kind
ivfpq` runs) happens in a fresh child process that loads the model, notes its RSS, resets its
peak RSS and builds: the peak less that baseline is the build's own memory. Recall@10 is
against exact float32 search over all vectors, computed blockwise; approximate results come
from `nearest`, as `Searcher` searches. Printed: build seconds, peak RSS and the build's
own share of it, index files' sizes, and bytes per vector on disk and in RAM.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from cpt_embed.data.vectors import write_vectors
from cpt_embed.search.build import BATCH_ROWS
from cpt_embed.search.index import nearest

CLUSTERS = 2000
K = 10
NOISE = 0.6  # within-cluster spread relative to the spread of the centres
EXACT_BLOCK = 100_000  # rows per block of the exact search (1,000 queries: 400 MB of scores)


class Generator:
    """Draws synthetic embeddings: cluster centres and a shared anisotropic covariance."""

    def __init__(self, dim: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.scale = (np.arange(1, dim + 1) ** -0.5).astype(np.float32)  # power-law spectrum
        self.rotation = np.linalg.qr(rng.normal(size=(dim, dim)))[0].astype(np.float32)
        self.centres = rng.normal(size=(CLUSTERS, dim)).astype(np.float32) * self.scale

    def draw(self, rows: int, seed: int) -> np.ndarray:
        """`rows` unit vectors, each near a random centre."""
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal((rows, len(self.scale)), dtype=np.float32)
        vectors = self.centres[rng.integers(0, CLUSTERS, rows)] + NOISE * noise * self.scale
        vectors = vectors @ self.rotation
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_shards(folder: Path, generator: Generator, rows: int, shards: int) -> list[Path]:
    """`rows` vectors in `shards` Parquet files with ids `v0`, `v1`, ..."""
    paths = []
    for i, part in enumerate(np.array_split(np.arange(rows), shards)):
        ids = [f"v{row}" for row in part]
        paths.append(
            write_vectors(folder / f"part-{i:03d}.parquet", generator.draw(len(part), i), ids)
        )
    return paths


def _memory(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process in bytes. Not ru_maxrss: that survives
    exec, so a spawned child would report its parent's size at fork."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def _build(shards: list[Path], out: Path, model: str, batch_rows: int) -> dict[str, Any]:
    from cpt_embed import Encoder
    from cpt_embed.search.build import build_index_from_embeddings

    encoder = Encoder.load(model)
    model_rss = _memory("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := RSS now (Linux >= 4.0)
    started = time.perf_counter()
    build_index_from_embeddings(
        shards,
        out,
        encoder,
        model_name=model,
        kind="ivfpq",
        batch_rows=batch_rows,
        show_progress=False,
    )
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "model_rss": model_rss, "peak_rss": _memory("VmHWM")}


def _in_child(function, *args) -> dict[str, Any]:
    """`function(*args)` in a fresh process, so that ru_maxrss is that call's alone."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The rows of the k best inner products for each query, by blocks of EXACT_BLOCK."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_rows = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, len(vectors), EXACT_BLOCK):
        block = np.asarray(vectors[start : start + EXACT_BLOCK])
        scores = np.concatenate([best_scores, queries @ block.T], axis=1)
        rows = np.arange(start - k, start + len(block)) * np.ones((len(queries), 1), np.int64)
        rows[:, :k] = best_rows
        keep = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        best_scores = np.take_along_axis(scores, keep, 1)
        best_rows = np.take_along_axis(rows, keep, 1)
    return best_rows


def run(
    vectors: int = 1_000_000,
    shards: int = 10,
    queries: int = 1000,
    batch_rows: int = BATCH_ROWS,
    model: str = "default",
) -> dict[str, Any]:
    """Generate the shards, build the index in a child process and measure it (see module
    docstring); the figures as a dict."""
    import faiss

    from cpt_embed import Encoder

    dim = Encoder.load(model).dim
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        generator = Generator(dim)
        started = time.perf_counter()
        paths = write_shards(folder / "shards", generator, vectors, shards)
        generate_seconds = time.perf_counter() - started
        built = _in_child(_build, paths, folder / "index", model, batch_rows)
        index_dir = folder / "index"
        sizes = {p.name: p.stat().st_size for p in sorted(index_dir.iterdir())}
        stored = np.load(index_dir / "vectors.npy", mmap_mode="r")
        asked = generator.draw(queries, seed=10_000)
        exact = exact_top(stored, asked, K)
        index = faiss.read_index(str(index_dir / "vectors.faiss"))
        started = time.perf_counter()
        _, found = nearest(index, stored, asked, K)
        search_seconds = time.perf_counter() - started
        recall = float(
            np.mean([len(set(a) & set(b)) / K for a, b in zip(exact, found, strict=True)])
        )
        shard_bytes = sum(p.stat().st_size for p in paths)
        del stored, index
    return {
        "vectors": vectors,
        "dim": dim,
        "shards": shards,
        "batch_rows": batch_rows,
        "generate_seconds": generate_seconds,
        "shard_bytes": shard_bytes,
        "build_seconds": built["seconds"],
        "peak_rss": built["peak_rss"],
        "model_rss": built["model_rss"],
        "index_bytes": sizes,
        f"recall@{K}": recall,
        "queries": queries,
        "search_seconds": search_seconds,
    }


def report(result: dict[str, Any]) -> str:
    """The figures of `run` as lines of text, per vector and per million vectors."""
    n, mib = result["vectors"], 2**20
    build_rss = result["peak_rss"] - result["model_rss"]
    sizes = result["index_bytes"]
    disk = sum(sizes.values())
    lines = [
        f"vectors: {n:,} x {result['dim']} float32 in {result['shards']} Parquet shards "
        f"({result['shard_bytes'] / mib:,.0f} MiB, written in {result['generate_seconds']:.0f}s)",
        f"build (ivfpq, batches of {result['batch_rows']:,} rows): {result['build_seconds']:.1f}s",
        f"peak RSS of the build process: {result['peak_rss'] / mib:,.0f} MiB "
        f"(with the model loaded before: {result['model_rss'] / mib:,.0f} MiB; the build's "
        f"share: "
        f"{build_rss / mib:,.0f} MiB = {build_rss / n:,.0f} bytes/vector, "
        f"{build_rss / mib / n * 1e6:,.0f} MiB per million; all vectors as float32 would "
        f"be {n * result['dim'] * 4 / mib:,.0f} MiB)",
        "index on disk: "
        + ", ".join(f"{name} {size / mib:,.1f} MiB" for name, size in sizes.items())
        + f"; total {disk / mib:,.0f} MiB = {disk / n:,.0f} bytes/vector",
        f"in RAM when searching: vectors.faiss {sizes['vectors.faiss'] / n:,.0f} bytes/vector "
        f"({sizes['vectors.faiss'] / mib / n * 1e6:,.0f} MiB per million; vectors.npy is "
        f"memory-mapped, only re-scored candidates are read)",
        f"recall@{K} against exact search, {result['queries']:,} queries: "
        f"{result[f'recall@{K}']:.3f} ({result['queries'] / result['search_seconds']:,.0f} "
        f"queries/s in one batch)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--batch-rows", type=int, default=BATCH_ROWS)
    parser.add_argument("--model", default="default")
    args = parser.parse_args()
    result = run(args.vectors, args.shards, args.queries, args.batch_rows, args.model)
    print(report(result))


if __name__ == "__main__":
    main()
