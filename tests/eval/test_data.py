"""The data loaders: real layouts load, and every broken layout names its file."""

from __future__ import annotations

import pytest

from cpt_embed.errors import InputError
from cpt_embed.eval.data import (
    Passage,
    find_data_dir,
    load_beir,
    load_classification,
    load_passages,
    load_qrels,
    load_sts,
)


def test_real_layouts_load_with_the_documented_counts(shared_data):
    assert len(load_sts(shared_data / "sts/stsb/test.tsv").scores) == 1379
    assert len(load_sts(shared_data / "sts/sickr/test.tsv").scores) == 4927
    mr = load_classification(shared_data / "classification/mr/train.jsonl")
    assert len(mr.labels) == 9594 and set(mr.folds) == set(range(1, 10))
    mrpc = load_classification(shared_data / "classification/mrpc/test.jsonl")
    assert mrpc.pairs is not None and len(mrpc.labels) == 1725
    scifact = load_beir(shared_data / "retrieval/scifact")
    assert len(scifact.corpus_ids) == 5183 and len(scifact.query_ids) == 300
    assert sum(len(v) for v in scifact.qrels.values()) == 339
    cisi = load_beir(shared_data / "retrieval/cisi")
    assert len(cisi.query_ids) == 76  # only the judged queries of the 111
    ruby = load_beir(shared_data / "code_search/codesearchnet_ruby")
    assert len(ruby.corpus_ids) == 2661 and len(ruby.query_ids) == 1261


def test_titles_are_joined_to_the_text(shared_data):
    cranfield = load_beir(shared_data / "retrieval/cranfield")
    first = cranfield.corpus_texts[0]
    assert first.startswith("experimental investigation of the aerodynamics")
    assert len(cranfield.query_ids) == 225


def test_missing_files_and_splits_are_named(tmp_path, monkeypatch):
    with pytest.raises(InputError, match=r"test\.tsv: missing"):
        load_sts(tmp_path / "sts/stsb/test.tsv")
    (tmp_path / "qrels").mkdir()
    with pytest.raises(InputError, match=r"qrels/dev\.tsv: missing"):
        load_beir(tmp_path, split="dev")
    with pytest.raises(InputError, match="not found; pass --data DIR"):
        find_data_dir(tmp_path / "nowhere")
    monkeypatch.setenv("CPT_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(InputError, match="elsewhere: not found"):
        find_data_dir()
    monkeypatch.setenv("CPT_DATA", str(tmp_path))
    assert find_data_dir() == tmp_path


@pytest.mark.parametrize(
    "content, message",
    [
        ("a\tb\tc\n", "header must be score, sentence1, sentence2"),
        ("score\tsentence1\tsentence2\n1.0\tonly two\n", "line 2 has 2 columns"),
        ("score\tsentence1\tsentence2\nhigh\ta\tb\n", "score 'high' is not a number"),
        ("score\tsentence1\tsentence2\n", "no sentence pairs"),
    ],
)
def test_bad_sts_files(tmp_path, content, message):
    path = tmp_path / "x.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        load_sts(path)


def test_bad_classification_and_qrels(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "a", "label": "pos"}\n', encoding="utf-8")
    with pytest.raises(InputError, match="label 'pos' is not an integer"):
        load_classification(path)
    path.write_text('{"txt": "a", "label": 1}\n', encoding="utf-8")
    with pytest.raises(InputError, match="record 1 has no field 'text'"):
        load_classification(path)
    qrels = tmp_path / "q.tsv"
    qrels.write_text("qid\tdocid\n", encoding="utf-8")
    with pytest.raises(InputError, match="header must be query-id, corpus-id, score"):
        load_qrels(qrels)


def test_qrels_must_point_at_known_queries_and_documents(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "x"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "y"}\n')
    (tmp_path / "qrels/test.tsv").write_text("query-id\tcorpus-id\tscore\nq2\td1\t1\n")
    with pytest.raises(InputError, match="query 'q2' is not in"):
        load_beir(tmp_path)
    (tmp_path / "qrels/test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td9\t1\n")
    with pytest.raises(InputError, match="document 'd9' is not in"):
        load_beir(tmp_path)


def test_passages_keep_the_title_apart_from_the_text(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"_id": 1, "title": "Cats", "text": "They purr."}\n\n'
        b'{"_id": "d2", "text": "Dogs bark."}\n'
    )
    first, second = load_passages(path)
    assert first == Passage("1", "They purr.", "Cats") and first.full_text == "Cats They purr."
    assert second == Passage("d2", "Dogs bark.") and second.full_text == "Dogs bark."
