"""The sources of a training run: `--data` entries (files, pair folders or globs, each
optionally `path:weight`) checked and resolved to pair files. Light on purpose: `cpt train`
checks them before torch loads."""

from __future__ import annotations

import glob
import math
from dataclasses import dataclass
from pathlib import Path

from cpt_embed.data.shards import holds_pairs, pair_files
from cpt_embed.errors import InputError


@dataclass(frozen=True)
class Source:
    """One `--data` entry: its pair files, its mixing weight and its name (the path)."""

    files: list[Path]
    weight: float
    name: str


def parse_sources(specs: list[str]) -> list[Source]:
    """`path[:weight]` entries (files, pair folders or globs) to sources with weights; a
    source without a pair is an error (found reading up to the first pair of each file)."""
    if not specs:
        raise InputError("no training data: pass --data PAIRS (files, folders or globs)")
    sources = []
    for spec in specs:
        path, weight = spec, 1.0
        head, sep, tail = spec.rpartition(":")
        if sep and head:
            try:
                path, weight = head, float(tail)
            except ValueError:
                path, weight = spec, 1.0
        if not math.isfinite(weight) or weight <= 0:
            raise InputError(f"--data {spec}: the weight must be a finite number > 0")
        matches = sorted(glob.glob(path)) or [path]
        files = [f for match in matches for f in pair_files(Path(match))]
        if not any(holds_pairs(f) for f in files):
            raise InputError(
                f"--data {spec}: no pairs in {len(files)} file(s); pass pairs from cpt pairs "
                "code|text"
            )
        sources.append(Source(files, weight, path))
    return sources
