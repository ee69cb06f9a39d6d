"""Evaluation metrics, defined as trec_eval / BEIR define them.

Ranking metrics take a run (query -> {doc: score}) and qrels (query -> {doc: relevance});
documents are ranked by score, ties broken by doc id descending, as trec_eval does.
A document is relevant when its relevance is >= 1; nDCG uses the relevance as the gain.
"""

from __future__ import annotations

import math

import numpy as np

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


def spearman(predicted, gold) -> float:
    """Spearman rank correlation x 100."""
    from scipy.stats import spearmanr  # half a second to load: not for `cpt eval`'s checks

    return float(spearmanr(predicted, gold).statistic) * 100.0


def ranked(scores: dict[str, float]) -> list[str]:
    """Doc ids by score descending, ties by doc id descending (trec_eval's order). Scores
    compare at float32 precision, as trec_eval stores them: 1.0 and 1.0 + 1e-9 tie."""
    with np.errstate(over="ignore"):  # beyond float32's range is +-inf, as in trec_eval
        as_float32 = np.asarray(list(scores.values()), dtype=np.float32).tolist()
    return [doc for _, doc in sorted(zip(as_float32, scores, strict=True), reverse=True)]


def ndcg_at(ranking: list[str], judged: dict[str, int], k: int) -> float:
    dcg = sum(
        judged.get(doc, 0) / math.log2(i + 2)
        for i, doc in enumerate(ranking[:k])
        if judged.get(doc, 0) > 0
    )
    ideal = sorted((r for r in judged.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at(ranking: list[str], judged: dict[str, int], k: int) -> float:
    for i, doc in enumerate(ranking[:k]):
        if judged.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def recall_at(ranking: list[str], judged: dict[str, int], k: int) -> float:
    relevant = {d for d, r in judged.items() if r > 0}
    return len(relevant.intersection(ranking[:k])) / len(relevant) if relevant else 0.0


def map_at(ranking: list[str], judged: dict[str, int], k: int) -> float:
    relevant = {d for d, r in judged.items() if r > 0}
    if not relevant:
        return 0.0
    hits, total = 0, 0.0
    for i, doc in enumerate(ranking[:k]):
        if doc in relevant:
            hits += 1
            total += hits / (i + 1)
    return total / len(relevant)


_RANKING = {"ndcg": ndcg_at, "mrr": mrr_at, "recall": recall_at, "map": map_at}
DEFAULT_RANKING_METRICS = ("ndcg@10", "mrr@10", "recall@100", "map@100")


def ranking_metrics(
    run: Run, qrels: Qrels, metrics: tuple[str, ...] = DEFAULT_RANKING_METRICS
) -> dict[str, float]:
    """Mean of each metric (x 100) over the queries in `qrels`; a query absent from the run
    scores 0, as in BEIR."""
    per_metric = {m: [] for m in metrics}
    for query, judged in qrels.items():
        ranking = ranked(run.get(query, {}))
        for metric in metrics:
            name, k = metric.split("@")
            per_metric[metric].append(_RANKING[name](ranking, judged, int(k)))
    return {m: 100.0 * float(np.mean(v)) if v else 0.0 for m, v in per_metric.items()}
