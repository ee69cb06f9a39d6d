"""Encoding through a torch.compile'd backbone: same embeddings, recompiled after training,
eager mode where compiling fails."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cpt_embed import Encoder

TEXTS = ["a short text", "def f(x):\n    return x * 2", "", "word " * 80, "one more"]


def test_compiled_encoding_equals_eager_and_follows_weight_changes(tiny_bert):
    encoder = Encoder.load(tiny_bert)
    eager = encoder.encode(TEXTS, dtype="float32")
    compiled = encoder.encode(TEXTS, dtype="float32", compile=True)
    np.testing.assert_allclose(compiled, eager, atol=1e-5)
    single = encoder.encode(TEXTS[:1], dtype="float32", compile=True)
    np.testing.assert_allclose(single, eager[:1], atol=1e-5)
    with torch.no_grad():
        for param in encoder.backbone.parameters():
            param.mul_(0.5)
    changed = encoder.encode(TEXTS, dtype="float32", compile=True)
    np.testing.assert_allclose(changed, encoder.encode(TEXTS, dtype="float32"), atol=1e-5)
    assert np.abs(changed - eager).max() > 1e-3


def test_a_failing_compiler_falls_back_to_eager_with_a_warning(tiny_bert, monkeypatch):
    def broken(module, **kwargs):
        def fail(**inputs):
            raise RuntimeError("no C++ compiler here")

        return fail

    monkeypatch.setattr(torch, "compile", broken)
    encoder = Encoder.load(tiny_bert)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        vectors = encoder.encode(TEXTS, dtype="float32", compile=True)
    np.testing.assert_allclose(vectors, encoder.encode(TEXTS, dtype="float32"), atol=1e-6)
