"""`cpt eval --tasks PATH`: a folder of the user's in a layout of the evaluation data is a
task named after it, and gives the numbers of the built-in task that reads the same files."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from cpt_embed.cli import app
from cpt_embed.errors import InputError
from cpt_embed.eval import Task, evaluate, select_tasks


def _copy(mini_data, relative, target):
    shutil.copytree(mini_data / relative, target)
    return target


def _scores(report):
    return {r.task: r.scores for r in report.results}


def test_folders_score_as_the_built_in_tasks_they_copy(tiny_bert, mini_data, tmp_path):
    mine = tmp_path / "mine"
    collection = _copy(mini_data, "code_search/cosqa", mine / "my_collection")
    (collection / "task.json").write_text(json.dumps({"kind": "code"}))
    reviews = _copy(mini_data, "classification/trec", mine / "my_questions")
    similar = _copy(mini_data, "sts/stsb", mine / "my_pairs")
    built_in = evaluate(str(tiny_bert), ["cosqa", "trec", "stsb"], mini_data, cache_dir=None)
    chosen = select_tasks([str(collection), str(reviews), str(similar)])
    assert [t.name for t in chosen] == ["my_collection", "my_questions", "my_pairs"]
    assert [t.group for t in chosen] == ["code", "classification", "sts"]
    ours = evaluate(str(tiny_bert), chosen, mini_data, cache_dir=None)
    expected = _scores(built_in)
    got = _scores(ours)
    assert got["my_collection"] == pytest.approx(expected["cosqa"])
    assert "mrr_999_distractors" in got["my_collection"]
    assert got["my_questions"] == pytest.approx(expected["trec"])
    assert got["my_pairs"] == pytest.approx(expected["stsb"])
    assert ours.settings["tasks"] == ["my_collection", "my_questions", "my_pairs"]


def test_cli_mixes_a_folder_with_built_in_tasks(tiny_bert, mini_data, tmp_path):
    collection = _copy(mini_data, "retrieval/scifact", tmp_path / "papers")
    out = tmp_path / "report.json"
    done = CliRunner().invoke(
        app,
        ["eval", "-m", str(tiny_bert), "--tasks", f"stsb,{collection}", "--data", str(mini_data)]
        + ["-o", str(out), "--no-cache"],
    )
    assert done.exit_code == 0, done.output
    report = json.loads(out.read_text())
    tasks = [r["task"] for r in report["models"][0]["results"]]
    assert tasks == ["stsb", "papers"]


def test_python_api_from_folder(mini_data, tmp_path):
    task = Task.from_folder(_copy(mini_data, "classification/sst2", tmp_path / "reviews"))
    assert (task.name, task.group) == ("reviews", "classification")
    assert any(f.endswith("dev.jsonl") for f in task.files)  # a dev split: C chosen on it
    sts_file = Task.from_folder(mini_data / "sts" / "stsb" / "test.tsv")
    assert (sts_file.name, sts_file.group) == ("test", "sts")


@pytest.mark.parametrize(
    "layout, declared, named",
    [
        ({"corpus.jsonl": "{}\n"}, None, "queries.jsonl"),
        ({"train.jsonl": "{}\n"}, None, "test.jsonl"),
        ({"notes.md": "hi"}, None, "no evaluation data found"),
        ({"test.tsv": "x"}, {"kind": "retrieval"}, "corpus.jsonl"),
        ({"test.tsv": "x"}, {"kind": "words"}, "'words' is not one of"),
        ({"test.tsv": "x"}, {"colour": "red"}, "unknown key 'colour'"),
        ({"test.tsv": "x"}, {"sides": "query"}, "must map fields to"),
        ({"test.tsv": "x"}, {"metrics": "spearman"}, "must be a list"),
        ({"test.tsv": "x"}, {"metrics": ["ndcg@10"]}, "metrics of a sts task are spearman"),
        ({"test.tsv": "x"}, {"sides": {"queries": "query"}}, "sides of a sts task are text"),
        ({"train.jsonl": "", "test.jsonl": ""}, {"protocol": "dev"}, "dev.jsonl"),
    ],
)
def test_a_folder_that_fits_no_layout_is_one_line_naming_what_is_missing(
    tmp_path, layout, declared, named
):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, text in layout.items():
        (folder / name).write_text(text)
    if declared is not None:
        (folder / "task.json").write_text(json.dumps(declared))
    with pytest.raises(InputError, match=named) as caught:
        select_tasks(str(folder))
    assert "\n" not in str(caught.value)


def test_a_folder_named_as_a_chosen_task_is_refused(mini_data, tmp_path):
    collection = _copy(mini_data, "retrieval/scifact", tmp_path / "scifact")
    with pytest.raises(InputError, match="two tasks named 'scifact'"):
        select_tasks(f"scifact,{collection}")


def test_an_unknown_word_still_says_what_tasks_there_are():
    with pytest.raises(InputError, match="unknown task 'nosuch'.*a path to a folder"):
        select_tasks("nosuch")


def test_declared_metrics_choose_the_headline_and_what_is_reported(tiny_bert, mini_data, tmp_path):
    papers = _copy(mini_data, "retrieval/scifact", tmp_path / "papers")
    (papers / "task.json").write_text(json.dumps({"metrics": ["recall@100", "ndcg@10"]}))
    pairs = _copy(mini_data, "classification/mrpc", tmp_path / "paraphrases")
    (pairs / "task.json").write_text(json.dumps({"metrics": ["f1", "accuracy"]}))
    built_in = _scores(evaluate(str(tiny_bert), ["scifact", "mrpc"], mini_data, cache_dir=None))
    report = evaluate(
        str(tiny_bert), select_tasks([str(papers), str(pairs)]), mini_data, cache_dir=None
    )
    papers_result, pairs_result = report.results
    assert papers_result.metric == "recall@100"
    assert list(papers_result.scores) == ["recall@100", "ndcg@10"]
    assert papers_result.score == pytest.approx(built_in["scifact"]["recall@100"])
    assert pairs_result.metric == "f1"
    assert pairs_result.scores == pytest.approx(built_in["mrpc"])


def test_declared_sides_embed_each_field_on_its_side(tiny_bert, mini_data, tmp_path):
    from cpt_embed.model import Encoder

    encoder = Encoder.load(str(tiny_bert), delimiters={"query": ("[", "]"), "document": ("{", "}")})
    default = _copy(mini_data, "retrieval/scifact", tmp_path / "as_given")
    swapped = _copy(mini_data, "retrieval/scifact", tmp_path / "swapped")
    (swapped / "task.json").write_text(
        json.dumps({"sides": {"queries": "document", "corpus": "query"}})
    )
    pairs = _copy(mini_data, "sts/stsb", tmp_path / "documents_alike")
    (pairs / "task.json").write_text(json.dumps({"sides": {"text": "document"}}))
    tasks = select_tasks([str(default), str(swapped), str(pairs)])
    ours = _scores(evaluate(encoder, tasks, mini_data, cache_dir=None))
    queries_side = _scores(evaluate(encoder, ["stsb"], mini_data, cache_dir=None))
    documents_side = evaluate(
        encoder, ["stsb"], mini_data, cache_dir=None, symmetric_side="document"
    )
    assert ours["as_given"] != pytest.approx(ours["swapped"])
    assert ours["documents_alike"] == pytest.approx(_scores(documents_side)["stsb"])
    assert ours["documents_alike"] != pytest.approx(queries_side["stsb"])
