"""Token ids embedded as given, and what a request's inputs cost.

Token ids go to the model as they are: the model's special tokens and the side's
delimiters around them, as `DelimitedTokenizer.encode` puts them around a text's tokens,
cut to the model's max_length keeping the closing delimiter. They are never decoded and
tokenized again (which changed them: [CLS] [SEP] became the empty string, and 8,192 ids
became 8,194 tokens)."""

from __future__ import annotations

import numpy as np

from cpt_embed.model import Encoder
from cpt_embed.model.runtime.devices import to_dtype


def _prefix_ids(encoder: Encoder, side: str) -> list[int]:
    prefix = encoder.config.delimiters[side][0]
    if not prefix:
        return []
    return list(encoder.tokenizer(prefix, add_special_tokens=False)["input_ids"])


def id_sequences(encoder: Encoder, ids: list[list[int]], side: str) -> list[list[int]]:
    """The full token sequences the model reads for token id inputs on `side`."""
    tokens = encoder.tokens
    prefix, budget = _prefix_ids(encoder, side), tokens.budget(side)
    closing = tokens.suffix_ids[side] + tokens.trail
    return [tokens.lead + (prefix + row)[:budget] + closing for row in ids]


def embed_ids(encoder: Encoder, ids: list[list[int]], side: str) -> np.ndarray:
    """float32 vectors of token id inputs, computed as `Encoder.encode` computes a text's
    (same runtime, dtype and batching) from the sequences of `id_sequences`. The Encoder has
    no public entry for token sequences, so this calls the private one `encode` hands its
    sequences to."""
    return encoder._encode_sequences(
        id_sequences(encoder, ids, side),
        side,
        batch_size=128,
        max_batch_tokens=None,
        dtype=to_dtype("auto", encoder.device),
        compile=False,
        show_progress=False,
    )


def usage(encoder: Encoder, lengths: list[int], side: str) -> list[int]:
    """Tokens the model reads for inputs of `lengths` own tokens: with its special tokens
    and the side's delimiters, each up to max_length."""
    tokens = encoder.tokens
    fixed = len(tokens.lead) + len(tokens.trail) + len(tokens.suffix_ids[side])
    prefix, budget = len(_prefix_ids(encoder, side)), tokens.budget(side)
    return [fixed + min(prefix + n, budget) for n in lengths]
