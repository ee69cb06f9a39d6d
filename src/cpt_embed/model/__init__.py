"""Encoder: backbone + delimiters + pooling + normalisation; save, load, export. The fast
CPU inference runtime lives in `runtime/`."""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["TRUST_PICKLE_ENV", "Encoder", "EncoderConfig", "ModelNotFoundError", "resolve_model"]

if TYPE_CHECKING:
    from cpt_embed.model.config import EncoderConfig
    from cpt_embed.model.encoder import Encoder
    from cpt_embed.model.loading import TRUST_PICKLE_ENV
    from cpt_embed.model.resolve import ModelNotFoundError, resolve_model

_HOMES = {
    "Encoder": "encoder",
    "TRUST_PICKLE_ENV": "loading",
    "EncoderConfig": "config",
    "ModelNotFoundError": "resolve",
    "resolve_model": "resolve",
}


def __getattr__(name: str):
    # torch loads only when the Encoder is asked for: the CLI reads constants of this
    # package (and cpt pairs its config) without paying for it.
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"cpt_embed.model.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'cpt_embed.model' has no attribute {name!r}")
