"""The FAISS part of an index: approximate kinds recall what exact search finds, IVF-PQ
candidates are re-scored exactly, unknown kinds are refused, and an index file reads back
the same."""

from __future__ import annotations

import numpy as np
import pytest

from cpt_embed.errors import InputError
from cpt_embed.search.index import (
    check_kind,
    faiss_index,
    nearest,
    read_faiss_index,
    write_faiss_index,
)


def _clustered(rows: int = 2000, dim: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around 50 centres, and 50 queries near the first 50 of them."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, dim))
    vectors = centres[rng.integers(0, 50, rows)] + 0.3 * rng.normal(size=(rows, dim))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    queries = vectors[:50] + 0.05 * rng.normal(size=(50, dim)).astype(np.float32)
    return vectors, queries


def test_approximate_kinds_recall_what_exact_search_finds():
    vectors, queries = _clustered()
    _, exact = faiss_index(vectors, "flat").search(queries, 10)
    for kind, floor in (("hnsw", 0.9), ("ivfpq", 0.5)):
        _, found = faiss_index(vectors, kind).search(queries, 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, found, strict=True)])
        assert recall >= floor, (kind, recall)
    with pytest.raises(InputError, match="needs at least"):
        faiss_index(vectors[:100], "ivfpq")


def test_nearest_rescores_ivfpq_candidates_exactly():
    vectors, queries = _clustered()
    scores, rows = nearest(faiss_index(vectors, "ivfpq"), vectors, queries, 10)
    assert scores.shape == rows.shape == (50, 10) and (rows >= 0).all()
    exact = np.einsum("qkd,qd->qk", vectors[rows], queries)
    np.testing.assert_allclose(scores, exact, rtol=1e-5, atol=1e-6)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_unknown_kinds_are_refused():
    for kind in ("flat", "hnsw", "ivfpq"):
        check_kind(kind)
    with pytest.raises(InputError, match="index kind must be one of .*, got 'annoy'"):
        check_kind("annoy")
    with pytest.raises(InputError, match="index kind must be one of"):
        faiss_index(np.zeros((4, 8), dtype=np.float32), "IVF")


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_an_index_file_reads_back_the_same(kind, tmp_path):
    vectors, queries = _clustered()
    index = faiss_index(vectors, kind)
    write_faiss_index(index, tmp_path / "vectors.faiss")
    again = read_faiss_index(tmp_path / "vectors.faiss")
    assert again.ntotal == len(vectors)
    for a, b in zip(
        nearest(index, vectors, queries, 5), nearest(again, vectors, queries, 5), strict=True
    ):
        np.testing.assert_array_equal(a, b)
