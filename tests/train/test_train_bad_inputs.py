"""`cpt train` on bad inputs: a config file or pair shard it cannot use is one line
`error: <file>: <what is wrong>; <the fix>`, exit code 2, before any training where it can
be. Never a traceback (a TypeError from comparing a string with a number, say)."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pytest
from bad_inputs import (
    DEEP_JSON,
    NOT_UTF8,
    UNICODE_NAME,
    deadline,
    one_line_error,
    parquet_bad_name,
    parquet_bytes,
    symlink_loops,
    unreadable,
    write,
)
from typer.testing import CliRunner

from cpt_embed.cli import app
from cpt_embed.train.config import TrainConfig

runner = CliRunner()

CONFIGS = {
    # file name: (content, part of the error message)
    "list.yaml": ("- a\n- b\n", "must be a mapping of key: value, got list"),
    "scalar.yaml": ("42\n", "must be a mapping of key: value, got int"),
    "zero.yaml": ("0\n", "must be a mapping of key: value, got int"),
    "typo.yaml": (
        "batch_sise: 8\n",
        "unknown config key 'batch_sise' (did you mean 'batch_size'?)",
    ),
    "int_key.yaml": ("1: 2\nlr: 0.1\n", "unknown config key 1"),
    "string_for_int.yaml": ("batch_size: lots\n", "batch_size must be an integer, got 'lots'"),
    "float_for_int.yaml": ("max_steps: 10.5\n", "max_steps must be an integer, got 10.5"),
    "bool_for_int.yaml": ("batch_size: true\n", "batch_size must be an integer, got True"),
    "null_for_int.yaml": ("batch_size: null\n", "batch_size must be an integer, got None"),
    "list_for_float.yaml": ("lr: [1, 2]\n", "lr must be a finite number"),
    "word_for_float.yaml": ("lr: fast\n", "lr must be a finite number, got 'fast'"),
    "nan.yaml": ("lr: .nan\n", "lr must be a finite number, got nan"),
    "overflow.yaml": ("lr: 1.0e999\n", "lr must be a finite number, got inf"),
    "huge_int.yaml": ("lr: 1" + "0" * 400 + "\n", "lr must be a finite number, got 1000"),
    "giant_int.yaml": ("seed: 1" + "0" * 5000 + "\n", "not valid YAML (Exceeds the limit"),
    "inf.yaml": ("max_steps: .inf\n", "max_steps must be an integer"),
    "word_for_bool.yaml": ("learn_tau: maybe\n", "learn_tau must be true or false"),
    "int_for_str.yaml": ("device: 0\n", "device must be a string, got 0"),
    "data_int.yaml": ("data: 5\n", "data must be a list of strings"),
    "data_mapping.yaml": ("data: {a: 1}\n", "data must be a list of strings"),
    "encoder_list.yaml": ("encoder: [1]\n", "encoder must be a mapping"),
    "negative_batch.yaml": ("batch_size: -4\n", "batch_size must be >= 2"),
    "negative_steps.yaml": ("max_steps: -1\n", "max_steps must be >= 1, got -1"),
    "negative_lr.yaml": ("lr: -0.1\n", "lr must be > 0"),
    "negative_clip.yaml": ("grad_clip: -1\n", "grad_clip is a gradient norm, so > 0"),
    "negative_decay.yaml": ("weight_decay: -0.5\n", "weight_decay must be >= 0"),
    "negative_length.yaml": ("max_length: -3\n", "max_length must be >= 1"),
    "negative_eval.yaml": ("eval_every: -2\n", "eval_every must be >= 0"),
    "tau_above_max.yaml": ("tau_init: 5.0\ntau_max: 1.0\n", "above its clamp tau_max"),
    "warmup_one.yaml": ("warmup: 1.0\n", "warmup is a fraction"),
    "bad_yaml.yaml": ("a: [1, 2\n", "not valid YAML at line 2"),
    "tab.yaml": ("a:\n\t- b\n", "not valid YAML at line 2, column 1"),
    "python_tag.yaml": (
        "model: !!python/object/apply:os.system ['true']\n",
        "could not determine a constructor",
    ),
    "latin1.yaml": ("model: café\n".encode("latin-1"), "not UTF-8"),
    "utf16_bom.yaml": ("batch_size: 4\n".encode("utf-16"), "not UTF-8"),
    "nul.yaml": (b"batch_size: 4\0\n", "not valid YAML"),
    "binary_blob.yaml": (NOT_UTF8["binary_blob"], "not UTF-8"),
    "deep.yaml": (DEEP_JSON, "nested too deeply"),
    "deep.json": (b'{"a": ' * 50_000, "nested too deeply"),
    "list.json": (b"[1, 2]", "must be a mapping"),
    "typo.json": (b'{"learning_rate": 0.1}', "unknown config key 'learning_rate'"),
}


def _train(*args: str):
    with deadline(120):
        return runner.invoke(app, ["train", *args])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_bad_config_file_is_one_line(name, tmp_path):
    data, message = CONFIGS[name]
    path = write(tmp_path / name, data)
    result = _train(str(path))
    assert message in one_line_error(result, str(path))


@pytest.mark.parametrize("what", ["missing", "folder", "self_link", "unreadable"])
def test_a_config_path_that_cannot_be_read_is_one_line(what, tmp_path):
    path = tmp_path / "config.yaml"
    if what == "folder":
        path.mkdir()
    elif what == "self_link":
        path.symlink_to(path)
    elif what == "unreadable":
        unreadable(write(path, "lr: 0.1\n"))
    one_line_error(_train(str(path)), str(path))


def test_config_edge_cases_that_are_fine(tmp_path):
    """Empty files and comments are no settings; YAML 1.1 reads 2e-5 as a string, which
    is taken as the number it spells; JSON is YAML."""
    for text in ("", "# only a comment\n", "---\n"):
        assert TrainConfig.load(write(tmp_path / "c.yaml", text)) == TrainConfig()
    assert TrainConfig.load(write(tmp_path / "c.yaml", "lr: 2e-5\n")).lr == 2e-5
    assert TrainConfig.load(write(tmp_path / "c.json", '{"batch_size": 8}')).batch_size == 8
    config = TrainConfig.load(write(tmp_path / "c.yaml", "batch_size: 1\n"), batch_size=8)
    assert config.batch_size == 8  # a flag may replace a bad value of the file


def test_bad_flags_and_a_valid_empty_config_are_one_line(tmp_path):
    empty = write(tmp_path / "empty.yaml", "")
    assert "no training data" in one_line_error(_train(str(empty)))
    pairs = write(tmp_path / "pairs.jsonl", "")
    line = one_line_error(_train("--data", str(pairs), "--batch-size", "-4"))
    assert "batch_size must be >= 2" in line


PAIRS = "".join(json.dumps({"x": f"query {i}", "y": f"document {i}"}) + "\n" for i in range(8))
BAD_PAIRS = {
    "empty.jsonl": (b"", "no pairs in 1 file(s)"),
    "empty.jsonl.gz": (gzip.compress(b""), "no pairs in 1 file(s)"),
    "latin1.jsonl": (b'{"x": "caf\xe9", "y": "b"}\n', "not UTF-8"),
    "utf16_bom.jsonl": (PAIRS.encode("utf-16"), "not UTF-8"),
    "binary_blob.jsonl": (NOT_UTF8["binary_blob"], "not UTF-8"),
    "nul.jsonl": (b'{"x": "a\0", "y": "b"}\n', "line 1 is not valid JSON"),
    "deep.jsonl": (DEEP_JSON, "line 1 is not valid JSON (maximum recursion depth"),
    "huge_int.jsonl": (b'{"x": 1' + b"0" * 5000 + b', "y": "b"}\n', "not valid JSON (Exceeds"),
    "invalid.jsonl": (b'{"x": "a", "y": \n', "line 1 is not valid JSON"),
    "list.jsonl": (b'["a", "b"]\n', "line 1 is not a JSON object"),
    "wrong_fields.jsonl": (b'{"query": "a", "doc": "b"}\n', "needs string fields x and y"),
    "wrong_types.jsonl": (b'{"x": 1, "y": "b"}\n', "needs string fields x and y"),
    "truncated.jsonl.gz": (gzip.compress(PAIRS.encode())[:30], "cannot read"),
    "not_gzip.jsonl.gz": (PAIRS, "cannot read (Not a gzipped file"),
    "empty.parquet": (b"", "not a readable Parquet file"),
    "bad_schema.parquet": (parquet_bad_name(pa.table({"x": ["a"], "y": ["b"]}), "x"), "not"),
    "truncated.parquet": (
        parquet_bytes(pa.table({"x": ["a"] * 9, "y": ["b"] * 9}))[:-20],
        "not a readable Parquet file",
    ),
    "wrong_columns.parquet": (
        parquet_bytes(pa.table({"query": ["a"], "doc": ["b"]})),
        "needs string fields x and y",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_PAIRS))
def test_a_bad_pair_shard_is_one_line(name, tiny_bert, tmp_path):
    data, message = BAD_PAIRS[name]
    path = write(tmp_path / name, data)
    args = ["--data", str(path), "-m", str(tiny_bert), "-o", str(tmp_path / "run")]
    args += ["--max-steps", "1", "--batch-size", "2", "--chunk-size", "2", "--max-length", "16"]
    result = _train(*args, "--shuffle-buffer", "2", "--save-every", "1")
    assert message in one_line_error(result, str(path))


@pytest.mark.parametrize(
    "manifest, message",
    [
        ("{not json", "unreadable"),
        ("[1]", "not a manifest of pair shards"),
        ('{"shards": "all"}', "not a manifest of pair shards"),
    ],
)
def test_a_bad_pairs_manifest_is_one_line(manifest, message, tmp_path):
    path = write(tmp_path / "pairs" / "manifest.json", manifest)
    assert message in one_line_error(_train("--data", str(path.parent)), str(path))


def test_pair_paths_that_cannot_be_opened_are_one_line(tmp_path):
    link = tmp_path / "self.jsonl"
    link.symlink_to(link)
    assert "symlink" in one_line_error(_train("--data", str(link)), str(link))
    loops = symlink_loops(tmp_path / "loops")
    assert "no pair files" in one_line_error(_train("--data", str(loops)), str(loops))


def test_pairs_under_a_unicode_path_train(tiny_bert, tmp_path):
    path = write(tmp_path / f"{UNICODE_NAME}.jsonl", PAIRS)
    args = ["--data", str(path), "-m", str(tiny_bert), "-o", str(tmp_path / "run")]
    args += ["--max-steps", "1", "--batch-size", "2", "--chunk-size", "2", "--max-length", "16"]
    result = _train(*args, "--shuffle-buffer", "2", "--save-every", "1")
    assert result.exit_code == 0, result.output
