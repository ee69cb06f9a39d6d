"""Training batches from pair files: several sources mixed by weight, shuffled through a
buffer, endless (each source restarts when spent), and batches in which no x and no y
text appears twice. Everything follows from the seed, so a resumed run replays the
stream up to its saved position and goes on with exactly the batches it would have had."""

from __future__ import annotations

import glob
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cpt_embed.data.shards import pair_files, read_shard
from cpt_embed.errors import InputError


@dataclass(frozen=True)
class Source:
    files: list[Path]
    weight: float
    name: str


def parse_sources(specs: list[str]) -> list[Source]:
    """`path[:weight]` entries (files, pair folders or globs) to sources with weights."""
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
        if weight <= 0:
            raise InputError(f"--data {spec}: the weight must be > 0")
        matches = sorted(glob.glob(path)) or [path]
        files = [f for match in matches for f in pair_files(Path(match))]
        sources.append(Source(files, weight, path))
    return sources


def _records(source: Source) -> Iterator[dict]:
    empty = True
    while True:
        for path in source.files:
            for number, record in enumerate(read_shard(path), start=1):
                x, y = record.get("x"), record.get("y")
                if not isinstance(x, str) or not isinstance(y, str):
                    raise InputError(f"{path}: record {number} needs string fields x and y")
                empty = False
                yield record
        if empty:
            raise InputError(f"{source.name}: no pairs in {len(source.files)} file(s)")


def key_of(text: str) -> int:
    """A 63-bit id of a text (equal texts, equal ids) for masking duplicates in a batch."""
    return zlib.crc32(text.encode("utf-8")) << 31 ^ zlib.adler32(text.encode("utf-8"))


def pair_stream(sources: list[Source], seed: int, buffer: int) -> Iterator[dict]:
    """Records drawn from the sources by weight, shuffled through a `buffer`."""
    rng = np.random.default_rng(seed)
    streams = [_records(s) for s in sources]
    weights = np.array([s.weight for s in sources], dtype=float)
    weights /= weights.sum()
    pool: list[dict] = []
    while True:
        while len(pool) < buffer:
            pool.append(next(streams[rng.choice(len(streams), p=weights)]))
        index = int(rng.integers(len(pool)))
        pool[index], pool[-1] = pool[-1], pool[index]
        yield pool.pop()


def batches(
    records: Iterator[dict], batch_size: int, negatives_field: str | None = None
) -> Iterator[list[dict]]:
    """Batches of `batch_size` records with no repeated x or y; a record that would
    repeat one waits for the next batch."""
    waiting: deque[dict] = deque()
    k = None  # hard negatives per pair: the same for all, so every process gathers alike
    while True:
        batch, xs, ys, later = [], set(), set(), []
        while len(batch) < batch_size:
            record = waiting.popleft() if waiting else next(records)
            kx, ky = key_of(record["x"]), key_of(record["y"])
            if kx in xs or ky in ys:
                later.append(record)
                if len(later) > 10 * batch_size:
                    raise InputError(
                        "the pairs repeat too much to fill a batch without "
                        "duplicates; use more data or a smaller batch size"
                    )
                continue
            if negatives_field:
                negatives = record.get(negatives_field)
                if not isinstance(negatives, list) or not negatives:
                    raise InputError(
                        f"a pair has no non-empty list field {negatives_field!r} of hard negatives"
                    )
                k = len(negatives) if k is None else k
                if len(negatives) != k:
                    raise InputError(
                        f"pairs must all have the same number of hard negatives "
                        f"in {negatives_field!r} ({k}, then {len(negatives)})"
                    )
            batch.append(record)
            xs.add(kx)
            ys.add(ky)
        waiting.extend(later)
        yield batch
