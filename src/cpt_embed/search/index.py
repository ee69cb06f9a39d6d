"""The FAISS part of a search index: the index kinds (exact, HNSW, IVF-PQ), training on a
sample, nearest-neighbour queries with exact re-scoring, and the vectors.faiss file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cpt_embed.errors import InputError

# A FAISS index object (faiss ships no type information).
FaissIndex = Any

KINDS = ("flat", "hnsw", "ivfpq")
# ivfpq: k-means sample per list, lists searched, candidates per hit re-scored exactly
IVF_TRAIN_PER_LIST = 64
IVF_NPROBE = 64
RERANK = 4


def check_kind(kind: str) -> None:
    """Refuse an index kind other than those of KINDS, before any work is done."""
    if kind not in KINDS:
        raise InputError(f"index kind must be one of {KINDS}, got {kind!r}")


def empty_faiss_index(dim: int, kind: str, rows: int) -> FaissIndex:
    """An empty FAISS index of `kind` for `rows` unit vectors of `dim` floats, searched by
    inner product: exact (`flat`), HNSW, or IVF-PQ sized for `rows` (for millions; search
    it with `nearest`). IVF-PQ must be trained (`train_faiss_index`) before vectors are
    added; the others take vectors at once. Separate steps so that a build can train on a
    sample and then add vectors batch by batch, never holding them all."""
    import faiss

    check_kind(kind)
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 128
        return index
    lists = max(1, min(4096, int(np.sqrt(rows))))
    if rows < lists * 39:
        raise InputError(
            f"--kind ivfpq needs at least {lists * 39} chunks or vectors to train, "
            f"got {rows}; use flat or hnsw"
        )
    # a 4-bit PQ code per dimension (1/8 of float32), scanned with SIMD ("fast scan");
    # its scores pick candidates, which `nearest` re-scores exactly
    index = faiss.IndexIVFPQFastScan(
        faiss.IndexFlatIP(dim), dim, lists, dim, 4, faiss.METRIC_INNER_PRODUCT
    )
    index.nprobe = min(lists, IVF_NPROBE)
    return index


def training_rows(index: FaissIndex, rows: int) -> np.ndarray:
    """The sorted rows (of `rows` vectors) to train `index` on: a fixed random sample of
    IVF_TRAIN_PER_LIST per inverted list; none for an index that needs no training."""
    if index.is_trained:
        return np.zeros(0, dtype=np.int64)
    sample = np.random.default_rng(0).permutation(rows)[: IVF_TRAIN_PER_LIST * index.nlist]
    return np.sort(sample)


def train_faiss_index(index: FaissIndex, sample: np.ndarray) -> None:
    """Train an empty IVF-PQ index from `empty_faiss_index` on the `training_rows` vectors."""
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    index.pq.sync_transposed_centroids()  # about twice as fast to encode in add()


def faiss_index(vectors: np.ndarray, kind: str) -> FaissIndex:
    """A FAISS index of `kind` (see `empty_faiss_index`) over the unit rows of `vectors`,
    trained where it needs to be on a sample of them."""
    index = empty_faiss_index(vectors.shape[1], kind, len(vectors))
    if not index.is_trained:
        train_faiss_index(index, vectors[training_rows(index, len(vectors))])
    if len(vectors):
        index.add(vectors)
    return index


def nearest(
    index: FaissIndex, vectors: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The k best (scores, rows) for each row of `queries` in `index` over the unit rows
    `vectors` (row -1 where there are fewer). IVF-PQ scores are approximate, so it takes
    RERANK * k candidates and re-scores them exactly against `vectors` (vectors.npy,
    memory-mapped: only the candidate rows are read)."""
    import faiss

    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if not isinstance(index, (faiss.IndexIVFPQ, faiss.IndexIVFPQFastScan)):
        return index.search(queries, k)
    _, ids = index.search(queries, k * RERANK)
    rows = np.asarray(vectors[ids.clip(0).ravel()]).reshape(*ids.shape, -1)
    scores = np.einsum("qcd,qd->qc", rows, queries)
    scores[ids < 0] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def write_faiss_index(index: FaissIndex, path: Path) -> None:
    """Save `index` as the file `path` (an index folder's vectors.faiss)."""
    import faiss

    faiss.write_index(index, str(path))


def read_faiss_index(path: Path) -> FaissIndex:
    """The FAISS index saved in the file `path` by `write_faiss_index`."""
    import faiss

    return faiss.read_index(str(path))
