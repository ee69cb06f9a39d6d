"""cpt-embed: text and code embeddings by contrastive pre-training."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["Encoder", "EncoderConfig", "__version__"]

if TYPE_CHECKING:
    from cpt_embed.model import Encoder, EncoderConfig


def __getattr__(name: str):
    # torch and transformers load only when the Encoder is asked for, so commands that do
    # not embed (cpt pairs, --help) start fast and small.
    if name in ("Encoder", "EncoderConfig"):
        from cpt_embed import model

        return getattr(model, name)
    raise AttributeError(f"module 'cpt_embed' has no attribute {name!r}")
