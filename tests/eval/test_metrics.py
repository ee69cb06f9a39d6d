"""Our ranking metrics against pytrec_eval (trec_eval) on the real qrels, and Spearman
against scipy's definition."""

from __future__ import annotations

import numpy as np
import pytest

from cpt_embed.eval.data import load_qrels
from cpt_embed.eval.metrics import ranked, ranking_metrics, spearman

pytrec_eval = pytest.importorskip("pytrec_eval")

QRELS = [
    "retrieval/scifact/qrels/test.tsv",
    "retrieval/cranfield/qrels/test.tsv",  # graded relevance 1-4
    "retrieval/cisi/qrels/test.tsv",
    "code_search/cosqa/qrels/test.tsv",
    "code_search/codesearchnet_ruby/qrels/test.tsv",
]


def _synthetic_run(qrels, rng, depth=100, ties=False):
    """A run over the judged documents plus distractors: relevant documents land at random
    ranks, some below the depth, some queries find nothing."""
    docs = sorted({d for judged in qrels.values() for d in judged})
    run = {}
    for query, judged in qrels.items():
        if rng.random() < 0.05:
            continue  # a query the system returned nothing for
        candidates = list(rng.choice(docs, size=min(depth, len(docs)), replace=False))
        candidates += [d for d in judged if rng.random() < 0.7]
        scores = rng.random(len(candidates))
        if ties:
            scores = np.round(scores, 1)
        run[query] = {d: float(s) for d, s in zip(candidates, scores, strict=True)}
        top = sorted(run[query].items(), key=lambda kv: -kv[1])[:depth]
        run[query] = dict(top) if not ties else run[query]
    return run


@pytest.mark.parametrize("relative", QRELS)
@pytest.mark.parametrize("ties", [False, True])
def test_ranking_metrics_equal_trec_eval(shared_data, relative, ties):
    qrels = load_qrels(shared_data / relative)
    run = _synthetic_run(qrels, np.random.default_rng(len(relative)), ties=ties)
    ours = ranking_metrics(run, qrels)
    evaluator = pytrec_eval.RelevanceEvaluator(
        qrels, {"ndcg_cut.10", "recall.100", "map_cut.100", "recip_rank"}
    )
    per_query = evaluator.evaluate(run)

    # trec_eval scores only queries present in the run; BEIR (and we) count the rest as 0.
    def mean(measure):
        return 100.0 * sum(per_query.get(q, {}).get(measure, 0.0) for q in qrels) / len(qrels)

    assert ours["ndcg@10"] == pytest.approx(mean("ndcg_cut_10"), abs=1e-6)
    assert ours["recall@100"] == pytest.approx(mean("recall_100"), abs=1e-6)
    assert ours["map@100"] == pytest.approx(mean("map_cut_100"), abs=1e-6)
    # MRR@10 is trec_eval's reciprocal rank on the run cut to its first 10 documents.
    cut = {q: {d: run[q][d] for d in ranked(scores)[:10]} for q, scores in run.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
    expected = 100.0 * sum(rr.get(q, {}).get("recip_rank", 0.0) for q in qrels) / len(qrels)
    assert ours["mrr@10"] == pytest.approx(expected, abs=1e-6)


def test_metrics_by_hand():
    qrels = {"q": {"a": 2, "b": 1}}
    run = {"q": {"x": 0.9, "a": 0.8, "y": 0.7, "b": 0.1}}
    got = ranking_metrics(run, qrels, ("ndcg@10", "mrr@10", "recall@2", "map@100"))
    dcg = 2 / np.log2(3) + 1 / np.log2(5)
    idcg = 2 / np.log2(2) + 1 / np.log2(3)
    assert got["ndcg@10"] == pytest.approx(100 * dcg / idcg)
    assert got["mrr@10"] == pytest.approx(50.0)
    assert got["recall@2"] == pytest.approx(50.0)
    assert got["map@100"] == pytest.approx(100 * (1 / 2 + 2 / 4) / 2)


def test_ties_break_by_doc_id_descending():
    assert ranked({"a": 1.0, "c": 1.0, "b": 2.0}) == ["b", "c", "a"]


def test_spearman_is_rank_correlation_times_100():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(100.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-100.0)
    x = np.random.default_rng(0).random(50)
    ranks = np.argsort(np.argsort(x))
    assert spearman(x, ranks) == pytest.approx(100.0)
