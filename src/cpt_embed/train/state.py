"""Training state (optimiser, schedule, RNG, counters) as safetensors files: resuming reads
no pickle, so a checkpoint folder from elsewhere cannot run code when loaded.

The tensors go in the file's tensor table; everything else (nested dicts with str or int
keys, lists, tuples, numbers, strings) goes in its metadata as JSON, with each tensor's
place marked by its name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from cpt_embed.atomic import atomic_file
from cpt_embed.errors import InputError

_KEY = "cpt_state"


def save_state(state: Any, path: str | os.PathLike) -> None:
    """Write `state` to `path` atomically."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _flatten(state, tensors)
    data = save(tensors, metadata={_KEY: json.dumps(tree)})
    with atomic_file(Path(path)) as handle:
        handle.write(data)


def load_state(path: str | os.PathLike) -> Any:
    """Read what `save_state` wrote (tensors on the CPU)."""
    try:
        with safe_open(path, framework="pt") as handle:
            tree = json.loads((handle.metadata() or {})[_KEY])
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, ValueError, KeyError) as err:
        raise InputError(
            f"{path}: not a cpt-embed training state ({type(err).__name__}); resume from "
            "another checkpoint or start afresh"
        ) from err
    return _unflatten(tree, tensors)


def _flatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = value.detach().cpu().contiguous().clone()
        return {"tensor": name}
    if isinstance(value, dict):
        if not all(isinstance(key, str | int) for key in value):
            raise TypeError("training state: dict keys must be str or int")
        return {"dict": [[key, _flatten(item, tensors)] for key, item in value.items()]}
    if isinstance(value, tuple):
        return {"tuple": [_flatten(item, tensors) for item in value]}
    if isinstance(value, list):
        return [_flatten(item, tensors) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"training state: cannot store {type(value).__name__}")


def _unflatten(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, list):
        return [_unflatten(item, tensors) for item in tree]
    if isinstance(tree, dict):
        if "tensor" in tree:
            return tensors[tree["tensor"]]
        if "tuple" in tree:
            return tuple(_unflatten(item, tensors) for item in tree["tuple"])
        return {key: _unflatten(item, tensors) for key, item in tree["dict"]}
    return tree
