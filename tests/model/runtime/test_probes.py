"""The inference copy's probe results kept on disk: used by the next load of the same model
files, found again when the machine's torch or transformers, the files or the weights in
memory change, a damaged record ignored and written again; the same vectors either way."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cpt_embed import Encoder
from cpt_embed.model.runtime import copy as copy_module
from cpt_embed.model.runtime import packing
from cpt_embed.model.runtime.packing import PackedLinear, pack_linears
from cpt_embed.model.runtime.probes import FOLDER

TEXTS = ["a short text", "def f(x):\n    return x * 2", "", "word " * 40, "one more"]


class Spy:
    """Counts the ragged-rows probes and the packing probes (layers probed) run."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ragged = self.packed = 0
        takes, packed = copy_module._takes_ragged_rows, packing._packed

        def counted_takes(backbone: nn.Module) -> bool:
            self.ragged += 1
            return takes(backbone)

        def counted_packed(linear: nn.Linear, generator: torch.Generator | None):
            self.packed += generator is not None
            return packed(linear, generator)

        monkeypatch.setattr(copy_module, "_takes_ragged_rows", counted_takes)
        monkeypatch.setattr(packing, "_packed", counted_packed)


@pytest.fixture(autouse=True)
def transformers_copy(monkeypatch) -> None:
    """These probes are those of the copy made from transformers' model, which Encoder.load
    skips for a BERT on a CPU with bfloat16 (runtime/bert.py makes its own)."""
    monkeypatch.setattr("cpt_embed.model.encoder.cpu_copy", lambda folder, device: None)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CPT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / FOLDER


@pytest.fixture
def model(tiny_bert_no_dropout, tmp_path) -> Path:
    """A copy of the tiny model whose files a test may change."""
    return Path(shutil.copytree(tiny_bert_no_dropout, tmp_path / "model"))


def _encode(model: Path) -> tuple[np.ndarray, Encoder]:
    encoder = Encoder.load(model)
    return encoder.encode(TEXTS, dtype="bf16"), encoder


def _records(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.json")) if cache.is_dir() else []


def test_the_second_load_uses_the_probes_of_the_first(cache, model, monkeypatch):
    spy = Spy(monkeypatch)
    first, encoder = _encode(model)
    assert spy.ragged == 1 and spy.packed > 0
    [record] = _records(cache)
    assert json.loads(record.read_text())["ragged"] is True
    probed = spy.packed
    again, encoder = _encode(model)
    assert (spy.ragged, spy.packed) == (1, probed)
    assert np.array_equal(first, again)
    copy = encoder._runtime.copy.backbone(encoder.backbone, torch.bfloat16)
    assert encoder._runtime.copy.ragged(copy)
    assert any(isinstance(m, PackedLinear) for m in copy.modules())


@pytest.mark.parametrize("module", ["torch", "transformers"])
def test_a_new_torch_or_transformers_probes_again(cache, model, monkeypatch, module):
    spy = Spy(monkeypatch)
    first, _ = _encode(model)
    # importing some of transformers' classes puts a new module object in sys.modules
    monkeypatch.setattr(sys.modules[module], "__version__", "99.0.0")
    again, _ = _encode(model)
    assert spy.ragged == 2 and len(_records(cache)) == 2
    assert np.array_equal(first, again)


def test_changed_model_files_probe_again(cache, model, monkeypatch):
    spy = Spy(monkeypatch)
    _encode(model)
    weights = model / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    _encode(model)
    assert spy.ragged == 2 and len(_records(cache)) == 2


def test_weights_changed_in_memory_are_probed_and_not_recorded(cache, model, monkeypatch):
    spy = Spy(monkeypatch)
    encoder = Encoder.load(model)
    encoder.encode(TEXTS, dtype="bf16")
    with torch.no_grad():
        for param in encoder.backbone.parameters():
            param.mul_(1.01)
    encoder.encode(TEXTS, dtype="bf16")
    assert spy.ragged == 2 and len(_records(cache)) == 1  # the file's record only


DAMAGES = {
    "empty": lambda good: b"",
    "cut short": lambda good: json.dumps(good).encode()[:20],
    "not utf-8": lambda good: b"\xff\xfe\x00",
    "a list": lambda good: b"[]",
    "a wrong type": lambda good: json.dumps(good | {"ragged": "yes"}).encode(),
    "a wrong name": lambda good: json.dumps(good | {"unpacked": [3]}).encode(),
    "another key": lambda good: json.dumps(good | {"key": "0" * 64}).encode(),
    "another format": lambda good: json.dumps(good | {"format": 0}).encode(),
}


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_damaged_record_is_ignored_and_written_again(cache, model, monkeypatch, damage):
    spy = Spy(monkeypatch)
    first, _ = _encode(model)
    [record] = _records(cache)
    good = record.read_text()
    record.write_bytes(damage(json.loads(good)))
    again, _ = _encode(model)
    assert spy.ragged == 2
    assert record.read_text() == good
    assert np.array_equal(first, again)


def test_the_copy_follows_its_record(cache, model):
    _encode(model)
    [record] = _records(cache)
    data = json.loads(record.read_text())
    data |= {"ragged": False, "unpacked": ["encoder.layer.0.attention.self.query"]}
    record.write_text(json.dumps(data))
    _, encoder = _encode(model)
    copy = encoder._runtime.copy.backbone(encoder.backbone, torch.bfloat16)
    assert not encoder._runtime.copy.ragged(copy)
    assert type(copy.encoder.layer[0].attention.self.query) is nn.Linear
    assert isinstance(copy.encoder.layer[0].attention.self.key, PackedLinear)


def test_an_unwritable_cache_costs_the_probes_only(tmp_path, model, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("CPT_CACHE", str(blocker))
    spy = Spy(monkeypatch)
    first, _ = _encode(model)
    again, _ = _encode(model)
    assert spy.ragged == 2
    assert np.array_equal(first, again)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")
def test_packing_leaves_the_callers_random_numbers_alone():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4)).to(torch.bfloat16)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    assert pack_linears(model) == []
    assert torch.equal(torch.rand(3), expected)
    assert pack_linears(nn.Sequential(nn.Linear(8, 8)), unpacked=["0"]) == ["0"]
