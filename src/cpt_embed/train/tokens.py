"""Pair files as token ids, tokenized once and cached, so that no step tokenizes or hashes
a text on the training's critical path.

Each pair file gets a folder under $CPT_CACHE/tokens named by what decides its token ids:
the file (resolved path, size, modification time), the tokenizer, max_length, the
delimiters and the hard-negatives field. It holds, per column (x, y and the negatives):
the ids of all its sequences end to end (int32, delimiters and special tokens included,
truncated as `Encoder.tokenize` truncates), where each sequence starts, and a 63-bit key
of each text (equal texts, equal keys) for keeping duplicates out of a batch. The folder
is written atomically (a crash leaves none or a whole one) and read memory-mapped, so a
corpus of any size costs no memory to open. A changed file gets a new folder.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cpt_embed.atomic import atomic_dir
from cpt_embed.data.shards import read_shard
from cpt_embed.errors import InputError
from cpt_embed.model.tokenize import DelimitedTokenizer
from cpt_embed.paths import cache_root

FORMAT_VERSION = 1
META = "meta.json"
# Texts tokenized per call of the tokenizer while building a cache folder.
_BLOCK = 4096


def key_of(text: str) -> int:
    """A 63-bit id of a text (equal texts, equal ids) for masking duplicates in a batch."""
    data = text.encode("utf-8", "surrogatepass")
    return zlib.crc32(data) << 31 ^ zlib.adler32(data)


@dataclass(frozen=True)
class Column:
    """Token id sequences end to end: sequence i is ids[starts[i]:starts[i + 1]]."""

    ids: np.ndarray
    starts: np.ndarray
    keys: np.ndarray

    def __len__(self) -> int:
        return len(self.starts) - 1

    def sequence(self, i: int) -> np.ndarray:
        return self.ids[self.starts[i] : self.starts[i + 1]]

    def length(self, i: int) -> int:
        return int(self.starts[i + 1] - self.starts[i])


@dataclass(frozen=True)
class TokenizedPairs:
    """One pair file's x and y token ids, and `k` hard negatives per pair (pair i's are
    rows i*k .. i*k + k - 1 of `negatives`; k is 0 without them)."""

    path: Path
    x: Column
    y: Column
    negatives: Column | None
    k: int

    def __len__(self) -> int:
        return len(self.x)


def tokenizer_fingerprint(tokens: DelimitedTokenizer) -> str:
    """sha256 of what decides the token ids of a text on either side."""
    backend = getattr(tokens.tokenizer, "backend_tokenizer", None)
    digest = hashlib.sha256((backend.to_str() if backend else repr(tokens.tokenizer)).encode())
    settings = {
        "max_length": tokens.config.max_length,
        "delimiters": tokens.config.delimiters,
        "lead": tokens.lead,
        "trail": tokens.trail,
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def cache_folder(path: Path, fingerprint: str, negatives: str | None) -> Path:
    """Where the token ids of pair file `path` live for this tokenizer and field."""
    stat = path.stat()
    identity = {
        "format": FORMAT_VERSION,
        "file": str(path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "tokenizer": fingerprint,
        "negatives": negatives,
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return cache_root() / "tokens" / key[:2] / key


def tokenized(
    path: Path,
    tokens: DelimitedTokenizer,
    fingerprint: str,
    negatives: str | None = None,
    *,
    show_progress: bool = False,
) -> TokenizedPairs:
    """The token ids of pair file `path`, from the cache, tokenizing it on first use."""
    folder = cache_folder(path, fingerprint, negatives)
    if not (folder / META).is_file():
        _build(path, folder, tokens, negatives, show_progress)
    return _load(path, folder)


def _load(path: Path, folder: Path) -> TokenizedPairs:
    meta = json.loads((folder / META).read_text(encoding="utf-8"))

    def column(name: str) -> Column:
        arrays = (np.load(folder / f"{name}_{a}.npy", mmap_mode="r") for a in ("ids", "starts"))
        return Column(*arrays, np.load(folder / f"{name}_keys.npy", mmap_mode="r"))

    k = meta["k"]
    return TokenizedPairs(path, column("x"), column("y"), column("negatives") if k else None, k)


def _build(
    path: Path, folder: Path, tokens: DelimitedTokenizer, field: str | None, show: bool
) -> None:
    """Tokenize the records of `path` block by block into a new cache folder."""
    columns = {"x": _Writer(), "y": _Writer(), "negatives": _Writer()}
    k: int | None = None
    bar = tqdm(desc=f"tokenizing {path.name}", unit="pair", disable=not show, leave=False)
    with bar:
        for block in _blocks(path, field):
            for name, side in (("x", "query"), ("y", "document")):
                columns[name].add(tokens, [record[name] for record in block], side)
            if field is not None:
                for record in block:
                    k = _check_negatives(path, record, field, k)
                texts = [n for record in block for n in record[field]]
                columns["negatives"].add(tokens, texts, "document")
            bar.update(len(block))
    with atomic_dir(folder) as tmp:
        for name, writer in columns.items():
            if name != "negatives" or field is not None:
                writer.save(tmp, name)
        meta = {"format": FORMAT_VERSION, "source": str(path), "pairs": len(columns["x"])}
        (tmp / META).write_text(json.dumps({**meta, "k": k or 0}), encoding="utf-8")


def _blocks(path: Path, field: str | None) -> Iterator[list[dict]]:
    """The records of a pair file in blocks, each checked: x and y strings."""
    block: list[dict] = []
    for number, record in enumerate(read_shard(path), start=1):
        if not isinstance(record.get("x"), str) or not isinstance(record.get("y"), str):
            raise InputError(f"{path}: record {number} needs string fields x and y")
        for name in ("x", "y"):
            _check_text(record[name], f"{path}: record {number} field {name!r}")
        record["_number"] = number
        block.append(record)
        if len(block) == _BLOCK:
            yield block
            block = []
    if block:
        yield block


def _check_negatives(path: Path, record: dict, field: str, k: int | None) -> int:
    """The number of hard negatives of `record`, which must match the file's so far."""
    negatives = record.get(field)
    where = f"{path}: record {record['_number']}"
    if not isinstance(negatives, list) or not negatives:
        raise InputError(f"{where}: a pair has no non-empty list field {field!r} of hard negatives")
    if not all(isinstance(n, str) for n in negatives):
        raise InputError(f"{where}: the hard negatives in {field!r} must be strings")
    for negative in negatives:
        _check_text(negative, f"{where} field {field!r}")
    if k is not None and len(negatives) != k:
        raise InputError(
            f"{where}: pairs must all have the same number of hard negatives in {field!r} "
            f"({k}, then {len(negatives)})"
        )
    return len(negatives)


def _check_text(text: str, where: str) -> None:
    """A text the tokenizer can take: UTF-8, so no half of a UTF-16 surrogate pair (valid
    JSON can hold one, as \\ud800)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(
            f"{where} holds half of a UTF-16 surrogate pair, which is no text; fix or drop it"
        ) from None


class _Writer:
    """A column being built: token id blocks, lengths and keys."""

    def __init__(self) -> None:
        self.ids: list[np.ndarray] = []
        self.lengths: list[int] = []
        self.keys: list[int] = []

    def __len__(self) -> int:
        return len(self.lengths)

    def add(self, tokens: DelimitedTokenizer, texts: list[str], side: str) -> None:
        for sequence in tokens.encode(texts, side):
            self.ids.append(np.asarray(sequence, dtype=np.int32))
            self.lengths.append(len(sequence))
        self.keys += [key_of(text) for text in texts]

    def save(self, folder: Path, name: str) -> None:
        starts = np.zeros(len(self.lengths) + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=starts[1:])
        ids = np.concatenate(self.ids) if self.ids else np.zeros(0, dtype=np.int32)
        np.save(folder / f"{name}_ids.npy", ids)
        np.save(folder / f"{name}_starts.npy", starts)
        np.save(folder / f"{name}_keys.npy", np.asarray(self.keys, dtype=np.int64))
