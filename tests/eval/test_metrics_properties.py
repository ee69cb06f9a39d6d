"""Properties of the ranking metrics on generated qrels and runs: equal to trec_eval
(pytrec_eval) with ties and near-ties, within [0, 100], 100 for a perfect ranking, blind to
the order below the cutoff and to the order the run lists its documents in."""

from __future__ import annotations

import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cpt_embed.eval.metrics import ranked, ranking_metrics

pytrec_eval = pytest.importorskip("pytrec_eval")

SETTINGS = settings(max_examples=300, deadline=None, database=None)
DOCS = [f"d{i}" for i in range(15)] + ["D", "a", "z9", "é", "文"]
QUERIES = ["q1", "q2", "q3"]
doc_ids = st.sampled_from(DOCS)
qrels_strategy = st.dictionaries(
    st.sampled_from(QUERIES),
    st.dictionaries(doc_ids, st.integers(-1, 4), min_size=1, max_size=10),
    min_size=1,
    max_size=3,
)
# Few distinct scores make ties; scores apart by less than float32 resolves are ties too.
score = st.one_of(
    st.sampled_from([0.0, 0.5, 1.0, -1.0, 1.0 + 1e-9, 1e-50]),
    st.floats(-5, 5, allow_nan=False),
)
run_strategy = st.dictionaries(
    st.sampled_from([*QUERIES, "unjudged"]), st.dictionaries(doc_ids, score, max_size=20)
)
cutoff = st.integers(1, 20)


def _names(k: int) -> tuple[str, ...]:
    return (f"ndcg@{k}", f"mrr@{k}", f"recall@{k}", f"map@{k}")


def _trec_eval(run: dict, qrels: dict, k: int) -> dict[str, float]:
    """Our four metrics computed by trec_eval, averaged over the judged queries as BEIR does
    (a query missing from the run scores 0)."""
    per_query = pytrec_eval.RelevanceEvaluator(
        qrels, {f"ndcg_cut.{k}", f"recall.{k}", f"map_cut.{k}", "recip_rank"}
    ).evaluate(run)
    for results in per_query.values():
        # MRR@k: the reciprocal rank where the first relevant document is within k, else 0
        results["mrr"] = results["recip_rank"] if results["recip_rank"] * k >= 1 - 1e-9 else 0

    def mean(measure: str) -> float:
        return 100.0 * sum(per_query.get(q, {}).get(measure, 0.0) for q in qrels) / len(qrels)

    return {
        f"ndcg@{k}": mean(f"ndcg_cut_{k}"),
        f"mrr@{k}": mean("mrr"),
        f"recall@{k}": mean(f"recall_{k}"),
        f"map@{k}": mean(f"map_cut_{k}"),
    }


@SETTINGS
@given(qrels=qrels_strategy, run=run_strategy, k=cutoff)
@example(qrels={"q1": {"a": 1}}, run={"q1": {"a": 1.0 + 1e-9, "d7": 1.0}}, k=1)
def test_metrics_equal_trec_eval(qrels, run, k):
    ours = ranking_metrics(run, qrels, _names(k))
    assert ours == pytest.approx(_trec_eval(run, qrels, k), abs=1e-6)


@SETTINGS
@given(qrels=qrels_strategy, run=run_strategy, k=cutoff)
def test_metrics_lie_between_0_and_100(qrels, run, k):
    for value in ranking_metrics(run, qrels, _names(k)).values():
        assert 0.0 <= value <= 100.0 + 1e-9


@SETTINGS
@given(qrels=qrels_strategy, k=cutoff, seed=st.integers(0, 2**32))
def test_a_perfect_ranking_scores_100(qrels, k, seed):
    """Documents scored by their relevance (the rest below, in any order): nDCG and MRR are
    100 for every query with a relevant document, recall and MAP too when they all fit in
    the cutoff."""
    rng = random.Random(seed)
    run = {
        q: {d: float(max(r, 0)) + rng.random() / 2 for d, r in judged.items()}
        | {d: -rng.random() for d in DOCS if d not in judged}
        for q, judged in qrels.items()
    }
    for query, judged in qrels.items():
        relevant = sum(r > 0 for r in judged.values())
        if not relevant:
            continue
        got = ranking_metrics({query: run[query]}, {query: judged}, _names(k))
        assert got[f"ndcg@{k}"] == pytest.approx(100.0)
        assert got[f"mrr@{k}"] == 100.0
        if relevant <= k:
            assert got[f"recall@{k}"] == pytest.approx(100.0)
            assert got[f"map@{k}"] == pytest.approx(100.0)


@SETTINGS
@given(
    qrels=qrels_strategy,
    order=st.permutations(DOCS),
    k=st.integers(1, len(DOCS)),
    seed=st.integers(0, 2**32),
)
def test_the_order_below_the_cutoff_does_not_count(qrels, order, k, seed):
    ranking = {d: float(len(order) - i) for i, d in enumerate(order)}
    tail = order[k:]
    shuffled = random.Random(seed).sample(tail, len(tail))
    reordered = {**ranking, **{d: ranking[e] for d, e in zip(tail, shuffled, strict=True)}}
    assert ranked(reordered)[:k] == order[:k]
    runs = ({q: ranking for q in qrels}, {q: reordered for q in qrels})
    assert ranking_metrics(runs[0], qrels, _names(k)) == ranking_metrics(runs[1], qrels, _names(k))


@SETTINGS
@given(scores=st.dictionaries(doc_ids, score), seed=st.integers(0, 2**32))
def test_ranking_ignores_the_order_the_run_lists_documents_in(scores, seed):
    items = list(scores.items())
    random.Random(seed).shuffle(items)
    assert ranked(dict(items)) == ranked(scores)
    assert sorted(ranked(scores)) == sorted(scores)


def test_scores_apart_below_float32_resolution_tie_as_in_trec_eval():
    """trec_eval keeps scores as float32: these two tie, and the tie goes to the larger id."""
    assert ranked({"a": 1.0 + 1e-9, "b": 1.0}) == ["b", "a"]
    assert ranked({"a": 1.0 + 1e-6, "b": 1.0}) == ["a", "b"]
    run, qrels = {"q": {"a": 1.0 + 1e-9, "b": 1.0}}, {"q": {"b": 1}}
    assert pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(run)["q"] == {
        "recip_rank": 1.0
    }
    assert ranking_metrics(run, qrels, ("mrr@10",)) == {"mrr@10": 100.0}
