"""The `cpt eval` data loaders on bad files: each is an InputError naming the file (the CLI
prints it as one line `error: <file>: ...`, exit code 2), never a bare UnicodeDecodeError,
RecursionError or csv.Error, and never a wrong score from a NaN."""

from __future__ import annotations

from pathlib import Path

import pytest
from bad_inputs import DEEP_JSON, NOT_UTF8, deadline, one_line_error, unreadable, write
from typer.testing import CliRunner

from cpt_embed.cli import app
from cpt_embed.errors import InputError
from cpt_embed.eval.data import (
    find_data_dir,
    load_beir,
    load_classification,
    load_label_names,
    load_qrels,
    load_sts,
)

STS_HEADER = "score\tsentence1\tsentence2\n"
QRELS_HEADER = "query-id\tcorpus-id\tscore\n"

STS = {
    # file name: (content, part of the error message)
    "empty.tsv": (b"", "header must be"),
    "header_only.tsv": (STS_HEADER, "no sentence pairs"),
    "latin1.tsv": (STS_HEADER.encode() + "1\tcafé\tb\n".encode("latin-1"), "not UTF-8"),
    "utf16_bom.tsv": ((STS_HEADER + "1\ta\tb\n").encode("utf-16"), "not UTF-8"),
    "binary_blob.tsv": (NOT_UTF8["binary_blob"], "not UTF-8"),
    "huge_field.tsv": (STS_HEADER + "1\t" + "a" * 200_000 + "\tb\n", "not a TSV file"),
    "bad_score.tsv": (STS_HEADER + "high\ta\tb\n", "score 'high' is not a number"),
    "nan_score.tsv": (STS_HEADER + "nan\ta\tb\n", "score 'nan' is not a number"),
    "inf_score.tsv": (STS_HEADER + "inf\ta\tb\n", "score 'inf' is not a number"),
    "two_columns.tsv": (STS_HEADER + "1\ta\n", "has 2 columns"),
    "wrong_header.tsv": ("label\ttext1\ttext2\n1\ta\tb\n", "header must be"),
}
CLASSIFICATION = {
    "empty.jsonl": (b"", "no records"),
    "deep.jsonl": (DEEP_JSON, "nested too deeply"),
    "latin1.jsonl": (b'{"text": "caf\xe9", "label": 1}\n', "not UTF-8"),
    "utf16_bom.jsonl": ('{"text": "a", "label": 1}\n'.encode("utf-16"), "not UTF-8"),
    "binary_blob.jsonl": (NOT_UTF8["binary_blob"], "not UTF-8"),
    "invalid.jsonl": (b'{"text": "a", "label": 1\n', "not valid JSON"),
    "huge_int.jsonl": (b'{"text": "a", "label": 1' + b"0" * 5000 + b"}\n", "not valid JSON"),
    "list.jsonl": (b'["a", 1]\n', "not a JSON object"),
    "string.jsonl": (b'"label"\n', "not a JSON object"),
    "no_label.jsonl": (b'{"text": "a"}\n', "no field 'label'"),
    "string_label.jsonl": (b'{"text": "a", "label": "pos"}\n', "is not an integer"),
    "bool_label.jsonl": (b'{"text": "a", "label": true}\n', "is not an integer"),
    "float_label.jsonl": (b'{"text": "a", "label": 1.5}\n', "is not an integer"),
    "no_text.jsonl": (b'{"sentence": "a", "label": 1}\n', "no field 'text'"),
    "int_text.jsonl": (b'{"text": 5, "label": 1}\n', "'text' is int, not a string"),
    "null_text.jsonl": (b'{"text": null, "label": 1}\n', "'text' is NoneType"),
    "half_pairs.jsonl": (
        b'{"text1": "a", "text2": "b", "label": 1}\n{"text": "a", "label": 0}\n',
        "record 2 has no field 'text1'",
    ),
    "list_text2.jsonl": (b'{"text1": "a", "text2": ["b"], "label": 1}\n', "'text2' is list"),
}
LABELS = {
    "empty": (b"", "not a JSON object of label id -> name"),
    "list": (b"[1, 2]", "not a JSON object of label id -> name"),
    "deep": (DEEP_JSON, "not a JSON object of label id -> name"),
    "latin1": (b'{"0": "n\xe9gatif"}', "not UTF-8"),
    "word_keys": (b'{"neg": "negative"}', "not a JSON object of label id -> name"),
}
QRELS = {
    "empty.tsv": (b"", "header must be"),
    "latin1.tsv": (QRELS_HEADER.encode() + b"q\xe9\td\t1\n", "not UTF-8"),
    "bad_score.tsv": (QRELS_HEADER + "q\td\tyes\n", "score 'yes' is not a number"),
    "inf_score.tsv": (QRELS_HEADER + "q\td\tinf\n", "score 'inf' is not a number"),
    "nan_score.tsv": (QRELS_HEADER + "q\td\tnan\n", "score 'nan' is not a number"),
    "two_columns.tsv": (QRELS_HEADER + "q\td\n", "has 2 columns"),
}


def _raises_naming(loader, path: Path, message: str) -> None:
    with deadline(60), pytest.raises(InputError) as caught:
        loader(path)
    assert str(path) in str(caught.value) and message in str(caught.value), str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", sorted(STS))
def test_load_sts_names_the_bad_file(name, tmp_path):
    _raises_naming(load_sts, write(tmp_path / name, STS[name][0]), STS[name][1])


@pytest.mark.parametrize("name", sorted(CLASSIFICATION))
def test_load_classification_names_the_bad_file(name, tmp_path):
    data, message = CLASSIFICATION[name]
    _raises_naming(load_classification, write(tmp_path / name, data), message)


@pytest.mark.parametrize("name", sorted(LABELS))
def test_load_label_names_names_the_bad_file(name, tmp_path):
    path = write(tmp_path / name / "labels.json", LABELS[name][0])
    with pytest.raises(InputError) as caught:
        load_label_names(path.parent)
    assert str(path) in str(caught.value) and LABELS[name][1] in str(caught.value)


@pytest.mark.parametrize("name", sorted(QRELS))
def test_load_qrels_names_the_bad_file(name, tmp_path):
    _raises_naming(load_qrels, write(tmp_path / name, QRELS[name][0]), QRELS[name][1])


@pytest.mark.parametrize(
    "corpus, message",
    [
        (b'{"_id": "d", "text": 7}\n', "'text' is int, not a string"),
        (b'{"_id": "d"}\n', "no field 'text'"),
        (b'{"_id": "d", "text": "caf\xe9"}\n', "not UTF-8"),
        (DEEP_JSON, "nested too deeply"),
    ],
    ids=["int_text", "no_text", "latin1", "deep"],
)
def test_load_beir_names_the_bad_corpus(corpus, message, tmp_path):
    write(tmp_path / "qrels" / "test.tsv", QRELS_HEADER + "q\td\t1\n")
    write(tmp_path / "queries.jsonl", b'{"_id": "q", "text": "what"}\n')
    corpus_path = write(tmp_path / "corpus.jsonl", corpus)
    _raises_naming(load_beir, tmp_path, message)
    assert str(corpus_path) in str(pytest.raises(InputError, load_beir, tmp_path).value)


@pytest.mark.parametrize("what", ["self_link", "unreadable", "folder"])
def test_a_data_file_that_cannot_be_opened_is_named(what, tmp_path):
    path = tmp_path / "test.tsv"
    if what == "self_link":
        path.symlink_to(path)
        message = "symlink"
    elif what == "unreadable":
        unreadable(write(path, STS_HEADER + "1\ta\tb\n"))
        message = "cannot read"
    else:
        path.mkdir()
        message = "missing"
    _raises_naming(load_sts, path, message)


def test_data_dir_that_is_a_file_or_missing(tmp_path, monkeypatch):
    write(tmp_path / "file", "x")
    with pytest.raises(InputError, match="file: not a folder; pass --data DIR"):
        find_data_dir(tmp_path / "file")
    monkeypatch.setenv("CPT_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="nowhere: not found; pass --data DIR or set CPT_DATA"):
        find_data_dir()


@pytest.mark.parametrize("name", ["latin1.tsv", "nan_score.tsv", "huge_field.tsv"])
def test_cpt_eval_on_a_bad_data_file_is_one_line(name, tiny_bert, tmp_path):
    path = write(tmp_path / "data" / "sts" / "stsb" / "test.tsv", STS[name][0])
    args = ["eval", "-m", str(tiny_bert), "--tasks", "stsb", "--data", str(tmp_path / "data")]
    args += ["--no-compile", "--no-cache", "-o", str(tmp_path / "report.json")]
    with deadline(120):
        result = CliRunner().invoke(app, args)
    assert STS[name][1] in one_line_error(result, str(path))
    assert not (tmp_path / "report.json").exists()
