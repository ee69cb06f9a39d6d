"""Consistency filtering (E5, CoRNStack): a mined pair is kept only when a model already
finds it, that is when its y ranks in the top k for its x among the documents of the same
group (repository). Pairs a trained model cannot connect are mostly noise: a docstring
that describes another function, a boilerplate body, a passage that changes the subject.

A group larger than `pool` documents is shuffled (seeded) and cut into nearly equal blocks
of at most `pool`, so every positive competes with about the same number of documents;
equal texts count once, and a duplicate of the positive counts as the positive.
"""

from __future__ import annotations

import numpy as np

from cpt_embed.curate.output import GroupCounts
from cpt_embed.curate.pairs import PairSet, group_rows
from cpt_embed.errors import InputError


def check_filter_settings(top_k: int, pool: int) -> None:
    """Reject settings that would keep or drop everything, before any work."""
    if top_k < 1:
        raise InputError(f"--top-k must be >= 1, got {top_k}")
    if pool <= top_k:
        raise InputError(f"--pool ({pool}) must be larger than --top-k ({top_k})")


def _block_hits(pairs: PairSet, rows: np.ndarray, top_k: int) -> np.ndarray:
    """For the pairs `rows` (one block): whether each y is among its x's top_k documents."""
    import faiss

    keys, first = np.unique(pairs.y_keys[rows], return_index=True)
    index = faiss.IndexFlatIP(pairs.y.shape[1])
    index.add(np.ascontiguousarray(pairs.y[rows[first]]))
    _, found = index.search(np.ascontiguousarray(pairs.x[rows]), min(top_k, len(keys)))
    return (keys[found] == pairs.y_keys[rows][:, None]).any(axis=1)


def consistency_filter(
    pairs: PairSet, top_k: int = 2, pool: int = 1000, seed: int = 0
) -> tuple[np.ndarray, dict[str, GroupCounts]]:
    """Which pairs to keep (bool per row), and the counts per group."""
    check_filter_settings(top_k, pool)
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(pairs), dtype=bool)
    counts: dict[str, GroupCounts] = {}
    for group, rows in group_rows(pairs.groups):
        shuffled = rng.permutation(rows)
        for block in np.array_split(shuffled, -(-len(rows) // pool)):
            keep[block] = _block_hits(pairs, block, top_k)
        kept = int(keep[rows].sum())
        dropped = len(rows) - kept
        reasons = {f"y not in the top {top_k}": dropped} if dropped else {}
        counts[pairs.group_names[group]] = GroupCounts(kept, dropped, reasons)
    return keep, counts
