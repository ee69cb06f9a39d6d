"""The settings that turn a backbone into an embedding model, stored as `cpt_config.json`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

from cpt_embed.errors import InputError

Side = Literal["query", "document"]
Pooling = Literal["eos", "mean", "cls"]
SIDES: tuple[Side, ...] = ("query", "document")
POOLINGS: tuple[Pooling, ...] = ("eos", "mean", "cls")
CONFIG_NAME = "cpt_config.json"
FORMAT_VERSION = 1

# The paper's delimiters: query side x is wrapped in [ ], document side y in { }.
PAPER_DELIMITERS: dict[str, tuple[str, str]] = {"query": ("[", "]"), "document": ("{", "}")}
NO_DELIMITERS: dict[str, tuple[str, str]] = {"query": ("", ""), "document": ("", "")}


@dataclasses.dataclass
class EncoderConfig:
    """How an Encoder reads text and pools it into one vector.

    pooling: `eos` takes the hidden state of the closing delimiter (the last token when
        there is none), the paper's choice for causal LMs; `mean` averages the real tokens;
        `cls` takes the first token.
    delimiters: per side, the (opening, closing) strings put around the text. They are
        tokenized on their own, so the closing delimiter is always whole and always kept.
    max_length: tokens per input, delimiters and the tokenizer's special tokens included.
    padding_side: `right` or `left`; results do not depend on it.
    logit_scale: exp(tau) learned in training (None for a model never trained here).
    """

    pooling: Pooling = "mean"
    delimiters: dict[str, tuple[str, str]] = dataclasses.field(
        default_factory=lambda: dict(NO_DELIMITERS)
    )
    max_length: int = 256
    normalize: bool = True
    padding_side: Literal["right", "left"] = "right"
    logit_scale: float | None = None
    base_model: str | None = None
    training: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise InputError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.padding_side not in ("right", "left"):
            raise InputError(f"padding_side must be 'right' or 'left', got {self.padding_side!r}")
        if not isinstance(self.max_length, int) or self.max_length < 1:
            raise InputError(f"max_length must be a positive integer, got {self.max_length!r}")
        delimiters = {}
        for side in SIDES:
            pair = self.delimiters.get(side, ("", ""))
            if len(pair) != 2 or not all(isinstance(s, str) for s in pair):
                raise InputError(f"delimiters[{side!r}] must be two strings, got {pair!r}")
            delimiters[side] = (pair[0], pair[1])
        unknown = set(self.delimiters) - set(SIDES)
        if unknown:
            raise InputError(f"delimiters has unknown sides {sorted(unknown)}; use {SIDES}")
        self.delimiters = delimiters

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form written to `cpt_config.json`."""
        data = dataclasses.asdict(self)
        data["delimiters"] = {side: list(pair) for side, pair in self.delimiters.items()}
        return {"format_version": FORMAT_VERSION, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        """Build from the JSON form; unknown keys are an error, not silently dropped."""
        data = dict(data)
        version = data.pop("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise InputError(
                f"{CONFIG_NAME} has format_version {version}, newer than this cpt-embed "
                f"understands ({FORMAT_VERSION}); upgrade cpt-embed"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise InputError(f"{CONFIG_NAME} has unknown keys {sorted(unknown)}")
        if "delimiters" in data:
            data["delimiters"] = {k: tuple(v) for k, v in data["delimiters"].items()}
        return cls(**data)

    def save(self, folder: str | Path) -> None:
        """Write `cpt_config.json` into `folder`."""
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        (Path(folder) / CONFIG_NAME).write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> EncoderConfig:
        """Read `cpt_config.json` from `folder`, naming the file in any error."""
        path = Path(folder) / CONFIG_NAME
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError, ValueError) as err:
            raise InputError(f"{path}: {err}") from err
