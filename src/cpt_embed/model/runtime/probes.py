"""What the inference copy's probes found, kept on disk for the next process.

The first `encode` of a process probes the CPU copy (copy.py): two forward passes decide
whether it takes ragged rows, and a product per linear layer whether oneDNN's pre-packed
weights agree with F.linear. A fresh `cpt embed` paid about 0.1 s of its start for
answers that only change with the machine, torch, transformers and the model
(docs/benchmarks.md). A record here holds them, under a key over all of those: the CPU's
architecture and capability, the versions, the compute dtype, the model's class and
config, and its weights, named by the state of the files they were read from (path,
inode, size, mtime, ctime; `Weights`), so hashing 90 MB of weights is not needed to
know them. Records are small JSON files, never pickles, written atomically; one that
cannot be read or does not parse counts as absent, and the probes run and write it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cpt_embed.atomic import atomic_file
from cpt_embed.checksums import file_state
from cpt_embed.paths import cache_root

# Bump when what the probes test, or how a record reads, changes.
FORMAT = 1
FOLDER = "probes"


@dataclass(frozen=True)
class Weights:
    """Where a backbone's weights came from: the state of each file read (`file_state`),
    and the backbone's `weights_key` then, which tells whether they have changed since."""

    files: tuple[tuple[str, tuple[int, ...]], ...]
    key: tuple

    @classmethod
    def of(cls, files: Iterable[str | os.PathLike], key: tuple) -> Weights:
        """The weights read from `files` (in any order), `key` the backbone's weights_key."""
        paths = sorted(Path(f).resolve() for f in files)
        return cls(tuple((str(p), file_state(p)) for p in paths), key)


@dataclass(frozen=True)
class Probes:
    """What the probes found: whether the copy takes ragged rows, and the linear layers
    (qualified names) left unpacked."""

    ragged: bool
    unpacked: tuple[str, ...]


def probe_key(backbone: nn.Module, dtype: torch.dtype, weights: Weights) -> str:
    """The record's name: sha256 over everything the probes' outcome depends on."""
    import transformers

    config = getattr(backbone, "config", None)
    fields = {
        "format": FORMAT,
        "machine": platform.machine(),
        "cpu": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dtype": str(dtype),
        "class": f"{type(backbone).__module__}.{type(backbone).__qualname__}",
        "config": config.to_dict() if hasattr(config, "to_dict") else None,
        "attention": getattr(config, "_attn_implementation", None),
        "weights": weights.files,
    }
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _record(key: str) -> Path:
    return cache_root() / FOLDER / f"{key}.json"


def read_probes(key: str) -> Probes | None:
    """The record of `key`; None where there is none, or it cannot be read or trusted."""
    try:
        data = json.loads(_record(key).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent, unreadable, not UTF-8 or not JSON
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("key") != key:
        return None
    ragged, unpacked = data.get("ragged"), data.get("unpacked")
    if not isinstance(ragged, bool) or not isinstance(unpacked, list):
        return None
    if not all(isinstance(name, str) for name in unpacked):
        return None
    return Probes(ragged, tuple(unpacked))


def write_probes(key: str, probes: Probes) -> None:
    """Keep `probes` under `key` for the next process; a cache that cannot be written
    costs the probes again, nothing else."""
    record = {
        "format": FORMAT,
        "key": key,
        "torch": torch.__version__,
        "ragged": probes.ragged,
        "unpacked": list(probes.unpacked),
    }
    with contextlib.suppress(OSError), atomic_file(_record(key), "w") as handle:
        json.dump(record, handle)
