"""The model fingerprint follows weights and the settings that shape embeddings."""

from __future__ import annotations

import torch

from cpt_embed import Encoder
from cpt_embed.model.fingerprint import model_fingerprint


def test_fingerprint_follows_weights_and_settings(tiny_bert):
    encoder = Encoder.load(tiny_bert)
    base = model_fingerprint(encoder)
    assert model_fingerprint(Encoder.load(tiny_bert)) == base
    assert model_fingerprint(Encoder.load(tiny_bert, pooling="cls")) != base
    assert model_fingerprint(Encoder.load(tiny_bert, logit_scale=3.0)) == base
    with torch.no_grad():
        next(encoder.backbone.parameters())[0, 0] += 1e-3
    assert model_fingerprint(encoder) != base
