"""Encoder: backbone + delimiters + pooling + normalisation; save, load, export."""

from cpt_embed.model.config import EncoderConfig
from cpt_embed.model.encoder import Encoder
from cpt_embed.model.resolve import ModelNotFoundError, resolve_model

__all__ = ["Encoder", "EncoderConfig", "ModelNotFoundError", "resolve_model"]
