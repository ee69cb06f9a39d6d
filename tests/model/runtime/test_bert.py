"""The BERT copy made from the weights file alone against the copy made from transformers'
BertModel (copy.py): the same hidden states, padded, as ragged rows and past the cached
attention's size; and what it declines to compute."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from cpt_embed.model.resolve import resolve_model
from cpt_embed.model.runtime.attention import RAGGED, Ragged
from cpt_embed.model.runtime.bert import CpuBert, supported
from cpt_embed.model.runtime.copy import InferenceCopy

pytestmark = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="packed products need oneDNN"
)


@pytest.fixture(scope="module")
def default_model() -> Path:
    """all-MiniLM-L6-v2's folder (sentence-transformers' layout)."""
    return resolve_model("default")


def reference(folder: Path) -> torch.nn.Module:
    """encode's bfloat16 CPU copy of transformers' model of `folder`."""
    backbone = AutoModel.from_pretrained(folder).eval()
    return InferenceCopy().backbone(backbone, torch.bfloat16)


def hidden(model: torch.nn.Module, **inputs) -> torch.Tensor:
    with torch.inference_mode():
        return model(**inputs).last_hidden_state.float()


@pytest.mark.parametrize("fixture", ["tiny_bert", "default_model"])
def test_equals_the_copy_of_transformers_model(fixture, request):
    folder = request.getfixturevalue(fixture)
    fast, ref = CpuBert.load(folder, torch.bfloat16), reference(folder)
    assert fast is not None
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (3, 40), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 25:] = 0
    mask[2, 3:] = 0
    assert torch.equal(
        hidden(fast, input_ids=ids, attention_mask=mask),
        hidden(ref, input_ids=ids, attention_mask=mask),
    )
    types = torch.randint(0, 2, ids.shape, generator=generator)
    assert torch.equal(
        hidden(fast, input_ids=ids, token_type_ids=types),
        hidden(ref, input_ids=ids, token_type_ids=types),
    )

    lengths = [17, 3, 40]
    ragged = Ragged.of(lengths, sum(lengths) + 4)
    row = torch.randint(1000, 20000, (1, sum(lengths) + 4), generator=generator)
    inputs = {"input_ids": row, "position_ids": ragged.positions[None], RAGGED: ragged}
    assert torch.equal(hidden(fast, **inputs), hidden(ref, **inputs))


def test_long_sequences_take_sdpa_as_transformers_does(tiny_bert):
    # 2 heads x 800 x 800 scores exceed the cached group: both go to SDPA
    fast, ref = CpuBert.load(tiny_bert, torch.bfloat16), reference(tiny_bert)
    config = json.loads((tiny_bert / "config.json").read_text())
    ids = torch.randint(1000, 20000, (2, 800))
    mask = torch.ones_like(ids)
    mask[1, 500:] = 0
    positions = torch.arange(800) % config["max_position_embeddings"]
    got = hidden(fast, input_ids=ids, attention_mask=mask, position_ids=positions[None])
    want = hidden(ref, input_ids=ids, attention_mask=mask, position_ids=positions[None])
    assert torch.equal(got, want)


@pytest.mark.parametrize(
    "change",
    [
        {"model_type": "roberta"},
        {"position_embedding_type": "relative_key"},
        {"hidden_act": "gelu_new"},
        {"is_decoder": True},
        {"add_cross_attention": True},
        {"num_attention_heads": 3},
    ],
)
def test_declines_what_it_does_not_compute(tiny_bert, tmp_path, change):
    config = json.loads((tiny_bert / "config.json").read_text())
    assert supported(config)
    assert not supported({**config, **change})
    folder = tmp_path / "model"
    shutil.copytree(tiny_bert, folder)
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    assert CpuBert.load(folder, torch.bfloat16) is None


def test_reads_bert_prefixed_names_and_declines_others(tiny_bert, tmp_path):
    weights = load_file(tiny_bert / "model.safetensors")
    prefixed = tmp_path / "prefixed"
    shutil.copytree(tiny_bert, prefixed)
    save_file({f"bert.{k}": v for k, v in weights.items()}, prefixed / "model.safetensors")
    ids = torch.randint(1000, 20000, (2, 9))
    want = hidden(CpuBert.load(tiny_bert, torch.bfloat16), input_ids=ids)
    assert torch.equal(hidden(CpuBert.load(prefixed, torch.bfloat16), input_ids=ids), want)

    renamed = tmp_path / "renamed"  # old checkpoints' LayerNorm.gamma / beta
    shutil.copytree(tiny_bert, renamed)
    old = {k.replace("LayerNorm.weight", "LayerNorm.gamma"): v for k, v in weights.items()}
    save_file(old, renamed / "model.safetensors")
    assert CpuBert.load(renamed, torch.bfloat16) is None

    sharded = tmp_path / "sharded"
    shutil.copytree(tiny_bert, sharded)
    shutil.copy(sharded / "model.safetensors", sharded / "model-00002.safetensors")
    assert CpuBert.load(sharded, torch.bfloat16) is None


def test_rejects_unknown_arguments(tiny_bert):
    fast = CpuBert.load(tiny_bert, torch.bfloat16)
    with pytest.raises(TypeError, match="head_mask"):
        fast(input_ids=torch.ones(1, 3, dtype=torch.long), head_mask=None)


def test_a_packed_product_failing_its_probe_leaves_the_model_to_transformers(
    tiny_bert, monkeypatch
):
    probes = []

    def failing(layer, weight, bias, generator):
        probes.append(tuple(weight.shape))
        return len(probes) < 3

    monkeypatch.setattr("cpt_embed.model.runtime.bert.probe_packed", failing)
    assert CpuBert.load(tiny_bert, torch.bfloat16) is None
    monkeypatch.setattr(
        "cpt_embed.model.runtime.bert.probe_packed", lambda *a: probes.append(a) or True
    )
    probes.clear()
    assert CpuBert.load(tiny_bert, torch.bfloat16) is not None
    assert len(probes) == 4  # one per shape: query+key+value, attention out, in, out
