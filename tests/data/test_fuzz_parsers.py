"""Fuzzing the corpus readers with generated files: .txt, .jsonl and .parquet, gzipped or
not, whole, damaged or nonsense. `read_texts` gives texts or raises the project's
InputError; `documents_of` skips and counts what it cannot read and never raises. Well-formed
records come out exactly. The quick tests run in `make test`; the `slow` ones (FUZZ_EXAMPLES
each, env CPT_FUZZ_EXAMPLES) in `make test-all`."""

from __future__ import annotations

import gzip
import io
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cpt_embed.data.documents import documents_of
from cpt_embed.data.readers import read_texts
from cpt_embed.errors import CptError

FUZZ_EXAMPLES = int(os.environ.get("CPT_FUZZ_EXAMPLES", "4000"))
_COMMON = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow]}
QUICK = settings(max_examples=100, **_COMMON)
SLOW = settings(max_examples=FUZZ_EXAMPLES, **_COMMON)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
texts = st.text(max_size=40)  # lone surrogates included: JSON can escape them
record = st.fixed_dictionaries(
    {"text": texts}, optional={"id": json_values, "_id": json_values, "body": json_values}
)


def _json_line(value) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


line = st.one_of(
    record.map(_json_line),
    json_values.map(_json_line),
    st.binary(max_size=40).filter(lambda b: b"\n" not in b),
    st.sampled_from(
        [
            b"",
            b"  \t",
            b"\r",
            b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark
            b"\xff\xfe{\x00}\x00",  # UTF-16
            b'{"text": "a\x00b"}',
            b'{"text": "\\u0000 \\ud800"}',
            b'{"text": "caf\xe9"}',  # latin-1
            b'{"text": NaN, "id": Infinity}',
            b'{"text": "x", "text": 5}',
        ]
    ),
    st.integers(1, 200_000).map(lambda n: b"[" * n + b"]" * n),  # nested past the stack
    st.integers(4000, 6000).map(lambda n: b'{"text": "x", "n": ' + b"7" * n + b"}"),
)
line_files = st.tuples(st.lists(line, max_size=12), st.sampled_from([b"\n", b"\r\n"])).map(
    lambda lines_end: lines_end[1].join(lines_end[0])
)


@st.composite
def parquet_files(draw) -> bytes:
    """A Parquet file of random columns (names may repeat, types may not be text), or such a
    file with bytes changed or cut off."""
    rows = draw(st.integers(0, 4))
    kinds = {
        "string": (pa.string(), st.one_of(st.none(), st.text(max_size=10))),
        "large_string": (pa.large_string(), st.text(max_size=10)),
        "int": (pa.int64(), st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))),
        "binary": (pa.binary(), st.binary(max_size=10)),
        "list": (pa.list_(pa.string()), st.lists(st.text(max_size=3), max_size=2)),
        "null": (pa.null(), st.none()),
    }
    columns = draw(
        st.lists(
            st.tuples(st.sampled_from(["text", "id", "_id", "body"]), st.sampled_from(list(kinds))),
            max_size=4,
        )
    )
    arrays = [
        pa.array(draw(st.lists(kinds[kind][1], min_size=rows, max_size=rows)), kinds[kind][0])
        for _, kind in columns
    ]
    table = pa.Table.from_arrays(arrays, names=[name for name, _ in columns])
    if any(a.type == pa.string() for a in arrays) and draw(st.booleans()):
        table = table.cast(
            pa.schema(
                [
                    pa.field(f.name, pa.dictionary(pa.int32(), pa.string()))
                    if f.type == pa.string()
                    else f
                    for f in table.schema
                ]
            )
        )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    data = bytearray(buffer.getvalue())
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@st.composite
def corpus_files(draw) -> tuple[str, bytes]:
    """(file name, bytes): any supported suffix, the content made for it or not, and for
    .gz whole, cut off or not gzip at all."""
    suffix = draw(st.sampled_from([".txt", ".jsonl", ".parquet", ".md"]))
    data = draw(
        st.one_of(parquet_files(), st.binary(max_size=200))
        if suffix == ".parquet"
        else st.one_of(line_files, st.binary(max_size=200))
    )
    if suffix != ".parquet" and draw(st.booleans()):
        suffix += ".gz"
        packed = gzip.compress(data)
        data = draw(st.sampled_from([packed, packed[: len(packed) // 2], data]))
    return f"input{suffix}", data


def _write(folder: str, name: str, data: bytes) -> Path:
    path = Path(folder) / name
    path.write_bytes(data)
    return path


def _check_read_texts(name: str, data: bytes, field: str, id_field: str | None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        try:
            got = read_texts(_write(folder, name, data), field, id_field)
        except CptError:
            return
    assert len(got.ids) == len(got.texts)
    assert all(isinstance(t, str) for t in got.texts)
    assert all(isinstance(i, str) for i in got.ids)


def _check_documents_of(name: str, data: bytes, field: str, id_field: str | None) -> None:
    counts: Counter = Counter()
    with tempfile.TemporaryDirectory() as folder:
        documents = list(
            documents_of(_write(folder, name, data), name, field, id_field, counts, 10_000)
        )
    for document in documents:
        assert isinstance(document.text, str) and document.id.startswith(name)
        assert document.line >= 1
    assert all(n >= 0 for n in counts.values())


fields = st.sampled_from(["text", "body"])
id_fields = st.sampled_from([None, "id", "body"])


def _parquet_not_utf8() -> bytes:
    """A Parquet file whose text column holds bytes that are not UTF-8."""
    buffer = io.BytesIO()
    table = pa.table({"text": ["\u00e9\u00e9", "ok"]})
    pq.write_table(table, buffer, compression="none", use_dictionary=False)
    return buffer.getvalue().replace("\u00e9\u00e9".encode(), b"\xff\xfe\xfd\xfc")


# Inputs that once escaped as ValueError (a number past 4300 digits) or UnicodeDecodeError.
HUGE_NUMBER = ("input.jsonl", b'{"text": "x", "n": ' + b"7" * 5000 + b"}")
NOT_UTF8 = ("input.parquet", _parquet_not_utf8())


@QUICK
@given(file=corpus_files(), field=fields, id_field=id_fields)
@example(file=HUGE_NUMBER, field="text", id_field=None)
@example(file=NOT_UTF8, field="text", id_field=None)
def test_read_texts_reads_or_raises_input_error(file, field, id_field):
    _check_read_texts(*file, field, id_field)


@QUICK
@given(file=corpus_files(), field=fields, id_field=id_fields)
@example(file=HUGE_NUMBER, field="text", id_field=None)
@example(file=NOT_UTF8, field="text", id_field=None)
def test_documents_of_never_raises(file, field, id_field):
    _check_documents_of(*file, field, id_field)


@pytest.mark.slow
@SLOW
@given(file=corpus_files(), field=fields, id_field=id_fields)
def test_fuzz_read_texts(file, field, id_field):
    _check_read_texts(*file, field, id_field)


@pytest.mark.slow
@SLOW
@given(file=corpus_files(), field=fields, id_field=id_fields)
def test_fuzz_documents_of(file, field, id_field):
    _check_documents_of(*file, field, id_field)


@QUICK
@given(
    records=st.lists(
        st.fixed_dictionaries(
            {"text": st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=30)},
            optional={"id": st.integers() | st.text(max_size=5)},
        ),
        max_size=8,
    ),
    blank=st.sets(st.integers(0, 10)),
    gz=st.booleans(),
)
def test_well_formed_jsonl_comes_out_exactly(records, blank, gz):
    """Every record in order with its id (else its row among the records), blank lines
    skipped; the corpus reader numbers each document by its line."""
    rows: list[bytes] = []
    lines = []
    for row in records:
        while len(rows) in blank:
            rows.append(b"")
        rows.append(_json_line(row))
        lines.append(len(rows))
    data = b"\n".join(rows)
    name = "records.jsonl.gz" if gz else "records.jsonl"
    expected_ids = [str(r["id"]) if "id" in r else str(i) for i, r in enumerate(records)]
    with tempfile.TemporaryDirectory() as folder:
        path = _write(folder, name, gzip.compress(data) if gz else data)
        got = read_texts(path)
        documents = list(documents_of(path, name, "text", None, Counter(), 10_000))
    assert got.texts == [r["text"] for r in records]
    assert got.ids == expected_ids
    assert [(d.text, d.line) for d in documents] == [
        (r["text"], n) for r, n in zip(records, lines, strict=True)
    ]
