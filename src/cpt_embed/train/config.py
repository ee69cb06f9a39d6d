"""Training settings: plain values, from a YAML file and/or command-line flags.

Choices the paper leaves open, with where they come from:
- tau_init ln(20): exp(tau) = 20 is sentence-transformers' MultipleNegativesRankingLoss
  scale for cosine similarity; tau_max ln(100) is open_clip's clamp.
- lr 2e-5, warmup 10% of steps, linear decay, weight decay 0.01, grad clip 1.0: the
  sentence-transformers / Tevatron defaults for fine-tuning BERT-size encoders.
- max_length: the model's own (256 for all-MiniLM-L6-v2), unless set.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from cpt_embed.errors import InputError
from cpt_embed.train.loss import TAU_INIT, TAU_MAX


@dataclasses.dataclass
class TrainConfig:
    """Everything one training run needs; `data` holds pair files, folders or globs, each
    optionally with a mixing weight as `path:weight`; `encoder` replaces settings of the
    start point's EncoderConfig (e.g. delimiters, pooling) before training."""

    model: str = "default"
    encoder: dict[str, Any] = dataclasses.field(default_factory=dict)
    data: list[str] = dataclasses.field(default_factory=list)
    output: str = "runs/train"
    batch_size: int = 256
    chunk_size: int = 64
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
        problems = []
        for name in (
            "batch_size",
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
        if not 0 <= self.warmup < 1:
            problems.append(f"warmup is a fraction of the steps in [0, 1), got {self.warmup}")
        if self.schedule not in ("linear", "cosine", "constant"):
            problems.append(f"schedule must be linear, cosine or constant, got {self.schedule!r}")
        if self.dtype not in ("float32", "bfloat16"):
            problems.append(f"dtype must be float32 or bfloat16, got {self.dtype!r}")
        if self.batch_size < 2:
            problems.append("batch_size must be >= 2: in-batch negatives need two pairs")
        if not isinstance(self.encoder, dict):
            problems.append(
                f"encoder must be a mapping of EncoderConfig settings, got {self.encoder!r}"
            )
        if self.eval_every < 0:
            problems.append(f"eval_every must be >= 0, got {self.eval_every}")
        if problems:
            raise InputError("bad training config: " + "; ".join(problems))

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> TrainConfig:
        """Settings from a YAML file, then `overrides` (flags given on the command line)."""
        values: dict[str, Any] = {}
        if path is not None:
            import yaml

            path = Path(path)
            try:
                loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError) as err:
                raise InputError(f"{path}: cannot read the config ({err})") from None
            if not isinstance(loaded, dict):
                raise InputError(f"{path}: the config must be a mapping of key: value")
            values.update(loaded)
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(
                f"unknown config key {unknown[0]!r}; known: {', '.join(sorted(known))}"
            )
        if isinstance(values.get("data"), str):
            values["data"] = [values["data"]]
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
