"""A model's identity for caches and indexes: what decides its embeddings, hashed."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cpt_embed.model.encoder import Encoder

# Settings that change no embedding.
_IRRELEVANT = ("logit_scale", "base_model", "training", "padding_side")


def model_fingerprint(encoder: Encoder) -> str:
    """sha256 over the settings that shape embeddings, the tokenizer and every weight."""
    import torch

    digest = hashlib.sha256()
    settings = {k: v for k, v in encoder.config.to_dict().items() if k not in _IRRELEVANT}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    backend = getattr(encoder.tokenizer, "backend_tokenizer", None)
    digest.update((backend.to_str() if backend is not None else repr(encoder.tokenizer)).encode())
    for name, tensor in sorted(encoder.backbone.state_dict().items()):
        digest.update(name.encode())
        data = tensor.detach().cpu().contiguous()
        if data.dtype == torch.bfloat16:
            data = data.view(torch.int16)
        digest.update(data.numpy().tobytes())
    return digest.hexdigest()
