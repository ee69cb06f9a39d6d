"""The `cpt` command as a user runs it: embed from each input format, help, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cpt_embed import Encoder, __version__
from cpt_embed.cli import app
from cpt_embed.data.vectors import read_vectors

runner = CliRunner()
TEXTS = ["first text", "def f(x):\n    return x", "third"]


def _run(*args: str, stdin: str | None = None):
    return runner.invoke(app, list(args), input=stdin)


@pytest.fixture
def inputs(tmp_path):
    (tmp_path / "in.txt").write_text("first text\nsecond\n", encoding="utf-8")
    with open(tmp_path / "in.jsonl", "w", encoding="utf-8") as handle:
        for i, text in enumerate(TEXTS):
            handle.write(json.dumps({"_id": f"doc{i}", "body": text}) + "\n")
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": TEXTS}), tmp_path / "in.parquet")
    return tmp_path


def test_embed_jsonl_to_parquet_equals_the_library(tiny_bert, inputs):
    out = inputs / "out.parquet"
    result = _run(
        "embed",
        str(inputs / "in.jsonl"),
        "-o",
        str(out),
        "--model",
        str(tiny_bert),
        "--field",
        "body",
        "--side",
        "document",
    )
    assert result.exit_code == 0, result.output
    ids, vectors = read_vectors(out)
    assert ids == ["doc0", "doc1", "doc2"]
    expected = Encoder.load(tiny_bert).encode(TEXTS, side="document")
    np.testing.assert_allclose(vectors, expected, atol=1e-6)


def test_embed_txt_and_parquet_and_stdin_to_npy(tiny_bert, inputs):
    encoder = Encoder.load(tiny_bert)
    for source, texts in [("in.txt", ["first text", "second"]), ("in.parquet", TEXTS)]:
        out = inputs / f"{source}.npy"
        result = _run("embed", str(inputs / source), "-o", str(out), "-m", str(tiny_bert))
        assert result.exit_code == 0, result.output
        np.testing.assert_allclose(np.load(out), encoder.encode(texts), atol=1e-6)
    out = inputs / "stdin.npy"
    result = _run("embed", "-", "-o", str(out), "-m", str(tiny_bert), stdin="first text\nthird\n")
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(out), encoder.encode(["first text", "third"]), atol=1e-6)


@pytest.mark.parametrize(
    "args, message",
    [
        (["embed", "{dir}/in.jsonl", "-o", "{dir}/o.npy"], "has no field 'text'"),
        (["embed", "{dir}/in.txt", "-o", "{dir}/o.csv"], "must end in .npy or .parquet"),
        (["embed", "{dir}/missing.txt", "-o", "{dir}/o.npy"], "no such file"),
        (
            ["embed", "{dir}/in.txt", "-o", "{dir}/o.npy", "-m", "{dir}/no-model"],
            "no such file or folder",
        ),
    ],
)
def test_errors_are_one_clear_line(inputs, args, message):
    result = _run(*[a.format(dir=inputs) for a in args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (inputs / "o.npy").exists()


def test_help_lists_commands_and_options():
    result = _run("--help")
    assert result.exit_code == 0 and "embed" in result.output
    result = _run("embed", "--help")
    assert result.exit_code == 0
    for option in ("--output", "--model", "--field", "--side", "--batch-size", "--dtype"):
        assert option in result.output
    assert _run("--version").output.startswith("cpt-embed ")


def test_the_cpt_process_ends_with_its_output_and_exit_code(inputs):
    """The process leaves without the interpreter's teardown: what it wrote to a pipe (block
    buffered) still arrives, and the exit code is the command's."""
    cpt = [sys.executable, "-m", "cpt_embed.cli"]
    done = subprocess.run([*cpt, "--version"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, f"cpt-embed {__version__}\n")
    done = subprocess.run(
        [*cpt, "embed", str(inputs / "no.txt"), "-o", str(inputs / "o.npy")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stderr.startswith("error: "), done.stderr
