"""Reading texts from .txt, .jsonl, .parquet (gzipped or not) and stdin, and writing vectors."""

from __future__ import annotations

import gzip
import io
import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cpt_embed.data.readers import read_texts
from cpt_embed.data.vectors import read_vectors, write_vectors
from cpt_embed.errors import InputError


def test_txt_keeps_every_line_including_blank_ones(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("first\n\nthird\r\nfourth", encoding="utf-8")
    data = read_texts(path)
    assert data.texts == ["first", "", "third", "fourth"]
    assert data.ids == ["1", "2", "3", "4"]


def test_gzipped_txt_and_jsonl(tmp_path):
    with gzip.open(tmp_path / "a.txt.gz", "wt", encoding="utf-8") as handle:
        handle.write("x\ny\n")
    assert read_texts(tmp_path / "a.txt.gz").texts == ["x", "y"]
    with gzip.open(tmp_path / "b.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"_id": "d1", "text": "hello"}) + "\n")
    data = read_texts(tmp_path / "b.jsonl.gz")
    assert (data.ids, data.texts) == (["d1"], ["hello"])


def test_jsonl_fields_and_ids(tmp_path):
    path = tmp_path / "c.jsonl"
    rows = [{"id": 7, "body": "a"}, {"id": 8, "body": "b"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    data = read_texts(path, field="body")
    assert (data.ids, data.texts) == (["7", "8"], ["a", "b"])
    with pytest.raises(InputError, match=r"line 1 has no field 'text' \(fields: body, id\)"):
        read_texts(path)
    with pytest.raises(InputError, match="no id field 'key'"):
        read_texts(path, field="body", id_field="key")


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"text": "ok"}\n{"text": broken\n', "line 2 is not valid JSON"),
        ('["a list"]\n', "line 1 is not a JSON object"),
        ('{"text": 5}\n', "field 'text' is int, not a string"),
    ],
)
def test_bad_jsonl_names_the_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        read_texts(path)


def test_parquet_column_and_errors(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"_id": ["p", "q"], "text": ["one", "two"]}), path)
    data = read_texts(path)
    assert (data.ids, data.texts) == (["p", "q"], ["one", "two"])
    with pytest.raises(InputError, match=r"no column 'body' \(columns: _id, text\)"):
        read_texts(path, field="body")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(path.read_bytes()[:40])
    with pytest.raises(InputError, match="not a readable Parquet file"):
        read_texts(broken)


def test_unreadable_inputs_fail_with_the_file_name(tmp_path):
    latin = tmp_path / "latin.txt"
    latin.write_bytes("ok\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="latin.txt: line 2 is not UTF-8"):
        read_texts(latin)
    with pytest.raises(InputError, match="no such file"):
        read_texts(tmp_path / "absent.txt")
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(InputError, match="unknown input format .csv"):
        read_texts(tmp_path / "x.csv")
    (tmp_path / "t.txt.gz").write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match="t.txt.gz"):
        read_texts(tmp_path / "t.txt.gz")


def test_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("α\nβ\n".encode())))
    assert read_texts("-").texts == ["α", "β"]


@pytest.mark.parametrize("suffix", [".npy", ".parquet"])
def test_vectors_round_trip(tmp_path, suffix):
    vectors = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    path = write_vectors(tmp_path / f"v{suffix}", vectors, ["a", "b", "c", "d", "e"])
    ids, loaded = read_vectors(path)
    np.testing.assert_array_equal(loaded, vectors)
    if suffix == ".parquet":
        assert ids == ["a", "b", "c", "d", "e"]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_vector_output_suffix_is_checked(tmp_path):
    with pytest.raises(InputError, match=r"must end in \.npy or \.parquet"):
        write_vectors(tmp_path / "v.csv", np.zeros((1, 2)))
