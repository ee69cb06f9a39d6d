"""The FAISS part of a search index: the index kinds (exact, HNSW, IVF-PQ) and precisions of
an exact index's vectors (float32, int8, sign bits), training on a sample, nearest-neighbour
queries with exact re-scoring, and the vectors.faiss file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cpt_embed.errors import InputError

# A FAISS index object (faiss ships no type information).
FaissIndex = Any

KINDS = ("flat", "hnsw", "ivfpq")
PRECISIONS = ("float32", "int8", "binary")
# ivfpq: k-means sample per list, lists searched
IVF_TRAIN_PER_LIST = 64
IVF_NPROBE = 64
# int8: the range of each dimension is learnt from a sample of this many vectors
INT8_TRAIN_ROWS = 65_536
# candidates per hit that compact vectors hand to exact re-scoring against the float ones;
# sign bits lose most (Hamming distances also tie often): 40 x k keeps recall@10 >= 0.997 on
# MiniLM embeddings of the evaluation sets (20 x k: 0.98) and 0.93 on a million noisy
# copies of them (benchmarks/precision.py)
RERANK = 4  # ivfpq
INT8_RERANK = 4
BINARY_RERANK = 40
# re-scoring reads at most this many candidate vectors at a time (150 MB at 384 dims)
RESCORE_ROWS = 100_000


def check_kind(kind: str) -> None:
    """Refuse an index kind other than those of KINDS, before any work is done."""
    if kind not in KINDS:
        raise InputError(f"index kind must be one of {KINDS}, got {kind!r}")


def check_precision(kind: str, precision: str) -> None:
    """Refuse, before any work is done, an unknown kind or precision, or a compact precision
    for a kind other than flat (IVF-PQ compresses its vectors already)."""
    check_kind(kind)
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "float32" and kind != "flat":
        raise InputError(
            f"--precision {precision} applies to --kind flat only, not --kind {kind} (ivfpq "
            "compresses its vectors itself, hnsw keeps float32); drop one of the two"
        )


def empty_faiss_index(dim: int, kind: str, rows: int, precision: str = "float32") -> FaissIndex:
    """An empty FAISS index of `kind` for `rows` unit vectors of `dim` floats, searched by
    inner product: exact (`flat`, its vectors as float32, int8 or sign bits: `precision`),
    HNSW, or IVF-PQ sized for `rows` (for millions). Search it with `nearest`, which
    re-scores the candidates of compact vectors exactly. IVF-PQ and int8 must be trained
    (`train_faiss_index`) before vectors are added (`add_vectors`); the others take vectors
    at once. Separate steps so that a build can train on a sample and then add vectors
    batch by batch, never holding them all."""
    import faiss

    check_precision(kind, precision)
    if kind == "flat":
        return _flat_index(dim, precision)
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


def _flat_index(dim: int, precision: str) -> FaissIndex:
    """An exhaustive index of float32 vectors, of int8 codes (one byte per dimension over
    its trained range), or of sign bits (one bit per dimension, compared by Hamming
    distance; FAISS takes whole bytes, so the last byte is padded with zero bits)."""
    import faiss

    if precision == "int8":
        return faiss.IndexScalarQuantizer(
            dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
    if precision == "binary":
        return _counting(faiss.IndexBinaryFlat(8 * -(-dim // 8)))
    return faiss.IndexFlatIP(dim)


def _counting(index: FaissIndex) -> FaissIndex:
    """`index` (binary) set to select candidates by counting Hamming distances rather than
    through a heap: the same hits, 1.5x as fast for the thousands a hybrid search asks for
    (a setting of the object, not of the file)."""
    index.use_heap = False
    return index


def training_rows(index: FaissIndex, rows: int) -> np.ndarray:
    """The sorted rows (of `rows` vectors) to train `index` on: a fixed random sample of
    IVF_TRAIN_PER_LIST per inverted list for IVF-PQ, of INT8_TRAIN_ROWS for int8; none for
    an index that needs no training."""
    import faiss

    if index.is_trained:
        return np.zeros(0, dtype=np.int64)
    size = (
        IVF_TRAIN_PER_LIST * index.nlist if isinstance(index, faiss.IndexIVF) else INT8_TRAIN_ROWS
    )
    return np.sort(np.random.default_rng(0).permutation(rows)[:size])


def train_faiss_index(index: FaissIndex, sample: np.ndarray) -> None:
    """Train an empty index from `empty_faiss_index` on the `training_rows` vectors."""
    import faiss

    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    if isinstance(index, faiss.IndexIVFPQFastScan):
        index.pq.sync_transposed_centroids()  # about twice as fast to encode in add()


def sign_bits(vectors: np.ndarray) -> np.ndarray:
    """The sign bits of unit rows, packed eight to a byte: what a binary index holds."""
    return np.packbits(np.asarray(vectors) > 0, axis=1)


def add_vectors(index: FaissIndex, vectors: np.ndarray) -> None:
    """Add unit rows of float32 to a (trained) index: their sign bits to a binary one."""
    import faiss

    if isinstance(index, faiss.IndexBinary):
        index.add(sign_bits(vectors))
    else:
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))


def faiss_index(vectors: np.ndarray, kind: str, precision: str = "float32") -> FaissIndex:
    """A FAISS index of `kind` and `precision` (see `empty_faiss_index`) over the unit rows
    of `vectors`, trained where it needs to be on a sample of them."""
    index = empty_faiss_index(vectors.shape[1], kind, len(vectors), precision)
    if not index.is_trained and len(vectors):
        train_faiss_index(index, vectors[training_rows(index, len(vectors))])
    if len(vectors):
        add_vectors(index, vectors)
    return index


def rerank_factor(index: FaissIndex) -> int:
    """How many candidates per hit `nearest` takes from `index` to re-score exactly: 1 for
    an index of float32 vectors, whose scores are exact already."""
    import faiss

    if isinstance(index, faiss.IndexBinary):
        return BINARY_RERANK
    if isinstance(index, faiss.IndexScalarQuantizer):
        return INT8_RERANK
    if isinstance(index, (faiss.IndexIVFPQ, faiss.IndexIVFPQFastScan)):
        return RERANK
    return 1


def nearest(
    index: FaissIndex, vectors: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The k best (scores, rows) for each row of `queries` in `index` over the unit rows
    `vectors` (row -1 and score -inf where there are fewer). Compact vectors (IVF-PQ, int8,
    sign bits) score approximately, so their index gives `rerank_factor` x k candidates,
    which are re-scored exactly against `vectors` (vectors.npy, memory-mapped: only the
    candidate rows are read); the scores are then exact cosines."""
    import faiss

    queries = np.ascontiguousarray(queries, dtype=np.float32)
    factor, binary = rerank_factor(index), isinstance(index, faiss.IndexBinary)
    if factor == 1 and not binary:
        return index.search(queries, k)
    if index.ntotal == 0:  # an untrained index (no vectors to train on) is never searched
        shape = (len(queries), k)
        return np.full(shape, -np.inf, dtype=np.float32), np.full(shape, -1, dtype=np.int64)
    asked = sign_bits(queries) if binary else queries
    _, ids = index.search(asked, max(k, min(k * factor, index.ntotal)))
    scores = np.empty(ids.shape, dtype=np.float32)
    step = max(1, RESCORE_ROWS // ids.shape[1])
    for start in range(0, len(ids), step):
        block = ids[start : start + step]
        rows = np.asarray(vectors[block.clip(0).ravel()]).reshape(*block.shape, -1)
        scores[start : start + step] = np.einsum("qcd,qd->qc", rows, queries[start : start + step])
    scores[ids < 0] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def write_faiss_index(index: FaissIndex, path: Path) -> None:
    """Save `index` as the file `path` (an index folder's vectors.faiss)."""
    import faiss

    if isinstance(index, faiss.IndexBinary):
        faiss.write_index_binary(index, str(path))
    else:
        faiss.write_index(index, str(path))


def read_faiss_index(path: Path, precision: str = "float32") -> FaissIndex:
    """The FAISS index saved in the file `path` by `write_faiss_index`, of the `precision`
    it was built with (an index of sign bits is a FAISS binary index)."""
    import faiss

    if precision == "binary":
        return _counting(faiss.read_index_binary(str(path)))
    return faiss.read_index(str(path))
