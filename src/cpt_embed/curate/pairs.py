"""The pairs a curation step reads, with their embeddings.

One pass over the pair files checks every record, notes its group (the repository of a
code pair, by default) and a key per normalised text, and embeds x (query side) and y
(document side) in blocks cached on disk under $CPT_CACHE/pair-vectors: an interrupted run
embeds only the blocks it lacks, and filtering then mining the same pairs embeds them once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from cpt_embed.atomic import atomic_file
from cpt_embed.data.code_pairs import normalized_hash
from cpt_embed.data.readers import read_texts
from cpt_embed.data.shards import MANIFEST, pair_files, read_shard
from cpt_embed.errors import InputError
from cpt_embed.model.fingerprint import model_fingerprint
from cpt_embed.paths import cache_root

if TYPE_CHECKING:  # torch loads with the model, after the inputs are checked
    from cpt_embed.model import Encoder

BLOCK = 4096


@dataclass
class PairSet:
    """Everything about n pairs that curation decides on; row i is the i-th pair read."""

    groups: np.ndarray  # (n,) index into group_names
    group_names: list[str]
    x_keys: np.ndarray  # (n,) ids of the normalised texts: equal texts, equal ids (x and y
    y_keys: np.ndarray  # share one id space)
    x: np.ndarray  # (n, dim) float32, unit length
    y: np.ndarray
    key_ids: dict[str, int]  # normalised-text hash -> id

    def key_of(self, hashes: list[str]) -> np.ndarray:
        """Ids of other texts' hashes in this set's id space (a text no pair holds gets an
        id below 0, the same for equal texts)."""
        unseen: dict[str, int] = {}
        ids = [self.key_ids.get(h) for h in hashes]
        return np.asarray(
            [
                unseen.setdefault(h, -1 - len(unseen)) if i is None else i
                for h, i in zip(hashes, ids, strict=True)
            ]
        )

    def __len__(self) -> int:
        return len(self.groups)


def records(files: list[Path]) -> Iterator[dict]:
    """The records of the pair files, in order."""
    for path in files:
        yield from read_shard(path)


def _checked(record: dict, path: Path, row: int) -> tuple[str, str]:
    x, y = record.get("x"), record.get("y")
    if not (isinstance(x, str) and isinstance(y, str)):
        raise InputError(
            f"{path}: pair {row + 1} has no string fields 'x' and 'y'; curate the output "
            "of `cpt pairs code|text` or records shaped like it"
        )
    return x, y


def check_pairs(source: Path) -> list[Path]:
    """The pair files of `source`, checked before the model loads: there is a first pair,
    and it has the string fields x and y."""
    files = pair_files(source)
    for path in files:
        for row, record in enumerate(read_shard(path)):
            _checked(record, path, row)
            return files
    raise InputError(f"{source}: no pairs to curate; pass the output of cpt pairs code|text")


def _count(source: Path) -> int | None:
    """The number of pairs a mining manifest declares (for the progress bar)."""
    manifest = source / MANIFEST
    if source.is_dir() and manifest.is_file():
        return json.loads(manifest.read_text(encoding="utf-8")).get("pairs")
    return None


class _BlockCache:
    """Embedding blocks of one (files, model, settings), each an atomically written .npy."""

    def __init__(self, files: list[Path], encoder: Encoder, dtype: str, what: str) -> None:
        stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
        key = json.dumps(
            [what, stats, model_fingerprint(encoder), encoder.config.max_length, dtype, BLOCK]
        )
        self.folder = cache_root() / "pair-vectors" / hashlib.sha256(key.encode()).hexdigest()[:20]
        self.encoder, self.dtype = encoder, dtype

    def get(self, index: int, sides: dict[str, list[str]], batch_size: int) -> np.ndarray:
        """(len(sides), n, dim): the texts of each side ("query", "document") embedded."""
        path = self.folder / f"block-{index:06d}.npy"
        n = len(next(iter(sides.values())))
        if path.is_file():
            block = np.load(path, allow_pickle=False)
            if block.shape[:2] == (len(sides), n):
                return block
        block = np.stack(
            [
                self.encoder.encode(texts, side, batch_size=batch_size, dtype=self.dtype)  # type: ignore[arg-type]
                for side, texts in sides.items()
            ]
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as handle:
            np.save(handle, block)
        return block


def load_pairs(
    source: Path,
    encoder: Encoder,
    *,
    group_by: str = "repo",
    batch_size: int = 128,
    dtype: str = "auto",
    show_progress: bool = True,
) -> PairSet:
    """Read and embed the pairs of `source` (a pairs folder or file). Records without the
    `group_by` field share one group."""
    files = pair_files(source)
    cache = _BlockCache(files, encoder, dtype, "pairs")
    groups: dict[str, int] = {}
    keys: dict[str, int] = {}
    rows: list[tuple[int, int, int]] = []
    blocks: list[np.ndarray] = []
    x_texts: list[str] = []
    y_texts: list[str] = []
    bar = tqdm(total=_count(source), unit="pair", desc="embedding pairs", disable=not show_progress)

    def flush() -> None:
        sides = {"query": x_texts, "document": y_texts}
        blocks.append(cache.get(len(blocks), sides, batch_size))
        bar.update(len(x_texts))
        x_texts.clear()
        y_texts.clear()

    for path in files:
        for row, record in enumerate(read_shard(path)):
            x, y = _checked(record, path, row)
            group = str(record.get(group_by, ""))
            x_key = keys.setdefault(normalized_hash(x), len(keys))
            y_key = keys.setdefault(normalized_hash(y), len(keys))
            rows.append((groups.setdefault(group, len(groups)), x_key, y_key))
            x_texts.append(x)
            y_texts.append(y)
            if len(x_texts) == BLOCK:
                flush()
    if x_texts:
        flush()
    bar.close()
    if not rows:
        raise InputError(f"{source}: no pairs to curate")
    table = np.asarray(rows, dtype=np.int64)
    vectors = np.concatenate(blocks, axis=1)
    return PairSet(
        table[:, 0], list(groups), table[:, 1], table[:, 2], vectors[0], vectors[1], keys
    )


def group_rows(groups: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(group, its rows in reading order) for each group present."""
    order = np.argsort(groups, kind="stable")
    starts = np.flatnonzero(np.diff(groups[order], prepend=-1))
    for rows in np.split(order, starts[1:]):
        yield int(groups[rows[0]]), rows


def corpus_texts(path: Path, field: str = "text") -> list[str]:
    """The texts of a corpus file (.txt, .jsonl, .parquet: data/readers.py), at least one."""
    texts = read_texts(path, field=field).texts
    if not texts:
        raise InputError(f"{path}: no texts to mine negatives from; pass a corpus with texts")
    return texts


def embed_documents(
    path: Path,
    texts: list[str],
    encoder: Encoder,
    *,
    field: str = "text",
    batch_size: int = 128,
    dtype: str = "auto",
    show_progress: bool = True,
) -> tuple[np.ndarray, list[str]]:
    """The document vectors of the `corpus_texts` of `path` (its `field`), cached like the
    pairs', and the keys of their normalised texts."""
    cache = _BlockCache([Path(path)], encoder, dtype, f"corpus:{field}")
    blocks = []
    for index, start in enumerate(
        tqdm(range(0, len(texts), BLOCK), desc="embedding corpus", disable=not show_progress)
    ):
        sides = {"document": texts[start : start + BLOCK]}
        blocks.append(cache.get(index, sides, batch_size)[0])
    return np.concatenate(blocks), [normalized_hash(t) for t in texts]
