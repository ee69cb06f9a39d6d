"""Hybrid retrieval: the scores of a dense and a lexical retriever over the same
candidates, fused into one ranking.

Both retrievers score every candidate (the union of each one's top hits), so no candidate
is missing a score. Two fusions: `convex`, weight x dense + (1 - weight) x lexical after
min-max normalising each over the candidates (the weight was chosen on development splits,
experiments/fusion.py), and `rrf`, reciprocal-rank fusion, sum of 1 / (60 + rank), which
needs no weight. The default is the one the development splits chose."""

from __future__ import annotations

import numpy as np

FUSIONS = ("convex", "rrf")
FUSION = "convex"
# experiments/fusion.py on the development splits (docs/results/fusion.json): the best mean
# nDCG@10 among the weights within 1 point of the better retriever alone on every split
DENSE_WEIGHT = 0.75
RRF_K = 60
DEPTH = 100  # how many hits of each retriever become candidates (at least)


def _minmax(scores: np.ndarray) -> np.ndarray:
    low, high = float(scores.min()), float(scores.max())
    if high - low <= 0:
        return np.zeros_like(scores, dtype=np.float32)
    return ((scores - low) / (high - low)).astype(np.float32)


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1 for the best score, ties by position (as a stable sort orders them)."""
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[order] = np.arange(1, len(scores) + 1)
    return ranks


def fuse(
    dense: np.ndarray,
    lexical: np.ndarray,
    *,
    fusion: str = FUSION,
    weight: float = DENSE_WEIGHT,
) -> np.ndarray:
    """The fused score of each candidate, from its dense and lexical scores (same order)."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the dense weight must be in [0, 1], got {weight}")
    if len(dense) == 0:
        return np.zeros(0, dtype=np.float32)
    if fusion == "rrf":
        return (1.0 / (RRF_K + _ranks(dense)) + 1.0 / (RRF_K + _ranks(lexical))).astype(np.float32)
    return weight * _minmax(dense) + (1.0 - weight) * _minmax(lexical)


def describe() -> str:
    """The default fusion in words, for reports."""
    if FUSION == "rrf":
        return f"reciprocal-rank fusion, sum of 1 / ({RRF_K} + rank)"
    return (
        f"{DENSE_WEIGHT:g} x dense + {1 - DENSE_WEIGHT:.2g} x BM25, each min-max normalised "
        "over the candidates"
    )


def candidates(dense_top: np.ndarray, lexical_top: np.ndarray) -> np.ndarray:
    """The union of two retrievers' hits (document indices), dense ones first."""
    union = dict.fromkeys([*dense_top.tolist(), *lexical_top.tolist()])
    return np.asarray(list(union), dtype=np.int64)
