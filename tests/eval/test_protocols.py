"""The paper's protocols as the paper names them: k-NN with k = 256, zero-shot with the
paper's prompt and with the label words, the SentEval-7 average; every result says how its
numbers were made."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cpt_embed.eval.classification import ZERO_SHOT_TEMPLATE, run_knn, run_zero_shot
from cpt_embed.eval.context import Context, TaskResult
from cpt_embed.eval.report import markdown, protocols
from cpt_embed.eval.suite import ModelReport


class TableEmbedder:
    """Vectors from a table, and a record of every text asked for."""

    def __init__(self, table: dict[str, np.ndarray]):
        self.table, self.seen = table, []

    def encode(self, texts, side):
        self.seen += texts
        return np.stack([self.table[t] for t in texts])


def _write(folder, name, records):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in records))


def test_knn_uses_the_papers_k_of_256_and_reports_k_10_beside_it(tmp_path):
    folder = tmp_path / "classification" / "toy"
    near = [{"text": f"near {i}", "label": 1} for i in range(10)]
    far = [{"text": f"far {i}", "label": 0} for i in range(300)]
    tests = [{"text": f"test {i}", "label": 0} for i in range(5)]
    _write(folder, "train.jsonl", near + far)
    _write(folder, "test.jsonl", tests)

    def angle(a: float) -> np.ndarray:
        return np.array([np.cos(a), np.sin(a)])

    table = {r["text"]: angle(0.01 * i) for i, r in enumerate(near)}
    table |= {r["text"]: angle(0.5 + 0.001 * i) for i, r in enumerate(far)}
    table |= {r["text"]: angle(0.0) for r in tests}
    result = run_knn(Context(TableEmbedder(table), tmp_path), task="toy")
    # the 10 nearest say 1; the 256 nearest are mostly the 300 far ones, which say 0
    assert result.scores == {"accuracy": 100.0, "accuracy_k10": 0.0}
    assert "k = 256 (the paper's)" in result.protocol


def test_zero_shot_reports_the_papers_prompt_and_the_label_words(tmp_path):
    folder = tmp_path / "classification" / "toy"
    _write(folder, "test.jsonl", [{"text": "great", "label": 1}, {"text": "awful", "label": 0}])
    (folder / "labels.json").write_text(json.dumps({"0": "negative", "1": "positive"}))
    prompt = {
        ZERO_SHOT_TEMPLATE.format(label=w): v
        for w, v in [("negative", [0, 1]), ("positive", [1, 0])]
    }
    # the label words alone point the wrong way round, so the two numbers differ
    words = {"negative": np.array([1, 0]), "positive": np.array([0, 1])}
    texts = {"great": np.array([1, 0]), "awful": np.array([0, 1])}
    embedder = TableEmbedder({**{k: np.array(v) for k, v in prompt.items()}, **words, **texts})
    result = run_zero_shot(Context(embedder, tmp_path), task="toy")
    assert result.task == "zeroshot_toy"
    assert result.scores == {"accuracy": 100.0, "accuracy_label_words": 0.0}
    assert "this is an example of a positive movie review." in embedder.seen
    assert "positive" in embedder.seen
    assert "the paper's prompt" in result.protocol


def _result(task, group, score, protocol):
    return TaskResult(task, group, "accuracy", {"accuracy": score}, protocol=protocol)


def test_reports_name_every_protocol_once_and_the_senteval_7_average():
    tasks = ("mr", "cr", "subj", "mpqa", "sst2", "trec", "mrpc")
    results = [_result(t, "classification", 80.0, "linear probe") for t in tasks]
    results.append(_result("knn_sst2", "knn", 70.0, "k-NN"))
    report = ModelReport("m", {"symmetric_side": "query"}, results)
    named = dict((text, names) for names, text in protocols([report]))
    assert named["linear probe"] == ", ".join(tasks)
    assert named["k-NN"] == "knn_sst2"
    assert any("SentEval-7 average" in text for text in named)
    table = markdown([report])
    assert "| **senteval-7 avg** | | mean | 80.00 |" in table
    assert "- knn_sst2: k-NN" in table


@pytest.mark.parametrize("task", ["stsb", "sts12", "trec", "mr", "scifact", "cosqa"])
def test_every_built_in_task_says_how_its_numbers_are_made(tiny_bert, mini_data, task):
    from cpt_embed.eval import evaluate

    result = evaluate(str(tiny_bert), [task], mini_data, cache_dir=None).results[0]
    assert result.protocol
    if task == "cosqa":
        assert "MRR over 1,000 candidates" in result.protocol and "Table 7" in result.protocol
