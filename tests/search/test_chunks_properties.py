"""Properties of the chunker on generated files: chunks hold the lines they name, in order,
without overlap or empty chunks, cover every non-blank line, keep to the size bound, and
come out the same each time; no text crashes it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cpt_embed.search.chunks import CODE_WINDOW_LINES, MAX_CHARS, Chunk, chunk_file

SETTINGS = settings(max_examples=150, deadline=None, database=None)

# Characters that some line splitters (str.splitlines) take for line ends, and NUL.
ODD = ["\r", "\r\n", "\f", "\x0b", "\x1c", "\x85", "\u2028", "\u2029", "\t", "\0", " "]
CODE_LINES = [
    "def f(a):",
    "    return a",
    "class A:",
    "    def g(self):",
    "        pass",
    "@decorator",
    '    """A docstring."""',
    "x = 1",
    "function h(b) {",
    "  return b;",
    "}",
    "const k = () => {",
    "/** Doc comment. */",
    "func F() int {",
    "fn r() -> i32 {",
    "/// Rust doc",
    "def ruby_method",
    "end",
    "",
]
MARKDOWN_LINES = ["# Title", "## Section", "Setext", "======", "---", "text line", "", "- item"]
any_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=80)
line = st.one_of(
    any_text,
    st.sampled_from(CODE_LINES + MARKDOWN_LINES + ODD),
    st.builds(lambda n: "x" * n, st.integers(500, 4000)),  # one very long word
    st.builds(lambda n: " " * n, st.integers(500, 2000)),  # a long blank line
)
document = st.lists(line, max_size=60).map("\n".join)
CODE_SUFFIXES = [".py", ".js", ".ts", ".go", ".java", ".rb", ".php", ".rs"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """One folder for every generated file (each example overwrites its file)."""
    return tmp_path_factory.mktemp("chunks")


def _chunks(folder: Path, name: str, text: str) -> list[Chunk]:
    path = folder / name
    path.write_bytes(text.encode("utf-8"))
    chunks = chunk_file(path, name, Counter())
    assert chunk_file(path, name, Counter()) == chunks  # deterministic
    return chunks


def _file_lines(text: str) -> list[str]:
    """The lines of a file as editors and tree-sitter number them: cut at "\\n" alone (a
    byte order mark is no part of the text)."""
    return text.removeprefix("\ufeff").split("\n")


def _binary(text: str) -> bool:
    return b"\0" in text.encode("utf-8")[:8192]


def _check_layout(chunks: list[Chunk], lines: list[str], name: str) -> None:
    """In file order, disjoint, within the file, non-empty, every non-blank line in one."""
    previous_end = 0
    for chunk in chunks:
        assert chunk.path == name
        assert previous_end < chunk.start_line <= chunk.end_line <= len(lines)
        assert chunk.text.strip()
        previous_end = chunk.end_line
    covered = {n for c in chunks for n in range(c.start_line, c.end_line + 1)}
    blank = {n for n, text in enumerate(lines, 1) if not text.strip()}
    assert set(range(1, len(lines) + 1)) - covered <= blank


@SETTINGS
@given(text=document, suffix=st.sampled_from(CODE_SUFFIXES))
@example(text="import os\n\f\ndef f():\n    return 1\n", suffix=".py")  # a form feed
def test_code_chunks_are_the_lines_they_name(folder, text, suffix):
    chunks = _chunks(folder, f"code{suffix}", text)
    if _binary(text) or not text.strip():
        assert chunks == []
        return
    lines = [line.removesuffix("\r") for line in _file_lines(text.removesuffix("\n"))]
    _check_layout(chunks, lines, f"code{suffix}")
    for chunk in chunks:
        assert chunk.text == "\n".join(lines[chunk.start_line - 1 : chunk.end_line])
        if not chunk.name:  # code between functions comes in windows
            assert chunk.end_line - chunk.start_line < CODE_WINDOW_LINES


@SETTINGS
@given(text=document, suffix=st.sampled_from([".txt", ".md", ".rst"]))
@example(text="a\n\n" + " " * 1500 + "\nb", suffix=".txt")  # a long blank line between
def test_text_chunks_are_whole_paragraphs_within_the_size_bound(folder, text, suffix):
    chunks = _chunks(folder, f"doc{suffix}", text)
    if _binary(text) or not text.strip():
        assert chunks == []
        return
    lines = _file_lines(text)
    _check_layout(chunks, lines, f"doc{suffix}")
    for chunk in chunks:
        inside = lines[chunk.start_line - 1 : chunk.end_line]
        assert chunk.text == "\n".join(inside).strip()
        assert inside[0].strip() and inside[-1].strip()  # starts and ends a paragraph
        one_paragraph = all(line.strip() for line in inside)
        assert len(chunk.text) <= MAX_CHARS or one_paragraph
        assert "\n" not in chunk.name


@SETTINGS
@given(
    texts=st.lists(st.one_of(any_text, st.sampled_from(["", " ", "\n"])), max_size=10),
    bad=st.sets(st.integers(0, 12)),
)
def test_record_chunks_are_the_non_blank_records_at_their_lines(folder, texts, bad):
    """One chunk a record with text, numbered by its line in the file; blank and broken
    lines are skipped but still count as lines."""
    rows, expected = [], []
    for text in texts:
        while len(rows) in bad:
            rows.append("" if len(rows) % 2 else "{not json")
        rows.append(json.dumps({"id": f"r{len(rows)}", "text": text}))
        if text.strip():
            expected.append((len(rows), f"r{len(rows) - 1}", text))
    chunks = _chunks(folder, "records.jsonl", "\n".join(rows))
    assert [(c.start_line, c.name, c.text) for c in chunks] == expected
    assert all(c.start_line == c.end_line and c.language == "records" for c in chunks)
