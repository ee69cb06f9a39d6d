"""The texts of evaluation sets that mining holds out, read with the evaluation loaders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bad_inputs import write

from cpt_embed.errors import InputError
from cpt_embed.eval.held_out import (
    EVAL_CODE_SETS,
    TEXT_KINDS,
    held_out_code,
    held_out_code_sets,
    held_out_text_sets,
    held_out_texts,
)

STS = "score\tsentence1\tsentence2\n4.5\tA cat sits.\tA cat is sitting.\n"


def _jsonl(path: Path, records: list[dict]) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in records))


def _beir(folder: Path) -> Path:
    _jsonl(
        folder / "corpus.jsonl",
        [
            {"_id": "d1", "title": "Cats", "text": "Cats purr."},
            {"_id": "d2", "title": "", "text": "Dogs bark."},
        ],
    )
    _jsonl(folder / "queries.jsonl", [{"_id": "q1", "text": "why do cats purr"}])
    write(folder / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return folder


def test_each_layout_gives_its_texts(tmp_path):
    beir = _beir(tmp_path / "beir")
    assert set(held_out_texts([beir])) == {
        "Cats Cats purr.",
        "Cats purr.",
        "Dogs bark.",
        "why do cats purr",
    }
    single = _jsonl(tmp_path / "mr.jsonl", [{"text": "fine film", "label": 1}])
    paired = _jsonl(tmp_path / "mrpc.jsonl", [{"text1": "a", "text2": "b", "label": 0}])
    sts = write(tmp_path / "sts.tsv", STS)
    assert list(held_out_texts([single, paired, sts])) == [
        "fine film",
        "a",
        "b",
        "A cat sits.",
        "A cat is sitting.",
    ]


def test_a_folder_gives_the_texts_of_the_sets_inside(tmp_path):
    folder = tmp_path / "sets"
    _beir(folder / "retrieval" / "cats")
    _jsonl(folder / "classification" / "train.jsonl", [{"text": "fine film", "label": 1}])
    write(folder / "classification" / "labels.json", '{"1": "positive"}')
    write(folder / "sts" / "test.tsv", STS)
    write(folder / "sts" / "upstream" / "readme.txt", "not a set")
    texts = set(held_out_texts([folder]))
    assert {"fine film", "A cat sits.", "why do cats purr"} <= texts
    assert "not a set" not in texts and '{"1": "positive"}' not in texts


def test_code_sets_pair_each_text_with_the_language(tmp_path):
    beir = _beir(tmp_path / "beir")
    items = list(held_out_code([(beir, "python"), (write(tmp_path / "s.tsv", STS), None)]))
    assert ("python", "why do cats purr") in items
    assert ("", "A cat sits.") in items


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("notes.txt", "text", "--exclude takes a BEIR folder, .jsonl, .tsv or a folder"),
        ("absent.jsonl", None, "no such file or folder"),
        ("no_label.jsonl", '{"text": "a"}\n', "record 1 has no field 'label'"),
        ("bad.tsv", "a\tb\tc\n", "header must be score, sentence1, sentence2"),
    ],
)
def test_a_set_that_is_none_is_named(name, content, message, tmp_path):
    path = tmp_path / name if content is None else write(tmp_path / name, content)
    with pytest.raises(InputError) as caught:
        list(held_out_texts([path]))
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


def test_a_beir_corpus_is_read_by_the_evaluation_loader(tmp_path):
    beir = _beir(tmp_path / "beir")
    _jsonl(beir / "corpus.jsonl", [{"_id": "d1", "text": 7}])
    with pytest.raises(InputError, match="corpus.jsonl: record 1 field 'text' is int"):
        list(held_out_texts([beir]))


def test_the_default_sets_of_a_data_dir(tmp_path):
    assert held_out_text_sets(None) == [] and held_out_code_sets(None) == []
    for kind in TEXT_KINDS:
        (tmp_path / kind / "one").mkdir(parents=True)
    write(tmp_path / "sts" / "stray.tsv", STS)
    (tmp_path / "code_search" / "cosqa").mkdir()
    assert held_out_text_sets(tmp_path) == sorted(
        [tmp_path / kind / "one" for kind in TEXT_KINDS] + [tmp_path / "code_search" / "cosqa"]
    )
    assert held_out_code_sets(tmp_path) == [(tmp_path / "code_search" / "cosqa", "python")]


def test_the_shared_data_sets(shared_data):
    sets = held_out_text_sets(shared_data)
    assert len(sets) == 25 and shared_data / "retrieval" / "scifact" in sets
    code = held_out_code_sets(shared_data)
    assert code == [(shared_data / rel, lang) for rel, lang in EVAL_CODE_SETS.items()]
