"""Model names to folders: the verified default package, local folders, hub ids offline."""

from __future__ import annotations

import hashlib

import pytest

from cpt_embed.checksums import sha256_of
from cpt_embed.model.resolve import (
    DEFAULT_MODEL_SHA256,
    ModelNotFoundError,
    default_model_dir,
    resolve_model,
    verify_sha256,
)


def test_default_is_the_packaged_minilm_with_the_upstream_checksum():
    folder = resolve_model("default")
    assert folder == default_model_dir()
    assert sha256_of(folder / "model.safetensors") == DEFAULT_MODEL_SHA256


def test_checksum_mismatch_is_refused(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"not the real weights")
    verify_sha256(weights, hashlib.sha256(b"not the real weights").hexdigest())
    with pytest.raises(ModelNotFoundError, match="sha256 differs"):
        verify_sha256(weights, DEFAULT_MODEL_SHA256)


def test_local_folder_is_used_as_is(tmp_path):
    assert resolve_model(tmp_path) == tmp_path
    assert resolve_model(str(tmp_path)) == tmp_path


def test_missing_paths_and_unreachable_hub_ids_fail_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="no such file or folder"):
        resolve_model(str(tmp_path / "absent"))
    with pytest.raises(ModelNotFoundError, match="could not be fetched from the Hugging Face hub"):
        resolve_model("some-org/some-model-that-is-not-cached")
