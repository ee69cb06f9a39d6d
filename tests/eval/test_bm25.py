"""`cpt eval --model bm25`: the lexical baseline on the retrieval and code tasks, its run
scored as pytrec_eval scores bm25s's own retrieval, side by side with dense models."""

from __future__ import annotations

import json

import bm25s
import pytest
from typer.testing import CliRunner

from cpt_embed.cli import app
from cpt_embed.eval import evaluate
from cpt_embed.eval.data import load_beir
from cpt_embed.model.lexical import tokenize

pytrec_eval = pytest.importorskip("pytrec_eval")


def _oracle(folder, code: bool) -> dict[str, float]:
    """nDCG@10 and Recall@100 of bm25s's own top 100 (documents scoring 0 left out), by
    pytrec_eval, averaged over the judged queries."""
    data = load_beir(folder)
    index = bm25s.BM25()
    index.index(tokenize(data.corpus_texts, code=code), show_progress=False)
    docs, scores = index.retrieve(tokenize(data.query_texts, code=code), k=100, show_progress=False)
    run = {
        q: {data.corpus_ids[d]: float(s) for d, s in zip(row_d, row_s, strict=True) if s > 0}
        for q, row_d, row_s in zip(data.query_ids, docs, scores, strict=True)
    }
    per_query = pytrec_eval.RelevanceEvaluator(data.qrels, {"ndcg_cut.10", "recall.100"}).evaluate(
        run
    )

    def mean(measure: str) -> float:
        return (
            100 * sum(per_query.get(q, {}).get(measure, 0.0) for q in data.qrels) / len(data.qrels)
        )

    return {"ndcg@10": mean("ndcg_cut_10"), "recall@100": mean("recall_100")}


def test_bm25_runs_the_retrieval_and_code_tasks_as_pytrec_eval_scores_bm25s(mini_data):
    report = evaluate("bm25", ["stsb", "scifact", "cosqa"], mini_data, cache_dir=None)
    assert [r.task for r in report.results] == ["scifact", "cosqa"]
    assert report.settings["skipped"] == ["stsb"]
    assert report.settings["bm25"]["k1"] == 1.5
    for result, folder, code in zip(
        report.results, ["retrieval/scifact", "code_search/cosqa"], [False, True], strict=True
    ):
        expected = _oracle(mini_data / folder, code)
        assert result.scores["ndcg@10"] == pytest.approx(expected["ndcg@10"], abs=1e-6)
        assert result.scores["recall@100"] == pytest.approx(expected["recall@100"], abs=1e-6)
        assert "BM25" in result.protocol
    assert 0 < report.results[1].scores["mrr_999_distractors"] <= 100


def test_cli_puts_bm25_beside_a_dense_model(tiny_bert, mini_data, tmp_path):
    out = tmp_path / "report.json"
    done = CliRunner().invoke(
        app,
        ["eval", "-m", str(tiny_bert), "-m", "bm25", "--tasks", "stsb,scifact"]
        + ["--data", str(mini_data), "-o", str(out), "--no-cache", "--no-compile"],
    )
    assert done.exit_code == 0, done.output
    models = json.loads(out.read_text())["models"]
    assert [r["task"] for r in models[1]["results"]] == ["scifact"]
    assert models[1]["model"] == "bm25"
    stsb_row = next(line for line in done.output.splitlines() if line.startswith("│ stsb"))
    assert stsb_row.rstrip("│ ").endswith("-")
    assert "exact cosine search" in done.output and "BM25 (bm25s" in done.output
    assert "[1] bm25" in done.output  # column names are not read as markup


def test_bm25_without_a_retrieval_task_is_refused_before_work(mini_data):
    done = CliRunner().invoke(
        app, ["eval", "-m", "bm25", "--tasks", "sts", "--data", str(mini_data)]
    )
    assert done.exit_code == 2
    assert "none of --tasks is a retrieval or code task" in done.output


@pytest.mark.parametrize("weight, alone", [(1.0, "dense"), (0.0, "bm25")])
def test_hybrid_at_either_end_of_the_weight_ranks_as_that_retriever(
    tiny_bert, mini_data, monkeypatch, weight, alone
):
    from cpt_embed.model import fusion

    monkeypatch.setattr(fusion, "FUSION", "convex")
    monkeypatch.setattr(fusion, "DENSE_WEIGHT", weight)
    tasks = ["scifact", "codesearchnet_ruby"]
    hybrid = evaluate(str(tiny_bert), tasks, mini_data, cache_dir=None, retriever="hybrid")
    single = evaluate(str(tiny_bert), tasks, mini_data, cache_dir=None, retriever=alone)
    assert hybrid.settings["fusion"]["dense_weight"] == weight
    for ours, theirs in zip(hybrid.results, single.results, strict=True):
        assert ours.scores["ndcg@10"] == pytest.approx(theirs.scores["ndcg@10"], abs=1e-6)
        assert "fused" in ours.protocol


def test_hybrid_beats_a_random_dense_model_with_the_words_bm25_matches(tiny_bert, mini_data):
    tasks = ["scifact"]
    hybrid = evaluate(str(tiny_bert), tasks, mini_data, cache_dir=None, retriever="hybrid")
    dense = evaluate(str(tiny_bert), tasks, mini_data, cache_dir=None)
    assert hybrid.results[0].score > dense.results[0].score + 10  # tiny_bert is untrained


def test_cli_compares_retrievers_side_by_side(tiny_bert, mini_data, tmp_path):
    out = tmp_path / "report.json"
    done = CliRunner().invoke(
        app,
        ["eval", "-m", str(tiny_bert), "--retriever", "dense,hybrid", "--tasks", "scifact"]
        + ["--data", str(mini_data), "-o", str(out), "--no-cache", "--no-compile"],
    )
    assert done.exit_code == 0, done.output
    models = json.loads(out.read_text())["models"]
    assert [m["model"] for m in models] == [str(tiny_bert), f"{tiny_bert} [hybrid]"]
    assert [m["settings"]["retriever"] for m in models] == ["dense", "hybrid"]
    bad = CliRunner().invoke(app, ["eval", "--retriever", "sparse", "--tasks", "scifact"])
    assert bad.exit_code == 2 and "--retriever 'sparse'" in bad.output
