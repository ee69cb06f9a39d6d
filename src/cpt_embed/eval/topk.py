"""Exact top-k by inner product, in blocks so memory stays bounded for big corpora."""

from __future__ import annotations

import numpy as np


def exact_topk(
    queries: np.ndarray, docs: np.ndarray, k: int, *, block: int = 16384
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, indices), each (n_queries, min(k, n_docs)), best first.

    Works through `block` documents at a time and keeps a running top-k, so memory is
    O(n_queries x (block + k)) whatever the corpus size.
    """
    import torch

    k = min(k, len(docs))
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    best_scores = torch.full((len(q), 0), float("-inf"))
    best_index = torch.zeros((len(q), 0), dtype=torch.long)
    for start in range(0, len(docs), block):
        d = torch.from_numpy(np.ascontiguousarray(docs[start : start + block], dtype=np.float32))
        scores = torch.cat([best_scores, q @ d.T], dim=1)
        index = torch.cat(
            [best_index, torch.arange(start, start + len(d)).expand(len(q), -1)], dim=1
        )
        best_scores, top = scores.topk(min(k, scores.shape[1]), dim=1)
        best_index = index.gather(1, top)
    return best_scores.numpy(), best_index.numpy()
