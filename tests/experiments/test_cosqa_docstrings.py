"""experiments/cosqa_docstrings.py: CoSQA-style code with its docstrings removed, and the two
scores of a model on a small BEIR folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments"))

import cosqa_docstrings  # noqa: E402
import pytest  # noqa: E402

from cpt_embed.eval.context import Task  # noqa: E402
from cpt_embed.eval.suite import evaluate  # noqa: E402
from cpt_embed.model.encoder import Encoder  # noqa: E402

METHOD = 'def paste(self, n):\n        """\n        Writes n.\n        """\n        return n + 1'
NESTED = (
    'def outer(a):\n    """Outer doc."""\n\n    def inner(b):\n        """Inner doc."""\n'
    "        return b\n\n    return inner(a)"
)
NESTED_STRIPPED = (
    'def outer(a):\n\n    def inner(b):\n        """Inner doc."""\n        return b\n\n'
    "    return inner(a)"
)


def test_the_leading_functions_docstring_is_removed_and_nothing_else():
    assert cosqa_docstrings.without_docstring(METHOD) == "def paste(self, n):\n        return n + 1"
    assert cosqa_docstrings.without_docstring(NESTED) == NESTED_STRIPPED  # the inner's kept


def test_code_that_is_not_one_whole_documented_function_is_left_as_given():
    plain = "def add(a, b):\n    return a + b"
    assert cosqa_docstrings.without_docstring(plain) == plain
    broken = 'def add(a, b:\n    """Adds."""\n    return a +'
    assert cosqa_docstrings.without_docstring(broken) == broken
    assert cosqa_docstrings.without_docstring("x = 1") == "x = 1"
    trailing = METHOD + "\n\nprint(paste(None, 1))"  # removing would drop the last line
    assert cosqa_docstrings.without_docstring(trailing) == trailing
    decorated = "@cache\n" + METHOD
    assert cosqa_docstrings.without_docstring(decorated) == decorated


def _beir(folder: Path, corpus: dict[str, str]) -> Path:
    folder.mkdir()
    (folder / "qrels").mkdir()
    rows = [{"_id": i, "title": "", "text": t} for i, t in corpus.items()]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    queries = [{"_id": "q1", "text": "paste n"}, {"_id": "q2", "text": "add two numbers"}]
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tc1\t1\nq2\tc2\t1\n")
    return folder


def test_each_model_scored_by_the_suite_on_the_set_and_on_it_without_docstrings(
    tmp_path, tiny_bert
):
    corpus = {"c1": METHOD, "c2": "def add(a, b):\n    return a + b", "c3": NESTED}
    folder = _beir(tmp_path / "set", corpus)
    out, figures = tmp_path / "out", tmp_path / "result.json"
    args = ["--models", str(tiny_bert), "--labels", "tiny", "--data", str(folder)]
    result = cosqa_docstrings.main(
        [*args, "--out", str(out), "--max-length", "64", "--json", str(figures)]
    )
    assert json.loads(figures.read_text()) == result
    assert (result["documents_changed"], result["documents"]) == (2, 3)
    written = out / cosqa_docstrings.STRIPPED
    assert json.loads((written / "task.json").read_text())["kind"] == "code"
    for name in ("queries.jsonl", "qrels/test.tsv"):
        assert (written / name).read_text() == (folder / name).read_text()
    # the oracle: the suite on the set as given and on one built here without docstrings
    by_hand = _beir(
        tmp_path / "by-hand",
        {
            **corpus,
            "c1": "def paste(self, n):\n        return n + 1",
            "c3": NESTED_STRIPPED,
        },
    )
    encoder = Encoder.load(str(tiny_bert), max_length=64)
    tasks = [Task.from_folder(folder), Task.from_folder(by_hand)]
    report = evaluate(encoder, tasks, tmp_path, cache_dir=None, show_progress=False)
    expected = [r.scores["ndcg@10"] for r in report.results]
    row = result["models"]["tiny"]
    assert [row["as given"], row["docstrings removed"]] == pytest.approx(expected, abs=1e-9)


def test_a_label_per_model_is_required(tmp_path):
    folder = _beir(tmp_path / "set", {"c1": METHOD, "c2": "x = 1"})
    with pytest.raises(SystemExit):
        cosqa_docstrings.main(["--models", "a", "b", "--labels", "one", "--data", str(folder)])
