"""Encoder behaviour on tiny random models: pooling, delimiters, padding, truncation, batching."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from cpt_embed import Encoder, EncoderConfig
from cpt_embed.model.runtime.devices import to_dtype

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b",
    "short",
    "Contrastive pre-training learns embeddings from pairs of neighbouring texts. " * 3,
    "",
    "   ",
    "function greet(name) { return `hello ${name}`; }",
    "ünïcödé text — with dashes",
]


def _hidden(encoder: Encoder, ids: list[int]) -> torch.Tensor:
    """Last hidden states of one unpadded sequence, computed straight from the backbone."""
    with torch.no_grad():
        return encoder.backbone(input_ids=torch.tensor([ids])).last_hidden_state[0]


def test_paper_recipe_is_the_default_for_causal_lms(tiny_llama, tiny_gpt2, tiny_bert):
    for folder in (tiny_llama, tiny_gpt2):
        config = Encoder.load(folder).config
        assert config.pooling == "eos"
        assert config.delimiters == {"query": ("[", "]"), "document": ("{", "}")}
    config = Encoder.load(tiny_bert).config
    assert config.pooling == "mean"
    assert config.delimiters == {"query": ("", ""), "document": ("", "")}


@pytest.mark.parametrize("side, opening, closing", [("query", "[", "]"), ("document", "{", "}")])
def test_delimiters_wrap_each_side(tiny_llama, side, opening, closing):
    encoder = Encoder.load(tiny_llama)
    tok = encoder.tokenizer
    text = "hello world"
    ids = encoder.tokenize([text], side)["input_ids"][0].tolist()
    expected = (
        [tok.bos_token_id]
        + tok(opening + text, add_special_tokens=False)["input_ids"]
        + tok(closing, add_special_tokens=False)["input_ids"]
    )
    assert ids == expected


def test_eos_pooling_reads_the_closing_delimiter(tiny_llama):
    encoder = Encoder.load(tiny_llama, normalize=False)
    text = "def add(a, b): return a + b"
    ids = encoder.tokenize([text], "document")["input_ids"][0].tolist()
    assert encoder.tokenizer.decode(ids[-1:]) == "}"
    expected = _hidden(encoder, ids)[-1]
    got = encoder.encode([text], side="document", dtype="float32")[0]
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_eos_pooling_skips_trailing_special_tokens(tiny_bert):
    encoder = Encoder.load(
        tiny_bert,
        pooling="eos",
        normalize=False,
        delimiters={"query": ("[", "]"), "document": ("{", "}")},
    )
    ids = encoder.tokenize(["some words"], "query")["input_ids"][0].tolist()
    assert encoder.tokenizer.convert_ids_to_tokens(ids[-2:]) == ["]", "[SEP]"]
    expected = _hidden(encoder, ids)[-2]
    np.testing.assert_allclose(
        encoder.encode(["some words"], dtype="float32")[0], expected.numpy(), atol=1e-5
    )


def test_mean_and_cls_pooling(tiny_bert):
    text = "mean of the real tokens"
    mean = Encoder.load(tiny_bert, pooling="mean", normalize=False)
    cls = Encoder.load(tiny_bert, pooling="cls", normalize=False)
    ids = mean.tokenize([text])["input_ids"][0].tolist()
    hidden = _hidden(mean, ids)
    np.testing.assert_allclose(
        mean.encode([text], dtype="float32")[0], hidden.mean(0).numpy(), atol=1e-5
    )
    np.testing.assert_allclose(cls.encode([text], dtype="float32")[0], hidden[0].numpy(), atol=1e-5)


def test_vectors_are_unit_length_when_normalised(tiny_model):
    vectors = Encoder.load(tiny_model).encode(TEXTS, dtype="float32")
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_truncation_keeps_the_closing_delimiter(tiny_model):
    encoder = Encoder.load(
        tiny_model, max_length=16, delimiters={"query": ("[", "]"), "document": ("{", "}")}
    )
    long_text = "many words in a row " * 200
    ids = encoder.tokenize([long_text], "document")["input_ids"][0].tolist()
    assert len(ids) == 16
    tokens = encoder.tokens
    assert ids[len(ids) - len(tokens.trail) - len(tokens.suffix_ids["document"]) :] == (
        tokens.suffix_ids["document"] + tokens.trail
    )


def test_long_text_cut_equals_full_tokenization(tiny_model):
    """The speed-up that tokenizes only the head of a huge text changes no token."""
    encoder = Encoder.load(tiny_model, max_length=64)
    words = "alpha beta,gamma  delta\tepsilon (zeta) 12345 [eta]"
    text = " ".join([words] * 5000)
    ids = encoder.tokenize([text])["input_ids"][0].tolist()
    tokens = encoder.tokens
    prefix = encoder.config.delimiters["query"][0]
    full = encoder.tokenizer(prefix + text, add_special_tokens=False)["input_ids"]
    budget = tokens.budget("query")
    assert ids == tokens.lead + full[:budget] + tokens.suffix_ids["query"] + tokens.trail


def test_long_text_cut_ignores_whitespace_that_normalisers_delete(tiny_bert):
    """BERT's normaliser deletes U+0085, joining the words around it: no cut may fall there."""
    encoder = Encoder.load(tiny_bert, max_length=64)
    text = "a " * 60 + "unbelievab\x85ly" + "y" * 3000
    ids = encoder.tokenize([text])["input_ids"][0].tolist()
    full = encoder.tokenizer(text, add_special_tokens=False)["input_ids"]
    tokens = encoder.tokens
    assert ids == tokens.lead + full[: tokens.budget("query")] + tokens.trail


def test_padding_side_does_not_change_results(tiny_model):
    right = Encoder.load(tiny_model, padding_side="right").encode(
        TEXTS, batch_size=8, dtype="float32"
    )
    left = Encoder.load(tiny_model, padding_side="left").encode(
        TEXTS, batch_size=8, dtype="float32"
    )
    np.testing.assert_allclose(left, right, atol=1e-5)


def test_result_does_not_depend_on_batch_size_or_order(tiny_model):
    encoder = Encoder.load(tiny_model)
    one_by_one = encoder.encode(TEXTS, batch_size=1, dtype="float32")
    batched = encoder.encode(TEXTS, batch_size=3, dtype="float32")
    order = list(range(len(TEXTS)))
    random.Random(0).shuffle(order)
    shuffled = encoder.encode([TEXTS[i] for i in order], batch_size=5, dtype="float32")
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    np.testing.assert_allclose(shuffled, one_by_one[order], atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "bf16"])
def test_encode_runs_without_dropout_and_leaves_the_training_mode_as_it_was(tiny_bert, dtype):
    encoder = Encoder.load(tiny_bert)  # dropout 0.1: a forward in training mode is random
    expected = encoder.encode(TEXTS, dtype=dtype)
    encoder.train()
    np.testing.assert_array_equal(encoder.encode(TEXTS, dtype=dtype), expected)
    assert all(m.training for m in encoder.modules())
    encoder.eval()
    encoder.encode(TEXTS, dtype=dtype)
    assert not any(m.training for m in encoder.modules())


def test_token_budget_does_not_change_results(tiny_model):
    encoder = Encoder.load(tiny_model)
    tight = encoder.encode(TEXTS, max_batch_tokens=16, dtype="float32")
    loose = encoder.encode(TEXTS, max_batch_tokens=None, batch_size=64, dtype="float32")
    np.testing.assert_allclose(tight, loose, atol=1e-5)


def test_bf16_stays_close_to_fp32(tiny_model):
    encoder = Encoder.load(tiny_model)
    fp32 = encoder.encode(TEXTS, dtype="float32")
    bf16 = encoder.encode(TEXTS, dtype="bf16")
    cosine = (fp32 * bf16).sum(1) / np.linalg.norm(bf16, axis=1)
    assert cosine.min() > 0.99


@pytest.mark.cuda
def test_cuda_embeddings_equal_the_cpu_ones(tiny_model):
    cpu = Encoder.load(tiny_model, device="cpu").encode(TEXTS, dtype="float32")
    gpu = Encoder.load(tiny_model, device="cuda")
    assert np.abs(gpu.encode(TEXTS, dtype="float32") - cpu).max() < 1e-4
    bf16 = gpu.encode(TEXTS, dtype="bf16")
    assert ((cpu * bf16).sum(1) / np.linalg.norm(bf16, axis=1)).min() > 0.99
    assert to_dtype("auto", torch.device("cuda")) == torch.bfloat16


def test_bad_inputs_fail_clearly(tiny_bert):
    encoder = Encoder.load(tiny_bert)
    with pytest.raises(TypeError, match="wrap it"):
        encoder.encode("a single string")
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        encoder.encode(["ok", 3])
    with pytest.raises(ValueError, match="side must be"):
        encoder.encode(["ok"], side="passage")
    with pytest.raises(ValueError, match="batch_size"):
        encoder.encode(["ok"], batch_size=0)
    with pytest.raises(ValueError, match="dtype"):
        encoder.encode(["ok"], dtype="int3")
    with pytest.raises(ValueError, match="max_batch_tokens"):
        encoder.encode(["ok"], max_batch_tokens=0)
    with pytest.raises(TypeError, match="unknown Encoder setting"):
        Encoder.load(tiny_bert, poolin="mean")
    with pytest.raises(ValueError, match="pooling must be"):
        Encoder.load(tiny_bert, pooling="max")
    with pytest.raises(ValueError, match="no room"):
        Encoder.load(tiny_bert, max_length=1)
    assert encoder.encode([]).shape == (0, 32)


def test_empty_text_without_any_token_is_a_clear_error(tiny_gpt2):
    encoder = Encoder.load(tiny_gpt2, delimiters={})
    with pytest.raises(ValueError, match="text 1 is empty"):
        encoder.encode(["fine", ""])


def test_save_load_round_trip_is_exact(tiny_model, tmp_path):
    encoder = Encoder.load(tiny_model, max_length=48, logit_scale=20.0, training={"steps": 3})
    folder = encoder.save(tmp_path / "saved")
    assert not list(folder.glob("*.bin")) and list(folder.glob("*.safetensors"))
    loaded = Encoder.load(folder)
    assert loaded.config == encoder.config
    for side in ("query", "document"):
        np.testing.assert_array_equal(
            loaded.encode(TEXTS, side, dtype="float32"),
            encoder.encode(TEXTS, side, dtype="float32"),
        )
    saved = json.loads((folder / "cpt_config.json").read_text())
    assert saved["max_length"] == 48 and saved["logit_scale"] == 20.0


def test_save_replaces_an_existing_folder_whole(tiny_bert, tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    Encoder.load(tiny_bert).save(target)
    assert not (target / "stale.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_config_rejects_unknown_and_newer_files(tmp_path):
    config = EncoderConfig()
    data = config.to_dict()
    assert EncoderConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="unknown keys"):
        EncoderConfig.from_dict({**data, "poolng": "mean"})
    with pytest.raises(ValueError, match="upgrade cpt-embed"):
        EncoderConfig.from_dict({**data, "format_version": 99})
    (tmp_path / "cpt_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="cpt_config.json"):
        EncoderConfig.load(tmp_path)


def _pickled_copy(source, folder):
    """The model at `source` with its weights in pytorch_model.bin instead of safetensors."""
    import shutil

    from safetensors.torch import load_file

    shutil.copytree(source, folder)
    for weights in folder.glob("*.safetensors"):
        torch.save(load_file(weights), folder / "pytorch_model.bin")
        weights.unlink()
    return folder


def test_pickled_weights_are_refused_unless_trusted(tiny_bert, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cpt_embed.cli import app
    from cpt_embed.errors import InputError

    folder = _pickled_copy(tiny_bert, tmp_path / "pickled model")
    with pytest.raises(InputError, match=r"pickled \(pytorch_model.bin\).*--trust-pickle"):
        Encoder.load(folder)
    texts = ["a pickled start point", "def f(): pass"]
    expected = Encoder.load(tiny_bert).encode(texts)
    np.testing.assert_allclose(Encoder.load(folder, trust_pickle=True).encode(texts), expected)

    args = ["embed", "-", "-o", str(tmp_path / "out.npy"), "--model", str(folder)]
    refused = CliRunner().invoke(app, args, input="hello\n")
    assert refused.exit_code == 2 and "pickled" in refused.output
    assert len(refused.output.strip().splitlines()) == 1 and "Traceback" not in refused.output
    monkeypatch.delenv("CPT_TRUST_PICKLE", raising=False)
    trusted = CliRunner().invoke(app, ["--trust-pickle", *args], input="hello\n")
    assert trusted.exit_code == 0, trusted.output
    np.testing.assert_allclose(
        np.load(tmp_path / "out.npy"), Encoder.load(tiny_bert).encode(["hello"]), atol=1e-6
    )


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: (f / "tokenizer.json").write_text("{not json"), "cannot read its tokenizer"),
        (lambda f: (f / "config.json").write_text("[1, 2"), "cannot read its config.json"),
        (
            lambda f: (f / "model.safetensors").write_bytes(
                (f / "model.safetensors").read_bytes()[:1000]
            ),
            "cannot read its weights",
        ),
    ],
)
def test_damaged_model_files_fail_with_the_folder_named(tiny_bert, tmp_path, damage, message):
    import shutil

    from cpt_embed.errors import InputError

    folder = tmp_path / "damaged"
    shutil.copytree(tiny_bert, folder)
    damage(folder)
    with pytest.raises(InputError, match=message) as caught:
        Encoder.load(folder)
    assert str(folder) in str(caught.value) and "\n" not in str(caught.value)


def test_a_tokenizer_larger_than_the_model_is_refused(tiny_bert, tiny_gpt2, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    from cpt_embed.errors import InputError

    folder = tmp_path / "mismatch"
    shutil.copytree(tiny_gpt2, folder)  # 400 rows of embeddings
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        (folder / name).unlink(missing_ok=True)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)  # 30,522 tokens
    with pytest.raises(InputError, match="tokenizer files belong to another model"):
        Encoder.load(folder)
