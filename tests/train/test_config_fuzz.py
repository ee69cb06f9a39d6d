"""Fuzzing the training config parser with generated YAML files and flag values: it gives a
config whose every setting has its declared type, and which saved as YAML loads back equal,
or raises the project's InputError; never another exception. The quick tests run in
`make test`; the `slow` one (2 x FUZZ_EXAMPLES, env CPT_FUZZ_EXAMPLES) in `make test-all`."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpt_embed.errors import InputError
from cpt_embed.train.config import TrainConfig

FUZZ_EXAMPLES = int(os.environ.get("CPT_FUZZ_EXAMPLES", "4000"))
_COMMON = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow]}
QUICK = settings(max_examples=200, **_COMMON)
SLOW = settings(max_examples=2 * FUZZ_EXAMPLES, **_COMMON)

FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]
HINTS = typing.get_type_hints(TrainConfig)
# YAML 1.1 as PyYAML reads it: numbers without a dot are text (2e-5), sexagesimal (1:30),
# yes/no/on/off, dates, tags, anchors and aliases.
YAML_SCALARS = [
    "2e-5", "1.0e-3", "0.1", "-1", "0", "1", "256", "1_000", "0x1F", "0o17", "1:30", ".inf",
    "-.inf", ".nan", "null", "~", "", "true", "false", "yes", "off", "2024-01-31", "'64'",
    '"text"', "linear", "cosine", "bfloat16", "!!binary aGk=", "!!float '3'", "!!int '7'",
    "!!set {a, b}", "!!python/object:os.system {}", "[a, b]", "[1, 2]", "{pooling: mean}",
    "[]", "{}", "|\n  block text", "&anchor 5", "*anchor", "&loop [*loop]", "99" * 30,
]  # fmt: skip
keys = st.one_of(
    st.sampled_from(FIELDS),
    st.sampled_from(["<<", "1", "null", "true", "[a]", "? x", "lerning_rate", "lr "]),
    st.text(max_size=8).map(json.dumps),
)
values = st.one_of(
    st.sampled_from(YAML_SCALARS),
    st.integers().map(str),
    st.floats().map(repr),
    st.text(max_size=12).map(json.dumps),
)
mapping_files = st.lists(st.tuples(keys, values), max_size=8).map(
    lambda pairs: "".join(f"{k}: {v}\n" for k, v in pairs)
)
config_files = st.one_of(
    mapping_files,
    mapping_files.map(lambda text: text.replace("\n", "\r\n")),
    st.dictionaries(st.sampled_from(FIELDS), st.sampled_from(YAML_SCALARS)).map(
        lambda d: "{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}"
    ),
    st.text(max_size=60),
    st.sampled_from(
        ["- a\n- b\n", "42", "---\n---\n", "a: [" * 3000, "[" * 200 + "]" * 200, "%YAML 9\n"]
    ),
)
flag_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=10),
    st.lists(st.text(max_size=4), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.builds(Path, st.text(min_size=1, max_size=4)),
)
flags = st.dictionaries(st.sampled_from([*FIELDS, "lerning_rate"]), flag_values, max_size=4)


def _has_declared_type(value: typing.Any, hint: typing.Any) -> bool:
    """Whether `value` fits a field annotated `hint`: X | None, int, float (finite; an int
    will do), bool, str, list[str] or dict."""
    args = typing.get_args(hint)
    if type(None) in args:
        if value is None:
            return True
        hint = next(a for a in args if a is not type(None))
    kind = typing.get_origin(hint) or hint
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and math.isfinite(value)
    if kind is list:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, kind)


def _check(text: str | bytes, overrides: dict[str, typing.Any]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        try:
            config = TrainConfig.load(path, **overrides)
        except InputError:
            return
        for name in FIELDS:
            assert _has_declared_type(getattr(config, name), HINTS[name]), name
        path.write_text(yaml.safe_dump(config.to_dict()), encoding="utf-8")
        assert TrainConfig.load(path) == config


@QUICK
@given(text=config_files, overrides=flags)
def test_config_files_load_or_raise_input_error(text, overrides):
    _check(text, overrides)


@QUICK
@given(data=st.binary(max_size=80))
def test_config_bytes_load_or_raise_input_error(data):
    _check(data, {})


@pytest.mark.slow
@SLOW
@given(text=config_files, overrides=flags)
def test_fuzz_config_files(text, overrides):
    _check(text, overrides)
