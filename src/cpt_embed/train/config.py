"""Training settings: plain values, from a YAML file and/or command-line flags.

Choices the paper leaves open, with where they come from:
- tau_init ln(20): exp(tau) = 20 is sentence-transformers' MultipleNegativesRankingLoss
  scale for cosine similarity; tau_max ln(100) is open_clip's clamp.
- lr 2e-5, warmup 10% of steps, linear decay, weight decay 0.01, grad clip 1.0: the
  sentence-transformers / Tevatron defaults for fine-tuning BERT-size encoders.
- max_length: the model's own (256 for all-MiniLM-L6-v2), unless set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import typing
from pathlib import Path
from typing import Any

from cpt_embed.errors import InputError, first_line

# exp(tau) starts at 20, the scale sentence-transformers' MultipleNegativesRankingLoss uses
# with cosine similarity; clamped at 100 as in open_clip (CLIP). Here rather than in loss.py
# so that reading a config (and `cpt train --help`) needs no torch.
TAU_INIT = math.log(20.0)
TAU_MAX = math.log(100.0)


@dataclasses.dataclass
class TrainConfig:
    """Everything one training run needs; `data` holds pair files, folders or globs, each
    optionally with a mixing weight as `path:weight`; `encoder` replaces settings of the
    start point's EncoderConfig (e.g. delimiters, pooling) before training.

    A side of a batch goes through the model in chunks (gradient caching): at most
    `chunk_tokens` tokens each where set, else on a GPU as many as its free memory holds,
    and elsewhere `chunk_size` texts. `packing` puts a chunk's texts end to end in one row
    where the model allows it, so that only attention sees padding. `grad_cache`: True
    caches gradients whenever a side takes several chunks, False never does (all chunks in
    one graph), None (the default) caches only where the batch's activations would not fit
    the memory set aside for them (train/memory.py), since caching costs a forward pass.
    `false_negative_margin` (off by default) masks an in-batch or hard negative that the
    model scores above the positive minus this margin (train/loss.py)."""

    model: str = "default"
    encoder: dict[str, Any] = dataclasses.field(default_factory=dict)
    data: list[str] = dataclasses.field(default_factory=list)
    output: str = "runs/train"
    batch_size: int = 256
    chunk_size: int = 64
    chunk_tokens: int | None = None
    packing: bool = True
    grad_cache: bool | None = None
    max_steps: int = 1000
    lr: float = 2e-5
    warmup: float = 0.1
    schedule: str = "linear"
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    tau_init: float = TAU_INIT
    tau_max: float = TAU_MAX
    learn_tau: bool = True
    max_length: int | None = None
    dtype: str = "float32"
    gradient_checkpointing: bool = False
    hard_negatives: str | None = None
    false_negative_margin: float | None = None
    shuffle_buffer: int = 10_000
    seed: int = 0
    save_every: int = 200
    keep_last: int = 2
    log_every: int = 10
    eval_every: int = 0
    eval_tasks: str = "stsb"
    device: str | None = None
    resume: bool = False

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        problems = [
            problem
            for f in dataclasses.fields(self)
            if (problem := _type_problem(f.name, getattr(self, f.name), hints[f.name]))
        ]
        if problems:  # before the checks below, which compare numbers
            raise InputError("bad training config: " + "; ".join(problems))
        for name in (
            "chunk_size",
            "max_steps",
            "save_every",
            "keep_last",
            "log_every",
            "shuffle_buffer",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.grad_clip <= 0:
            problems.append(f"grad_clip is a gradient norm, so > 0, got {self.grad_clip}")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.tau_init > self.tau_max:
            problems.append(f"tau_init {self.tau_init} is above its clamp tau_max {self.tau_max}")
        if self.chunk_tokens is not None and self.chunk_tokens < 1:
            problems.append(f"chunk_tokens must be >= 1 (or unset), got {self.chunk_tokens}")
        if self.max_length is not None and self.max_length < 1:
            problems.append(f"max_length must be >= 1 (or unset), got {self.max_length}")
        if not 0 <= self.warmup < 1:
            problems.append(f"warmup is a fraction of the steps in [0, 1), got {self.warmup}")
        if self.schedule not in ("linear", "cosine", "constant"):
            problems.append(f"schedule must be linear, cosine or constant, got {self.schedule!r}")
        if self.dtype not in ("float32", "bfloat16"):
            problems.append(f"dtype must be float32 or bfloat16, got {self.dtype!r}")
        if self.batch_size < 2:
            problems.append("batch_size must be >= 2: in-batch negatives need two pairs")
        margin = self.false_negative_margin
        if margin is not None and not 0 <= margin <= 2:
            problems.append(f"false_negative_margin is a cosine margin in [0, 2], got {margin}")
        if self.eval_every < 0:
            problems.append(f"eval_every must be >= 0, got {self.eval_every}")
        if problems:
            raise InputError("bad training config: " + "; ".join(problems))

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> TrainConfig:
        """Settings from a YAML (or JSON) file, then `overrides` (flags given on the command
        line). Bad settings are an error, naming the file where it holds them."""
        loaded = _read_yaml(Path(path)) if path is not None else {}
        try:
            return cls._from_values(loaded | {k: v for k, v in overrides.items() if v is not None})
        except InputError:
            if path is not None:
                try:
                    cls._from_values(loaded)
                except InputError as err:
                    raise InputError(f"{path}: {err}") from None
            raise

    @classmethod
    def _from_values(cls, values: dict[str, Any]) -> TrainConfig:
        known = sorted(f.name for f in dataclasses.fields(cls))
        unknown = [key for key in values if key not in known]
        if unknown:
            close = difflib.get_close_matches(str(unknown[0]), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"unknown config key {unknown[0]!r}{hint}; known: {', '.join(known)}")
        values = dict(values)
        if isinstance(values.get("data"), str):
            values["data"] = [values["data"]]
        hints = typing.get_type_hints(cls)
        for key, value in values.items():
            if hints[key] is float and isinstance(value, str):
                # PyYAML (YAML 1.1) reads 2e-5 as a string: only 2.0e-5 is a float there
                with contextlib.suppress(ValueError):
                    values[key] = float(value)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_KINDS = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}


def _type_problem(name: str, value: Any, hint: Any) -> str | None:
    """Why `value` does not fit field `name` annotated `hint`; None if it does."""
    args = typing.get_args(hint)
    if type(None) in args:  # X | None
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    origin = typing.get_origin(hint) or hint
    if origin is list:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        want = "a list of strings"
    elif origin is dict:
        ok, want = isinstance(value, dict), "a mapping of settings"
    elif isinstance(value, bool) and origin is not bool:
        ok, want = False, _KINDS[origin]
    elif origin is float:
        ok, want = isinstance(value, int | float) and _finite(value), _KINDS[float]
    else:
        ok, want = isinstance(value, origin), _KINDS[origin]
    return None if ok else f"{name} must be {want}, got {value!r}"


def _finite(number: float) -> bool:
    try:
        return math.isfinite(number)
    except OverflowError:  # an int too large for a float
        return False


def _read_yaml(path: Path) -> dict[str, Any]:
    """The mapping of a YAML (or JSON) config file; an error names the file and the fix."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 ({err.reason}); save the config as UTF-8") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read the config ({err.strerror or err})") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InputError(
            f"{path}: not valid YAML{where} ({err.problem or err.context}); fix the file"
        ) from None
    except (yaml.YAMLError, ValueError) as err:  # ValueError: an int of 4300+ digits
        raise InputError(f"{path}: not valid YAML ({first_line(err)})") from None
    except RecursionError:
        raise InputError(f"{path}: nested too deeply to read; a config is one mapping") from None
    if loaded is None:  # an empty file: every setting from the flags or the defaults
        return {}
    if not isinstance(loaded, dict):
        raise InputError(
            f"{path}: the config must be a mapping of key: value, got {type(loaded).__name__}"
        )
    return loaded
