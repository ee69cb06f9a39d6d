"""Text retrieval and code search in the BEIR layout: queries on the query side, documents
(title + text) on the document side, exact cosine search (or BM25 for the lexical
baseline), trec_eval-style metrics. Code sets also get the CodeSearchNet protocol of the
paper's Table 7: each query against its true code plus 999 random distractors, mean
reciprocal rank."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from cpt_embed.eval.context import Context, TaskResult
from cpt_embed.eval.data import BEIR, load_beir
from cpt_embed.eval.metrics import ranking_metrics
from cpt_embed.eval.topk import exact_topk
from cpt_embed.model import fusion

RETRIEVAL_SOURCES = {
    "scifact": ("retrieval/scifact", "retrieval"),
    "cranfield": ("retrieval/cranfield", "retrieval"),
    "cisi": ("retrieval/cisi", "retrieval"),
    "cosqa": ("code_search/cosqa", "code"),
    "codesearchnet_ruby": ("code_search/codesearchnet_ruby", "code"),
}
RUN_DEPTH = 100
DISTRACTORS = 999
METRICS = ("ndcg@10", "mrr@10", "recall@100", "map@100")
CODE_METRICS = (*METRICS, f"mrr_{DISTRACTORS}_distractors")
CANDIDATES_PROTOCOL = (
    f"mrr_{DISTRACTORS}_distractors: MRR over {DISTRACTORS + 1:,} candidates, the true code "
    f"and {DISTRACTORS} random others (the paper's Table 7)"
)
# (query index, document indices) -> the scores of those documents for that query
PairScores = Callable[[int, np.ndarray], np.ndarray]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def distractor_mrr(
    score: PairScores,
    truth: list[int],
    n_docs: int,
    rng: np.random.Generator,
    distractors: int = DISTRACTORS,
) -> float:
    """Mean reciprocal rank of each query's true document among itself and `distractors`
    others drawn at random from the corpus (ties count in the query's favour)."""
    distractors = min(distractors, n_docs - 1)
    reciprocal = []
    for q, t in enumerate(truth):
        picks = rng.choice(n_docs - 1, size=distractors, replace=False)
        picks = picks + (picks >= t)  # skip the true document
        scores = score(q, np.concatenate([[t], picks]))
        reciprocal.append(1.0 / (1 + int(np.count_nonzero(scores[1:] > scores[0]))))
    return 100.0 * float(np.mean(reciprocal))


def _dense(ctx: Context, data: BEIR, sides: tuple[str, str]):
    docs = _unit(ctx.embed(data.corpus_texts, sides[1]))
    queries = _unit(ctx.embed(data.query_texts, sides[0]))
    scores, index = exact_topk(queries, docs, RUN_DEPTH)
    return scores, index, lambda q, picked: docs[picked] @ queries[q]


def _lexical(data: BEIR, code: bool):
    from cpt_embed.model.lexical import BM25

    bm25 = BM25(data.corpus_texts, code=code)
    scores, index = bm25.top(data.query_texts, RUN_DEPTH)
    return scores, index, lambda q, picked: bm25.scores(data.query_texts[q])[picked]


def _hybrid(ctx: Context, data: BEIR, sides: tuple[str, str], code: bool):
    """Dense and BM25 scores of the union of each one's top hits, fused (model/fusion.py)."""
    _, dense_index, dense_pairs = _dense(ctx, data, sides)
    lexical_scores, lexical_index, lexical_pairs = _lexical(data, code)
    depth = min(RUN_DEPTH, len(data.corpus_ids))
    scores = np.zeros((len(data.query_ids), depth), dtype=np.float32)
    index = np.zeros((len(data.query_ids), depth), dtype=np.int64)

    def pair_scores(q: int, picked: np.ndarray) -> np.ndarray:
        return fusion.fuse(
            dense_pairs(q, picked),
            lexical_pairs(q, picked),
            fusion=fusion.FUSION,
            weight=fusion.DENSE_WEIGHT,
        )

    for q in range(len(data.query_ids)):
        matched = lexical_index[q][lexical_scores[q] > 0]
        pool = fusion.candidates(dense_index[q, : fusion.DEPTH], matched[: fusion.DEPTH])
        fused = pair_scores(q, pool)
        best = np.argsort(-fused, kind="stable")[:depth]
        scores[q, : len(best)], index[q, : len(best)] = fused[best], pool[best]
    return scores, index, pair_scores


def protocol(group: str, retriever: str = "dense") -> str:
    """How a retrieval or code task's numbers are made, in words."""
    bm25 = "BM25 (bm25s, Lucene; English stop words and stemmer" + (
        ", identifiers split)" if group == "code" else ")"
    )
    search = {
        "dense": "exact cosine search",
        "bm25": bm25,
        "hybrid": f"exact cosine search and {bm25} fused over the union of each one's top "
        f"{fusion.DEPTH}: {fusion.describe()}",
    }[retriever]
    text = f"BEIR: {search} over the whole corpus, trec_eval metrics over the judged queries"
    return f"{text}; {CANDIDATES_PROTOCOL}" if group == "code" else text


def run_retrieval(
    ctx: Context,
    task: str,
    folder: str | Path,
    group: str = "retrieval",
    split: str = "test",
    sides: tuple[str, str] = ("query", "document"),
) -> TaskResult:
    """nDCG@10, MRR@10, Recall@100, MAP@100 (x 100) over the queries judged in `split` of
    the BEIR `folder` (below the data dir unless absolute), queries and documents embedded
    on `sides`; a `code` group also gets the 1,000-candidate MRR."""
    data = load_beir(ctx.data_dir / folder, split, ctx.checksums)
    if ctx.retriever == "bm25":
        scores, index, pair_scores = _lexical(data, code=group == "code")
    elif ctx.retriever == "hybrid":
        scores, index, pair_scores = _hybrid(ctx, data, sides, code=group == "code")
    else:
        scores, index, pair_scores = _dense(ctx, data, sides)
    lexical = ctx.retriever == "bm25"  # a document no query term matches is not retrieved
    run = {
        qid: {
            data.corpus_ids[i]: float(s)
            for s, i in zip(row_s, row_i, strict=True)
            if s > 0 or not lexical
        }
        for qid, row_s, row_i in zip(data.query_ids, scores, index, strict=True)
    }
    metrics = ranking_metrics(run, data.qrels)
    details = {"queries": len(data.query_ids), "documents": len(data.corpus_ids), "split": split}
    if group == "code":
        position = {doc: i for i, doc in enumerate(data.corpus_ids)}
        truth = [position[max(data.qrels[q], key=data.qrels[q].get)] for q in data.query_ids]
        metrics[f"mrr_{DISTRACTORS}_distractors"] = distractor_mrr(
            pair_scores, truth, len(data.corpus_ids), ctx.rng(task)
        )
    return TaskResult(
        task,
        group,
        "ndcg@10",
        metrics,
        details,
        size=len(data.query_ids),
        protocol=protocol(group, ctx.retriever),
    )
