"""`cpt explain`: the library's explanation as JSON or coloured on a terminal, texts read from
files, and bad inputs refused in one line before torch loads."""

from __future__ import annotations

import json

import pytest
from probe import run_cpt
from typer.testing import CliRunner

from cpt_embed import Encoder
from cpt_embed.cli import app
from cpt_embed.cli.explain import read_argument
from cpt_embed.errors import InputError

runner = CliRunner()
QUERY = "how to add two numbers"
CODE = 'def add(a, b):\n    """Sum of a and b."""\n    return a + b\n'


@pytest.fixture
def code_file(tmp_path):
    path = tmp_path / "add.py"
    path.write_text(CODE, encoding="utf-8")
    return path


def _run(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, ["explain", *args], env=env)


def test_json_is_the_library_explanation(tiny_bert, code_file):
    result = _run(QUERY, f"@{code_file}", "--model", str(tiny_bert), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    expected = Encoder.load(tiny_bert).explain(QUERY, CODE).to_dict()
    assert set(data) == set(expected)
    assert data["similarity"] == pytest.approx(expected["similarity"], abs=1e-6)
    for side in ("query", "document"):
        assert data[side]["tokens"] == expected[side]["tokens"]
        assert data[side]["scores"] == pytest.approx(expected[side]["scores"], abs=1e-6)
    assert [line["text"] for line in data["document"]["lines"]] == CODE.split("\n")[:3]
    assert "lines" not in data["query"]


def test_options_reach_the_library(tiny_llama, code_file):
    result = _run(
        QUERY, f"@{code_file}", "-m", str(tiny_llama), "--json", "--text", "--side", "query",
        "--layer", "1", "--steps", "3", "--dtype", "float32",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["layer"], data["steps"], data["document"]["side"]) == (1, 3, "query")
    expected = Encoder.load(tiny_llama).explain(
        QUERY, CODE, document_side="query", layer=1, steps=3, lines=False, dtype="float32"
    )
    assert data["document"]["scores"] == pytest.approx(expected.document.scores, abs=1e-6)
    assert "lines" not in data["document"]
    assert data["document"]["tokens"][:2] == ["<s>", "["]  # BOS, the query side's delimiter


def test_terminal_view(tiny_bert, code_file):
    result = _run(QUERY, f"@{code_file}", "-m", str(tiny_bert), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("similarity ") and "\x1b[" not in out  # no colours into a pipe
    assert "scores sum" in out and "[CLS] [SEP]" in out
    assert "   1 " in out and "│ def add(a, b):" in out
    assert "│     return a + b" in out
    assert _run("two numbers", "add two numbers", "-m", str(tiny_bert)).stdout.count("│") == 0


def test_colours_on_a_terminal(tiny_bert):
    env = {"FORCE_COLOR": "1", "COLORTERM": "truecolor", "COLUMNS": "200"}
    result = _run("add two numbers", "add two numbers together", "-m", str(tiny_bert), env=env)
    assert result.exit_code == 0, result.output
    assert "48;2;" in result.stdout  # 24-bit background colours


def test_read_argument(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text("text of a file\n", encoding="utf-8")
    assert read_argument(f"@{path}", "document") == "text of a file\n"
    assert read_argument("@@handle", "query") == "@handle"
    assert read_argument("plain", "query") == "plain"
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    for value, message in [
        ("", "query is empty"),
        ("  \n", "query is empty"),
        (f"@{tmp_path / 'missing.txt'}", "no such file"),
        (f"@{tmp_path}", "a folder"),
        (f"@{tmp_path / 'latin1.txt'}", "not UTF-8"),
    ]:
        with pytest.raises(InputError, match=message):
            read_argument(value, "query")


def test_bad_inputs_fail_in_one_line_before_torch(tmp_path):
    lines = [
        ["explain", "--help"],
        ["explain", "", "a document"],
        ["explain", "a query", "   "],
        ["explain", "a query", f"@{tmp_path / 'missing.py'}"],
        ["explain", "a query", "a document", "-m", str(tmp_path / "nomodel")],
        ["explain", "a query", "a document", "--steps", "0"],
    ]
    runs, loaded = run_cpt([(200, line) for line in lines], ["torch"])
    assert not loaded
    help_, *bad = runs
    assert help_["code"] == 0 and "--code / --text" in help_["output"]
    assert "@FILE" in help_["output"]
    named = ["query is empty", "document is empty", "missing.py", "nomodel"]
    for run, name in zip(bad[:-1], named, strict=True):
        assert run["code"] == 2, run["output"]
        assert run["output"].startswith("error: ") and name in run["output"], run["output"]
        assert run["output"].count("\n") == 1
    assert bad[-1]["code"] == 2 and "Invalid value for '--steps'" in bad[-1]["output"]
