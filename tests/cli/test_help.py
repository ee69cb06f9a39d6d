"""`cpt ... --help` reads well: values named as click names them (never Python's types),
`cpt train`'s effective defaults (TrainConfig's) shown, lines as wide as the terminal; and
help, argument errors and bad inputs found before any work (a missing file, task, data
dir, pairs, index or model) never import torch and its kin.

Everything runs in one fresh `cpt` process (typer's CliRunner forces 80 columns, and a
test process has imported torch long before)."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
from probe import run_cpt

from cpt_embed.train.config import TrainConfig

COMMANDS = [
    [],
    ["embed"],
    ["eval"],
    ["pairs"],
    ["pairs", "code"],
    ["pairs", "text"],
    ["pairs", "filter"],
    ["pairs", "negatives"],
    ["train"],
    ["index"],
    ["index", "build"],
    ["index", "update"],
    ["search"],
    ["serve"],
]
# What typer 0.29 writes for a value left to it: Python's types.
TYPE_LABELS = re.compile(r"<(bool|str|int|float|path|file|dir|list\[)")
HEAVY = ["torch", "transformers", "faiss", "pyarrow", "fastapi", "sklearn", "uvicorn"]
WIDE = 200


@pytest.fixture(scope="module")
def cpt(tmp_path_factory):
    """Each command line's exit code and output, and the heavy modules imported."""
    folder = tmp_path_factory.mktemp("cli")
    (folder / "in.txt").write_text("a text\n", encoding="utf-8")
    lines = {
        **{("help", *c): (WIDE, [*c, "--help"]) for c in COMMANDS},
        ("help at 80",): (80, ["--help"]),
        ("argument error",): (WIDE, ["embed", str(folder / "in.txt"), "--batch-size", "zero"]),
        ("missing option",): (WIDE, ["embed", str(folder / "in.txt")]),
        ("missing input",): (WIDE, ["embed", str(folder / "no.txt"), "-o", str(folder / "v.npy")]),
        ("unknown task",): (WIDE, ["eval", "--tasks", "nosuch"]),
        ("missing data dir",): (WIDE, ["eval", "--data", str(folder / "nodata")]),
        ("missing pairs",): (
            WIDE,
            ["train", "--data", str(folder / "no.jsonl"), "-o", str(folder)],
        ),
        ("missing index",): (WIDE, ["serve", "--port", "65531", "--index", str(folder / "no.idx")]),
        ("unknown model",): (WIDE, ["serve", "--port", "65531", "-m", str(folder / "nomodel")]),
    }
    runs, loaded = run_cpt(list(lines.values()), HEAVY)
    return dict(zip(lines, runs, strict=True)), loaded


def _help(cpt, *command: str) -> str:
    run = cpt[0][("help", *command)]
    assert run["code"] == 0, run["output"]
    return run["output"]


def test_help_and_bad_command_lines_import_no_torch(cpt):
    runs, loaded = cpt
    assert loaded == [], f"imported {loaded}"
    for name in [("argument error",), ("missing option",), ("missing input",)]:
        assert runs[name]["code"] == 2, runs[name]["output"]
    assert "Invalid value for '--batch-size'" in runs[("argument error",)]["output"]
    for name, named in [
        (("missing input",), "no.txt"),
        (("unknown task",), "nosuch"),
        (("missing data dir",), "nodata"),
        (("missing pairs",), "no.jsonl"),
        (("missing index",), "no.idx"),
        (("unknown model",), "nomodel"),
    ]:
        output = runs[name]["output"]
        assert runs[name]["code"] == 2 and output.startswith("error: ") and named in output, output


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "cpt")
def test_values_are_named_as_click_names_them(cpt, command):
    text = _help(cpt, *command)
    assert not TYPE_LABELS.search(text), text
    assert re.search(r"--help\s+Show this message", text)  # a flag: no value named


def test_value_names(cpt):
    embed, pairs = _help(cpt, "embed"), _help(cpt, "pairs", "code")
    assert re.search(r"-o, --output PATH\s", embed)
    assert re.search(r"--batch-size INTEGER\s.*\[default: 128; x>=1\]", embed)
    assert "--side [query|document]" in embed
    assert re.search(r"--compile / --no-compile\s+torch", embed)
    assert re.search(r"INPUT\.\.\. TEXT\s", embed)
    assert re.search(r"sources\.\.\. PATH\s", pairs)
    assert re.search(r"--exclude PATH\s", pairs)  # list[Path]: each use names one path


def _option_help(text: str, flag: str) -> str:
    """The help of `flag` in a --help text: its line and the lines it wraps onto."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"\s+(-\w, )?{flag}\b", line))
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if re.match(r"\s+-", line) or not line.strip():
            break
        block.append(line)
    return " ".join(part.strip() for part in block)


def test_train_help_shows_the_defaults_of_train_config(cpt):
    text = _help(cpt, "train")
    shown = 0
    for field in dataclasses.fields(TrainConfig):
        flag = f"--{field.name.replace('_', '-')}"
        if field.default in (None, dataclasses.MISSING) or flag not in text or flag == "--resume":
            continue
        found = re.search(r"\[default: ([^\]]+)\]", _option_help(text, flag))
        assert found, f"{flag} shows no default"
        value = found.group(1)
        if isinstance(field.default, bool):
            assert value == ("on" if field.default else "off"), flag
        elif isinstance(field.default, float):
            assert math.isclose(float(value), field.default, rel_tol=1e-3), flag
        else:
            assert value == str(field.default), flag
        shown += 1
    assert shown >= 20  # every setting with a default, not a few


def test_help_takes_the_terminal_width(cpt):
    wide, narrow = _help(cpt), cpt[0][("help at 80",)]["output"]
    assert max(map(len, wide.splitlines())) > 100  # click alone stops at 80 columns
    assert max(map(len, narrow.splitlines())) <= 80
