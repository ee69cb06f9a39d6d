"""experiments/cosqa_docstrings.py: CoSQA-style code with its docstrings removed, and the two
scores of a model on a small BEIR folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments"))

import cosqa_docstrings  # noqa: E402

METHOD = 'def paste(self, n):\n        """\n        Writes n.\n        """\n        return n + 1'
NESTED = (
    'def outer(a):\n    """Outer doc."""\n\n    def inner(b):\n        """Inner doc."""\n'
    "        return b\n\n    return inner(a)"
)


def test_the_leading_functions_docstring_is_removed_and_nothing_else():
    assert cosqa_docstrings.without_docstring(METHOD) == "def paste(self, n):\n        return n + 1"
    stripped = cosqa_docstrings.without_docstring(NESTED)
    assert "Outer doc." not in stripped and '"""Inner doc."""' in stripped
    assert stripped.startswith("def outer(a):") and stripped.endswith("return inner(a)")


def test_code_without_a_docstring_or_that_does_not_parse_is_left_as_given():
    plain = "def add(a, b):\n    return a + b"
    assert cosqa_docstrings.without_docstring(plain) == plain
    broken = 'def add(a, b:\n    """Adds."""\n    return a +'
    assert cosqa_docstrings.without_docstring(broken) == broken
    assert cosqa_docstrings.without_docstring("x = 1") == "x = 1"


def _beir(folder: Path, corpus: dict[str, str]) -> Path:
    folder.mkdir()
    (folder / "qrels").mkdir()
    rows = [{"_id": i, "title": "", "text": t} for i, t in corpus.items()]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    queries = [{"_id": "q1", "text": "paste n"}, {"_id": "q2", "text": "add two numbers"}]
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tc1\t1\nq2\tc2\t1\n")
    return folder


def test_both_scores_for_each_model(tmp_path, tiny_bert):
    corpus = {"c1": METHOD, "c2": "def add(a, b):\n    return a + b", "c3": NESTED}
    folder = _beir(tmp_path / "set", corpus)
    out = tmp_path / "result.json"
    args = ["--models", str(tiny_bert), "--data", str(folder), "--max-length", "64"]
    result = cosqa_docstrings.main([*args, "--json", str(out)])
    assert json.loads(out.read_text()) == result
    assert (result["documents_changed"], result["documents"]) == (2, 3)
    row = result["models"][str(tiny_bert)]
    assert all(0 <= v <= 100 for v in row.values())
    # without docstrings to remove, both figures are the same ranking
    plain = _beir(tmp_path / "plain", {"c1": "def paste(n):\n    return n", "c2": "x = 1"})
    same = cosqa_docstrings.main(["--models", str(tiny_bert), "--data", str(plain)])
    assert same["documents_changed"] == 0
    figures = same["models"][str(tiny_bert)]
    assert figures["as given"] == figures["docstrings removed"]
