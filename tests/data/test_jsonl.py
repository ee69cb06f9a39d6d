"""The one JSONL reader: numbered UTF-8 lines -> JSON objects, and each bad line an
InputError naming the file and the line."""

from __future__ import annotations

import gzip
import io

import pytest
from bad_inputs import DEEP_JSON, NOT_UTF8, gzip_truncated, write

from cpt_embed.data.jsonl import json_objects, read_jsonl, utf8_lines
from cpt_embed.errors import InputError


def test_objects_come_with_their_line_numbers_and_blank_lines_are_skipped(tmp_path):
    path = write(tmp_path / "a.jsonl", b'\xef\xbb\xbf{"a": 1}\n\n  \r\n{"b": "\xc3\xa9"}\r\n')
    assert list(read_jsonl(path)) == [(1, {"a": 1}), (4, {"b": "é"})]
    zipped = write(tmp_path / "a.jsonl.gz", gzip.compress(path.read_bytes()))
    assert list(read_jsonl(zipped)) == list(read_jsonl(path))


def test_lines_of_a_handle_and_objects_of_numbered_lines():
    handle = io.BytesIO(b"\xef\xbb\xbffirst\r\nsecond")
    assert list(utf8_lines(handle, "h")) == [(1, "first"), (2, "second")]
    assert list(json_objects([(7, "{}"), (8, " "), (9, '{"x": []}')], "h")) == [
        (7, {}),
        (9, {"x": []}),
    ]


BAD_LINES = {
    # content: part of the error message, after "<file>: "
    b'{"a": 1}\n{"a": \n': "line 2 is not valid JSON (Expecting value at column 7)",
    DEEP_JSON: "line 1 is not valid JSON (maximum recursion depth exceeded: nested too deeply",
    b'{"a": 1' + b"0" * 5000 + b"}\n": "line 1 is not valid JSON (Exceeds the limit",
    b'{"a": "x\0y"}\n': "line 1 is not valid JSON (Invalid control character at column 9); "
    "it holds a NUL byte",
    b"[1, 2]\n": "line 1 is not a JSON object",
    b'"text"\n': "line 1 is not a JSON object",
    b'{}\n{"a": "caf\xe9"}\n': "line 2 is not UTF-8 (invalid continuation byte)",
    NOT_UTF8["binary_blob"]: "line 1 is not UTF-8",
    '{"a": 1}\n'.encode("utf-16"): "UTF-16 or UTF-32 text, not UTF-8",
}


@pytest.mark.parametrize("content", list(BAD_LINES), ids=range(len(BAD_LINES)))
def test_a_bad_line_is_an_error_naming_the_file_and_line(content, tmp_path):
    path = write(tmp_path / "bad.jsonl", content)
    with pytest.raises(InputError) as caught:
        list(read_jsonl(path))
    assert str(caught.value).startswith(f"{path}: {BAD_LINES[content]}"), str(caught.value)
    assert "\n" not in str(caught.value)


def test_numbered_lines_name_their_source_in_errors():
    with pytest.raises(InputError, match=r"^f\.jsonl: line 3 is not valid JSON .*fix or drop"):
        list(json_objects([(3, "{")], "f.jsonl"))


# damaged deflate data after an intact header: zlib.error, neither OSError nor EOFError
GZIP_CORRUPT = bytes(
    byte ^ 0xFF if 20 <= i < 60 else byte
    for i, byte in enumerate(gzip.compress(b'{"a": "hello world"}\n' * 10_000))
)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("truncated.jsonl.gz", gzip_truncated(), "cannot read (Compressed file ended"),
        ("not_gzip.jsonl.gz", b'{"a": 1}\n', "cannot read (Not a gzipped file"),
        ("corrupt.jsonl.gz", GZIP_CORRUPT, "cannot read (Error -3 while decompressing"),
    ],
)
def test_a_file_that_cannot_be_read_is_named(name, content, message, tmp_path):
    path = write(tmp_path / name, content)
    with pytest.raises(InputError) as caught:
        list(read_jsonl(path))
    assert str(caught.value).startswith(f"{path}: {message}"), str(caught.value)
    with pytest.raises(InputError, match="cannot read .No such file or directory"):
        list(read_jsonl(tmp_path / "absent.jsonl"))


def test_a_reader_that_skips_bad_lines_sees_each_error_and_keeps_the_rest():
    content = b'{"a": 1}\n{"a": \n[1]\n{"b": "caf\xe9"}\n\n{"c": 3}\n'
    errors: list[str] = []
    lines = utf8_lines(io.BytesIO(content), "f", on_bad_line=lambda e: errors.append(str(e)))
    objects = list(json_objects(lines, "f", on_bad_line=lambda e: errors.append(str(e))))
    assert objects == [(1, {"a": 1}), (6, {"c": 3})]
    assert [e.split(" (")[0].split(";")[0] for e in errors] == [
        "f: line 2 is not valid JSON",
        "f: line 3 is not a JSON object",
        "f: line 4 is not UTF-8",
    ]
