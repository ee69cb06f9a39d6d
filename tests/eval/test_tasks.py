"""The tasks end to end on a small copy of the real data, with an oracle embedder where the
right answer is known, and the suite/CLI/report around them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from cpt_embed.cli import app
from cpt_embed.errors import InputError
from cpt_embed.eval import evaluate, select_tasks
from cpt_embed.eval.context import Context
from cpt_embed.eval.data import load_beir
from cpt_embed.eval.retrieval import distractor_mrr, run_retrieval
from cpt_embed.eval.topk import exact_topk


def test_exact_topk_equals_brute_force_across_blocks():
    rng = np.random.default_rng(0)
    queries, docs = rng.standard_normal((7, 16)), rng.standard_normal((1000, 16))
    scores, index = exact_topk(queries, docs, 25, block=64)
    full = queries @ docs.T
    expected = np.argsort(-full, axis=1)[:, :25]
    np.testing.assert_array_equal(index, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, 1), rtol=1e-5)
    assert exact_topk(queries, docs[:3], 25)[1].shape == (7, 3)


def _cosine(queries, docs):
    return lambda q, picked: docs[picked] @ queries[q]


def test_distractor_mrr_extremes():
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((2000, 8))
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    truth = [5, 17, 1999]
    assert distractor_mrr(_cosine(docs[truth], docs), truth, len(docs), rng) == pytest.approx(100)
    # a true document orthogonal to a query that every distractor matches better
    docs = np.tile([1.0, 0.0], (1500, 1))
    docs[0] = [0.0, 1.0]
    queries = np.array([[1.0, 0.0]])
    mrr = distractor_mrr(_cosine(queries, docs), [0], len(docs), rng)
    assert mrr == pytest.approx(100.0 / 1000)


class OracleEmbedder:
    """Queries and their relevant documents share a random direction; the rest is noise."""

    def __init__(self, data, dim: int = 64):
        rng = np.random.default_rng(0)
        self.vectors: dict[tuple[str, str], np.ndarray] = {}
        texts = dict(zip(data.corpus_ids, data.corpus_texts, strict=True))
        for qid, qtext in zip(data.query_ids, data.query_texts, strict=True):
            direction = rng.standard_normal(dim)
            direction /= np.linalg.norm(direction)
            self.vectors[("query", qtext)] = direction
            for doc in data.qrels[qid]:  # a document relevant to several queries sums them
                key = ("document", texts[doc])
                self.vectors[key] = self.vectors.get(key, 0) + direction
        self.rng, self.dim = rng, dim

    def encode(self, texts, side):
        return np.stack(
            [self.vectors.get((side, t), self.rng.standard_normal(self.dim)) for t in texts]
        )


@pytest.mark.parametrize(
    "task, folder, group",
    [("scifact", "retrieval/scifact", "retrieval"), ("cosqa", "code_search/cosqa", "code")],
)
def test_retrieval_with_an_oracle_scores_perfectly(mini_data, task, folder, group):
    data = load_beir(mini_data / folder)
    ctx = Context(OracleEmbedder(data), mini_data)
    result = run_retrieval(ctx, task, folder, group)
    assert result.scores["ndcg@10"] == pytest.approx(100.0)
    assert result.scores["mrr@10"] == pytest.approx(100.0)
    assert result.scores["recall@100"] == pytest.approx(100.0)
    if task == "cosqa":
        assert result.scores["mrr_999_distractors"] == pytest.approx(100.0)


def test_select_tasks_by_group_and_name():
    assert select_tasks("stsb, scifact") == ["stsb", "scifact"]
    assert "cosqa" in select_tasks("code") and "stsb" not in select_tasks("code")
    assert select_tasks("senteval") == ["mr", "cr", "subj", "mpqa", "sst2", "trec", "mrpc"]
    assert len(select_tasks("all")) == len(select_tasks(""))
    with pytest.raises(InputError, match="unknown task 'stsbb'"):
        select_tasks("stsbb")


def test_every_task_runs_on_a_tiny_model_and_reruns_from_cache(tiny_bert, mini_data, tmp_path):
    tasks = select_tasks("all")
    report = evaluate(str(tiny_bert), tasks, mini_data, cache_dir=tmp_path, show_progress=False)
    assert [r.task for r in report.results] == tasks
    for result in report.results:
        assert all(math.isfinite(v) for v in result.scores.values()), result
        low = -100 if result.group == "sts" else 0
        assert low <= result.score <= 100, result
    assert report.settings["cache"]["misses"] > 0
    assert len(report.data_checksum) == 64 and report.data_files
    again = evaluate(str(tiny_bert), tasks, mini_data, cache_dir=tmp_path, show_progress=False)
    assert again.settings["cache"]["misses"] == 0
    assert [r.scores for r in again.results] == [r.scores for r in report.results]


def test_cli_compares_two_models_and_writes_json_and_plot(
    tiny_bert, tiny_llama, mini_data, tmp_path
):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "-m",
            str(tiny_bert),
            "-m",
            str(tiny_llama),
            "--tasks",
            "stsb,mrpc,cisi",
            "--data",
            str(mini_data),
            "-o",
            str(out),
            "--plot",
            str(png),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--markdown",
            str(tmp_path / "r.md"),
            "--no-compile",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Δ [1]-[0]" in result.output and "query side" in result.output
    report = json.loads(out.read_text())
    assert [m["model"] for m in report["models"]] == [str(tiny_bert), str(tiny_llama)]
    first = report["models"][0]
    assert {r["task"] for r in first["results"]} == {"stsb", "mrpc", "cisi"}
    assert first["settings"]["symmetric_side"] == "query"
    assert first["settings"]["versions"]["torch"]
    assert png.read_bytes()[:4] == b"\x89PNG"
    table = (tmp_path / "r.md").read_text()
    assert "| stsb | sts | spearman |" in table and "| cisi | retrieval | ndcg@10 |" in table


def test_cli_names_a_bad_data_dir_and_a_missing_split(tiny_bert, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["eval", "-m", str(tiny_bert), "--data", str(tmp_path / "x")])
    assert result.exit_code == 2 and "not found; pass --data DIR" in result.output
    (tmp_path / "sts" / "stsb").mkdir(parents=True)
    result = runner.invoke(
        app,
        ["eval", "-m", str(tiny_bert), "--tasks", "stsb", "--data", str(tmp_path), "--no-cache"],
    )
    assert result.exit_code == 2
    assert "sts/stsb/test.tsv: missing" in result.output


def test_cli_max_length_cuts_texts_and_keeps_the_model_name(tiny_bert, mini_data, tmp_path):
    out = tmp_path / "r.json"
    argv = ["eval", "-m", str(tiny_bert), "--tasks", "stsb", "--data", str(mini_data)]
    argv += ["-o", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-compile"]
    assert CliRunner().invoke(app, argv).exit_code == 0
    result = CliRunner().invoke(app, [*argv, "--max-length", "12"])
    assert result.exit_code == 0, result.output
    model = json.loads(out.read_text())["models"][0]
    assert model["model"] == model["settings"]["model"] == str(tiny_bert)
    assert model["settings"]["encoder"]["max_length"] == 12
    assert model["settings"]["cache"]["misses"] > 0  # not the full-length embeddings
