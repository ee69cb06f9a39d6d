"""Text retrieval and code search in the BEIR layout: queries on the query side, documents
(title + text) on the document side, exact cosine search, trec_eval-style metrics. Code sets
also get the CodeSearchNet protocol of the paper: each query against its true code plus 999
random distractors, mean reciprocal rank."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cpt_embed.eval.context import Context, TaskResult
from cpt_embed.eval.data import load_beir
from cpt_embed.eval.metrics import ranking_metrics
from cpt_embed.eval.topk import exact_topk

RETRIEVAL_SOURCES = {
    "scifact": ("retrieval/scifact", "retrieval"),
    "cranfield": ("retrieval/cranfield", "retrieval"),
    "cisi": ("retrieval/cisi", "retrieval"),
    "cosqa": ("code_search/cosqa", "code"),
    "codesearchnet_ruby": ("code_search/codesearchnet_ruby", "code"),
}
RUN_DEPTH = 100
DISTRACTORS = 999


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def distractor_mrr(
    queries: np.ndarray,
    docs: np.ndarray,
    truth: list[int],
    rng: np.random.Generator,
    distractors: int = DISTRACTORS,
) -> float:
    """Mean reciprocal rank of each query's true document among itself and `distractors`
    others drawn at random from the corpus (ties count in the query's favour)."""
    n_docs = len(docs)
    distractors = min(distractors, n_docs - 1)
    reciprocal = []
    for q, t in zip(queries, truth, strict=True):
        picks = rng.choice(n_docs - 1, size=distractors, replace=False)
        picks = picks + (picks >= t)  # skip the true document
        true_score = float(docs[t] @ q)
        rank = 1 + int(np.count_nonzero(docs[picks] @ q > true_score))
        reciprocal.append(1.0 / rank)
    return 100.0 * float(np.mean(reciprocal))


def run_retrieval(
    ctx: Context, task: str, folder: str | Path, group: str = "retrieval", split: str = "test"
) -> TaskResult:
    """nDCG@10, MRR@10, Recall@100, MAP@100 (x 100) over the queries judged in `split` of
    the BEIR `folder` (below the data dir unless absolute); a `code` group also gets the
    1,000-candidate MRR."""
    data = load_beir(ctx.data_dir / folder, split, ctx.checksums)
    docs = _unit(ctx.embed(data.corpus_texts, "document"))
    queries = _unit(ctx.embed(data.query_texts, "query"))
    scores, index = exact_topk(queries, docs, RUN_DEPTH)
    run = {
        qid: {data.corpus_ids[i]: float(s) for s, i in zip(row_s, row_i, strict=True)}
        for qid, row_s, row_i in zip(data.query_ids, scores, index, strict=True)
    }
    metrics = ranking_metrics(run, data.qrels)
    details = {"queries": len(data.query_ids), "documents": len(data.corpus_ids), "split": split}
    if group == "code":
        position = {doc: i for i, doc in enumerate(data.corpus_ids)}
        truth = [position[max(data.qrels[q], key=data.qrels[q].get)] for q in data.query_ids]
        metrics[f"mrr_{DISTRACTORS}_distractors"] = distractor_mrr(
            queries, docs, truth, ctx.rng(task)
        )
    return TaskResult(task, group, "ndcg@10", metrics, details, size=len(data.query_ids))
