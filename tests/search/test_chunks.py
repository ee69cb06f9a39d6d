"""Chunking: code per function with its lines, the rest in windows, Markdown per section,
text per paragraph window, records one each."""

from __future__ import annotations

import json
from collections import Counter

from cpt_embed.search.chunks import MAX_CHARS, chunk_file

PYTHON = '''"""A module."""
import json


@decorator
def parse(text):
    """Parse JSON."""
    def inner():
        return 1
    return json.loads(text)


class Thing:
    """A thing."""

    def method(self):
        return 2


VALUE = parse("[1]")
'''


def test_python_functions_keep_their_lines_and_the_rest_is_windowed(tmp_path):
    path = tmp_path / "mod.py"
    path.write_text(PYTHON)
    chunks = chunk_file(path, "repo/mod.py", Counter())
    named = {c.name: c for c in chunks if c.name}
    assert set(named) == {"parse", "method"}  # inner is part of parse
    assert (named["parse"].start_line, named["parse"].end_line) == (5, 10)
    assert named["parse"].text.startswith("@decorator\ndef parse(text):")
    assert named["parse"].embed_text == "repo/mod.py parse\n" + named["parse"].text
    assert (named["method"].start_line, named["method"].end_line) == (16, 17)
    lines = PYTHON.splitlines()
    for chunk in chunks:
        assert chunk.path == "repo/mod.py" and chunk.language == "python"
        assert chunk.text == "\n".join(lines[chunk.start_line - 1 : chunk.end_line])
    covered = sorted(i for c in chunks for i in range(c.start_line, c.end_line + 1))
    assert covered == list(range(1, len(lines) + 1))  # every line once


def test_markdown_sections_and_text_windows(tmp_path):
    md = tmp_path / "guide.md"
    md.write_text("# Install\n\npip install it\n\n## Use\n\ncall it\n\nthen more\n")
    chunks = chunk_file(md, "guide.md", Counter())
    assert [(c.name, c.start_line) for c in chunks] == [("Install", 1), ("Use", 5)]
    assert chunks[1].text == "## Use\n\ncall it\n\nthen more"
    txt = tmp_path / "notes.txt"
    paragraphs = [f"paragraph {i} " + "word " * 60 for i in range(20)]
    txt.write_text("\n\n".join(paragraphs))
    windows = chunk_file(txt, "notes.txt", Counter())
    assert len(windows) > 1 and all(len(c.text) <= MAX_CHARS for c in windows)
    assert "".join(c.text for c in windows).count("paragraph") == 20


def test_records_unknown_and_binary_files(tmp_path):
    records = tmp_path / "corpus.jsonl"
    records.write_text("\n".join(json.dumps({"id": f"d{i}", "text": f"doc {i}"}) for i in range(3)))
    chunks = chunk_file(records, "corpus.jsonl", Counter())
    assert [(c.name, c.start_line, c.text) for c in chunks] == [
        ("d0", 1, "doc 0"),
        ("d1", 2, "doc 1"),
        ("d2", 3, "doc 2"),
    ]
    counts: Counter = Counter()
    (tmp_path / "image.png").write_bytes(b"\x89PNG\0\0")
    (tmp_path / "blob.py").write_bytes(b"\0\0binary")
    assert chunk_file(tmp_path / "image.png", "image.png", counts) == []
    assert chunk_file(tmp_path / "blob.py", "blob.py", counts) == []
    assert counts["file_not_indexed"] == 1 and counts["file_binary"] == 1
