"""The torch.compile'd backbone: the same embeddings as eager mode, compiled again after
training, eager mode where compiling fails, and no compiling of a packed CPU copy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cpt_embed import Encoder
from cpt_embed.model.runtime.packing import is_packed

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
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler") as caught:
        vectors = encoder.encode(TEXTS, dtype="float32", compile=True)
    assert caught[0].filename.endswith("encoder.py")  # the call to the runtime in encode
    np.testing.assert_allclose(vectors, encoder.encode(TEXTS, dtype="float32"), atol=1e-6)


def test_compile_on_a_packed_cpu_copy_runs_it_eagerly(tiny_bert, monkeypatch):
    encoder = Encoder.load(tiny_bert)
    if not is_packed(encoder._runtime.copy.backbone(encoder.backbone, torch.bfloat16)):
        pytest.skip("oneDNN cannot pack here")
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("compiled"))
    np.testing.assert_array_equal(
        encoder.encode(TEXTS, dtype="bf16", compile=True), encoder.encode(TEXTS, dtype="bf16")
    )
