"""Files to searchable chunks: code per function (tree-sitter), the code between functions
in line windows, Markdown per section, plain text per paragraph window, JSONL/Parquet per
record. Every chunk keeps its file and lines."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cpt_embed.data.code_pairs import function_spans, language_of
from cpt_embed.data.documents import RECORDS, documents_of, read_text_file

# Characters per text chunk and lines per window of code outside functions: about what
# fits the 256 tokens of small embedding models.
MAX_CHARS = 1500
CODE_WINDOW_LINES = 40
MAX_FILE_BYTES = 2_000_000
MARKDOWN = (".md", ".markdown", ".rst")
TEXT = (".txt", ".text")
_HEADING = re.compile(r"^(#{1,6}\s|\S.*\n[=\-~^]{3,}\s*$)", re.M)


@dataclass(frozen=True)
class Chunk:
    """One searchable piece of a file; lines are 1-based and inclusive."""

    path: str
    language: str
    start_line: int
    end_line: int
    text: str
    name: str = ""

    @property
    def embed_text(self) -> str:
        """What gets embedded: the text under a line naming its file (and function or
        section), which tells the model where a short piece of code or text belongs."""
        where = f"{self.path} {self.name}" if self.name else self.path
        return f"{where}\n{self.text}"


def kind_of(path: Path) -> str | None:
    """The chunker a file gets: a code language, markdown, text, records; None to skip."""
    name = path.name.lower().removesuffix(".gz")
    if language_of(path) is not None:
        return language_of(path)
    if name.endswith(MARKDOWN):
        return "markdown"
    if name.endswith(TEXT):
        return "text"
    if name.endswith(RECORDS):
        return "records"
    return None


def chunk_file(path: Path, relative: str, counts: Counter, field: str = "text") -> list[Chunk]:
    """The chunks of one file (none for unreadable, binary or unknown files, counted)."""
    kind = kind_of(path)
    if kind is None:
        counts["file_not_indexed"] += 1
        return []
    if kind == "records":
        return [
            Chunk(
                relative,
                "records",
                doc.line,
                doc.line,
                doc.text,
                name=doc.id.removeprefix(f"{relative}:"),
            )
            for doc in documents_of(path, relative, field, None, counts, MAX_FILE_BYTES)
            if doc.text.strip()
        ]
    text = read_text_file(path, counts, MAX_FILE_BYTES)
    if text is None or not text.strip():
        return []
    if kind == "markdown":
        return list(_sections(text, relative))
    if kind == "text":
        return list(_windows(text, relative, "text", 1))
    return _code(text, relative, kind)


def _code(text: str, relative: str, language: str) -> list[Chunk]:
    # tree-sitter counts lines at "\n" alone; splitlines() would also cut at \r, \f, \x1c ...
    lines = [line.removesuffix("\r") for line in text.removesuffix("\n").split("\n")]
    chunks, covered = [], 0
    for name, start, end in function_spans(text.encode("utf-8"), language):
        if start <= covered:
            continue
        chunks.extend(_code_gap(lines, covered + 1, start - 1, relative, language))
        body = "\n".join(lines[start - 1 : end])
        chunks.append(Chunk(relative, language, start, end, body, name))
        covered = end
    chunks.extend(_code_gap(lines, covered + 1, len(lines), relative, language))
    return chunks


def _code_gap(lines, first: int, last: int, relative: str, language: str) -> Iterator[Chunk]:
    """Windows of the lines between functions (imports, classes' headers, module code)."""
    start = first
    while start <= last:
        end = min(last, start + CODE_WINDOW_LINES - 1)
        body = "\n".join(lines[start - 1 : end])
        if body.strip():
            yield Chunk(relative, language, start, end, body)
        start = end + 1


def _sections(text: str, relative: str) -> Iterator[Chunk]:
    """Markdown/reST split at headings, each section in paragraph windows."""
    starts = sorted({0, *(m.start() for m in _HEADING.finditer(text))})
    for begin, end in zip(starts, [*starts[1:], len(text)], strict=True):
        section = text[begin:end]
        first_line = text.count("\n", 0, begin) + 1
        heading = section.strip().splitlines()[0].lstrip("#").strip() if section.strip() else ""
        for chunk in _windows(section, relative, "markdown", first_line):
            yield Chunk(
                chunk.path, chunk.language, chunk.start_line, chunk.end_line, chunk.text, heading
            )


def _windows(text: str, relative: str, language: str, first_line: int) -> Iterator[Chunk]:
    """Whole paragraphs packed into chunks of at most MAX_CHARS (a longer paragraph alone)."""
    lines = text.split("\n")
    paragraphs: list[tuple[int, int]] = []  # (first, last) line index
    start = None
    for i, line in enumerate(lines):
        if line.strip() and start is None:
            start = i
        elif not line.strip() and start is not None:
            paragraphs.append((start, i - 1))
            start = None
    if start is not None:
        paragraphs.append((start, len(lines) - 1))
    offsets = [0]  # of each line in text, and its end
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)
    group: list[tuple[int, int]] = []
    for para in paragraphs:
        # the window's text runs from its first paragraph to this one, blank lines included
        if group and offsets[para[1] + 1] - 1 - offsets[group[0][0]] > MAX_CHARS:
            yield _window_chunk(lines, group, relative, language, first_line)
            group = []
        group.append(para)
    if group:
        yield _window_chunk(lines, group, relative, language, first_line)


def _window_chunk(lines, group, relative: str, language: str, first_line: int) -> Chunk:
    first, last = group[0][0], group[-1][1]
    body = "\n".join(lines[first : last + 1]).strip()
    return Chunk(relative, language, first_line + first, first_line + last, body)
