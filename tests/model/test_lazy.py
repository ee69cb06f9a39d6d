"""Encoder.load without transformers' model: encode runs on the copy made from the weights
file, and everything else that reaches the backbone loads it first, transparently."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from cpt_embed.errors import InputError
from cpt_embed.model import Encoder, loading
from cpt_embed.model.fingerprint import model_fingerprint
from cpt_embed.model.lazy import LazyModules
from cpt_embed.model.runtime.devices import native_bf16

pytestmark = pytest.mark.skipif(
    not (native_bf16(torch.device("cpu")) and torch.backends.mkldnn.is_available()),
    reason="the deferred load needs native bfloat16 and oneDNN on this CPU",
)
TEXTS = ["a short one", "def add(a, b):\n    return a + b", "x " * 300, ""]


def loaded(encoder: Encoder) -> bool:
    modules = encoder._modules
    return not isinstance(modules, LazyModules) or modules.fast is None


@pytest.fixture
def eager(tiny_bert_no_dropout, monkeypatch) -> Encoder:
    """The same model loaded the way other models load: transformers' model at once."""
    with monkeypatch.context() as patch:
        patch.setattr("cpt_embed.model.encoder.cpu_copy", lambda folder, device: None)
        encoder = Encoder.load(tiny_bert_no_dropout)
    assert loaded(encoder)
    return encoder


def test_encode_equals_the_eager_encoders_without_loading_the_backbone(tiny_bert_no_dropout, eager):
    lazy = Encoder.load(tiny_bert_no_dropout)
    assert not loaded(lazy) and lazy.device.type == "cpu" and lazy.dim == eager.dim
    for side in ("query", "document"):
        np.testing.assert_array_equal(lazy.encode(TEXTS, side), eager.encode(TEXTS, side))
    assert not loaded(lazy)
    # float32 is the backbone's own: it loads
    np.testing.assert_array_equal(
        lazy.encode(TEXTS, dtype="float32"), eager.encode(TEXTS, dtype="float32")
    )
    assert loaded(lazy)
    np.testing.assert_array_equal(lazy.encode(TEXTS), eager.encode(TEXTS))


@pytest.mark.parametrize(
    "touch",
    [
        lambda e: e.backbone,
        lambda e: list(e.parameters()),
        lambda e: e.state_dict(),
        lambda e: e.train(),
        lambda e: e.to("cpu"),
        lambda e: copy.deepcopy(e),
        lambda e: repr(e),
    ],
    ids=["attribute", "parameters", "state_dict", "train", "to", "deepcopy", "repr"],
)
def test_anything_else_loads_the_backbone_first(tiny_bert_no_dropout, eager, touch):
    lazy = Encoder.load(tiny_bert_no_dropout)
    touch(lazy)
    assert loaded(lazy)
    assert lazy.state_dict().keys() == eager.state_dict().keys()
    for name, tensor in eager.state_dict().items():
        assert torch.equal(lazy.state_dict()[name], tensor), name
    assert model_fingerprint(lazy) == model_fingerprint(eager)


def test_training_steps_change_what_encode_returns(tiny_bert_no_dropout):
    lazy = Encoder.load(tiny_bert_no_dropout)
    before = lazy.encode(TEXTS)
    lazy.train()
    optimizer = torch.optim.SGD(lazy.parameters(), lr=0.5)
    batch = lazy.tokenize(TEXTS[:2])
    (lazy(batch)[0] @ lazy(batch)[1]).backward()
    optimizer.step()
    lazy.eval()
    assert not np.allclose(lazy.encode(TEXTS), before, atol=1e-3)


def test_threads_load_it_once(tiny_bert_no_dropout, monkeypatch):
    calls = []
    real = loading.read_backbone

    def counted(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr("cpt_embed.model.encoder.read_backbone", counted)
    lazy = Encoder.load(tiny_bert_no_dropout)
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(lazy.backbone)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and all(b is seen[0] for b in seen)


def test_a_fresh_process_never_imports_transformers_model_code(tiny_bert_no_dropout, tmp_path):
    script = (
        "import json, sys\n"
        "from cpt_embed.model import Encoder\n"
        f"e = Encoder.load({os.fspath(tiny_bert_no_dropout)!r})\n"
        "e.encode(['hello world', 'def f(): pass'])\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('transformers.model'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    imported = json.loads(out.stdout)
    assert "transformers.modeling_utils" not in imported
    assert "transformers.models.bert.modeling_bert" not in imported
    assert "transformers.models.bert.configuration_bert" in imported  # the script ran


def test_the_vocabulary_check_holds_without_the_backbone(tiny_bert, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_bert, folder)
    config = json.loads((folder / "config.json").read_text())
    weights = load_file(folder / "model.safetensors")
    name = "embeddings.word_embeddings.weight"
    weights[name] = weights[name][:100].clone()
    save_file(weights, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({**config, "vocab_size": 100}))
    with pytest.raises(InputError, match="embeds only 100"):
        Encoder.load(Path(folder))


def test_first_use_inside_inference_mode_still_gives_trainable_weights(tiny_bert_no_dropout):
    lazy = Encoder.load(tiny_bert_no_dropout)
    with torch.inference_mode():
        lazy.encode(TEXTS)
        backbone = lazy.backbone
    assert not any(p.is_inference() for p in backbone.parameters())
    lazy(lazy.tokenize(TEXTS[:2])).sum().backward()
