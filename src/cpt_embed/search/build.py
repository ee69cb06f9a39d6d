"""Building and updating an index folder: from folders of files (chunked and embedded, an
update re-embedding only the files that changed) or from Parquet embedding shards
(streamed, for millions of vectors embedded elsewhere). Each writes a whole new folder and
swaps it in (see `cpt_embed.search.store` for the layout)."""

from __future__ import annotations

import stat
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from cpt_embed.atomic import atomic_dir
from cpt_embed.checksums import sha256_of
from cpt_embed.data.files import NOT_REGULAR
from cpt_embed.data.vectors import VectorShard, iter_vector_batches, vector_shards
from cpt_embed.data.walk import walk_files
from cpt_embed.errors import InputError, missing_path
from cpt_embed.model.fingerprint import model_fingerprint
from cpt_embed.model.runtime import COMPILE_FROM
from cpt_embed.search.chunks import MAX_FILE_BYTES, Chunk, chunk_file, kind_of
from cpt_embed.search.index import (
    FaissIndex,
    add_vectors,
    check_precision,
    empty_faiss_index,
    faiss_index,
    train_faiss_index,
    training_rows,
    write_faiss_index,
)
from cpt_embed.search.lexical import write_lexical
from cpt_embed.search.store import (
    FAISS_INDEX,
    VECTORS,
    check_model,
    check_output,
    new_metadata,
    read_files,
    read_manifest,
    write_chunks,
    write_files,
    write_manifest,
    write_vector_ids,
)

if TYPE_CHECKING:  # torch loads with the model, after the inputs are checked
    from cpt_embed.model import Encoder

# rows of embedding shards read, written and added at a time (100 MB at 384 dims)
BATCH_ROWS = 65_536


@dataclass
class IndexReport:
    """What a build or update did."""

    path: Path
    files: int
    chunks: int
    embedded: int
    removed_files: int
    seconds: float
    counts: dict[str, int]


@dataclass
class _Previous:
    """What an update takes from the index it replaces, by file key: content hashes, the
    (row, chunk) pairs, and the vectors those rows point into."""

    hashes: dict[str, str] = field(default_factory=dict)
    chunks: dict[str, list[tuple[int, Chunk]]] = field(default_factory=dict)
    vectors: np.ndarray | None = None


@dataclass
class _Chunks:
    """The chunks of a build in row order, where each one's vector comes from (its row in
    the previous index, or -1 to embed it), the files read, and what was skipped."""

    chunks: list[Chunk] = field(default_factory=list)
    reused: list[int] = field(default_factory=list)
    files: list[tuple[str, str, str]] = field(default_factory=list)  # key, root, hash
    counts: Counter = field(default_factory=Counter)

    def add(self, chunk: Chunk, old_row: int = -1) -> None:
        """Append `chunk`, reusing row `old_row` of the previous index if it is not -1."""
        self.chunks.append(chunk)
        self.reused.append(old_row)


def check_build(
    paths: list[Path],
    out: Path,
    *,
    from_embeddings: bool = False,
    kind: str = "flat",
    precision: str = "float32",
) -> None:
    """Refuse, before the model loads, a build that would fail: a kind and precision that
    do not go together (see `check_precision`), an output that is no index (see
    `check_output`), a root that is missing or holds no file to index, or (with
    `from_embeddings`) embedding shards that cannot be read or hold no vectors."""
    check_precision(kind, precision)
    check_output(out)
    if from_embeddings:
        shards = vector_shards(paths)
        if not sum(shard.rows for shard in shards):
            raise InputError(f"{shards[0].path}: no vectors in the {len(shards)} shard(s) given")
        return
    for root in map(Path, paths):
        if not root.exists():
            raise missing_path(root)
        if not (root.is_dir() or root.is_file()):
            raise InputError(
                f"{root}: a pipe, device or socket, not a file; an index reads its files "
                "again on update, so write it to a file and index that"
            )
        if not any(kind_of(item.path) for item in walk_files(root, skip_tests=False)):
            raise InputError(
                f"{root}: no files to index (code, Markdown, text, .jsonl/.parquet records); "
                "pass folders or files of code or documents"
            )


def check_update(index: Path) -> dict:
    """The manifest of an index that `update_index` can update, read before the model
    loads; refused when built from embedding shards or when a root it indexed is gone."""
    manifest = read_manifest(index)
    if manifest.get("source") == "embeddings":
        raise InputError(
            f"{index}: built from embedding shards, not folders, so there is nothing to "
            f"update; rebuild it with cpt index build --from-embeddings SHARD ... -o {index}"
        )
    for root in map(Path, manifest["roots"]):
        if not root.exists():
            raise InputError(
                f"{root}: indexed by {index} but gone; put it back, or build a new index "
                "with cpt index build"
            )
    return manifest


def build_index(
    roots: list[Path],
    out: Path,
    encoder: Encoder,
    *,
    model_name: str,
    kind: str = "flat",
    precision: str = "float32",
    exclude: list[str] | None = None,
    previous: Path | None = None,
    batch_size: int = 128,
    show_progress: bool = True,
    lexical: bool = True,
) -> IndexReport:
    """Index the files under `roots` (minus gitignore-style `exclude` patterns) into `out`,
    the FAISS index's vectors at `precision` (float32, int8 or binary: see
    `cpt_embed.search.index`), with a lexical (BM25) index over the same chunks unless
    `lexical` is False; with `previous`, reuse the vectors of every file whose content hash
    is unchanged (that is `cpt index update`; the lexical index is rebuilt whole, a matter
    of seconds)."""
    check_precision(kind, precision)
    check_output(out)
    started = time.perf_counter()
    fingerprint = model_fingerprint(encoder)
    exclude = list(exclude or [])
    counts: Counter = Counter()
    found = _found_files([Path(r) for r in roots], exclude, counts)
    old = _Previous() if previous is None else _previous(previous, fingerprint, model_name)
    read = _read_files(found, old, counts, show_progress)
    vectors, embedded = _vectors(read, old, encoder, batch_size, show_progress)
    with atomic_dir(out) as tmp:
        np.save(tmp / VECTORS, vectors)
        write_faiss_index(faiss_index(vectors, kind, precision), tmp / FAISS_INDEX)
        with new_metadata(tmp) as db:
            write_chunks(db, read.chunks)
            write_files(db, read.files)
        if lexical:
            write_lexical(tmp, [chunk.text for chunk in read.chunks])
        write_manifest(
            tmp,
            model=model_name,
            model_fingerprint=fingerprint,
            dim=encoder.dim,
            kind=kind,
            precision=precision,
            lexical=lexical,
            roots=[str(Path(r).resolve()) for r in roots],
            exclude=exclude,
            files=len(read.files),
            chunks=len(read.chunks),
        )
    removed = len(set(old.hashes) - set(found))
    seconds = time.perf_counter() - started
    return IndexReport(
        out, len(read.files), len(read.chunks), embedded, removed, seconds, dict(read.counts)
    )


def update_index(index: Path, encoder: Encoder, model_name: str | None = None, **kw) -> IndexReport:
    """Re-index the roots recorded in `index`: embed changed and new files only, drop
    deleted ones; an unchanged tree embeds nothing. The index keeps its kind and precision
    (an index from before precisions is float32)."""
    manifest = check_update(index)
    roots = [Path(r) for r in manifest["roots"]]
    return build_index(
        roots,
        Path(index),
        encoder,
        model_name=model_name or manifest["model"],
        kind=kw.pop("kind", manifest["kind"]),
        precision=kw.pop("precision", manifest.get("precision", "float32")),
        lexical=kw.pop("lexical", manifest.get("lexical", True)),
        exclude=manifest.get("exclude", []),
        previous=Path(index),
        **kw,
    )


def _found_files(
    roots: list[Path], exclude: list[str], counts: Counter
) -> dict[str, tuple[Path, Path]]:
    """Indexable files by their key (root name + relative path): (path, root); `exclude`
    holds gitignore-style patterns matched against the path below its root; what is no
    regular file is counted in `counts` and left out."""
    import pathspec

    skip = pathspec.GitIgnoreSpec.from_lines(exclude)
    found: dict[str, tuple[Path, Path]] = {}
    for root in roots:
        if not root.exists():
            raise missing_path(root)
        for item in walk_files(root, skip_tests=False, counts=counts):
            if kind_of(item.path) is not None and not skip.match_file(item.relative):
                key = f"{root.resolve().name}/{item.relative}" if root.is_dir() else item.relative
                found[key] = (item.path, root)
    return found


def _previous(index: Path, fingerprint: str, model_name: str) -> _Previous:
    """The index an update replaces, refused if it was built with another model."""
    check_model(read_manifest(index), fingerprint, model_name)
    vectors = np.load(index / VECTORS, mmap_mode="r")
    hashes, chunks = read_files(index)
    return _Previous(hashes, chunks, vectors)


def _read_files(
    found: dict[str, tuple[Path, Path]], old: _Previous, counts: Counter, show_progress: bool
) -> _Chunks:
    """Every found file in key order, chunked, or its chunks in `old` when its content is
    unchanged; unreadable, irregular and (by their size, before they are read) too large
    files are counted in `counts` and left out."""
    read = _Chunks(counts=counts)
    for key, (path, root) in tqdm(
        sorted(found.items()), desc="reading", unit="file", disable=not show_progress
    ):
        skip, digest = _checked_digest(path)
        if skip is not None:
            read.counts[skip] += 1
            continue
        read.files.append((key, str(root), digest))
        if old.hashes.get(key) == digest:
            for row, chunk in old.chunks.get(key, []):
                read.add(chunk, row)
            read.counts["files_unchanged"] += 1
            continue
        for chunk in chunk_file(path, key, read.counts):
            read.add(chunk)
        read.counts["files_embedded"] += 1
    return read


def _checked_digest(path: Path) -> tuple[str | None, str]:
    """(None, the content's sha256, read in pieces) for a file to read; (why not, "") for
    one left out by its metadata, before it is read: no regular file (a FIFO would block),
    a whole-file kind over MAX_FILE_BYTES on disk (records are capped one by one as they
    are read), or one that cannot be read."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            return NOT_REGULAR, ""
        if info.st_size > MAX_FILE_BYTES and kind_of(path) != "records":
            return "file_too_large", ""
        return None, sha256_of(path)
    except OSError:
        return "file_unreadable", ""


def _vectors(
    read: _Chunks, old: _Previous, encoder: Encoder, batch_size: int, show_progress: bool
) -> tuple[np.ndarray, int]:
    """The vector of every chunk, in row order: embedded as a document, or copied from the
    previous index; and how many were embedded."""
    vectors = np.zeros((len(read.chunks), encoder.dim), dtype=np.float32)
    fresh = [i for i, old_row in enumerate(read.reused) if old_row < 0]
    if fresh:
        vectors[fresh] = encoder.encode(
            [read.chunks[i].embed_text for i in fresh],
            side="document",
            batch_size=batch_size,
            compile=len(fresh) >= COMPILE_FROM,
            show_progress=show_progress,
        )
    kept = [i for i, old_row in enumerate(read.reused) if old_row >= 0]
    if kept and old.vectors is not None:
        vectors[kept] = old.vectors[[read.reused[i] for i in kept]]
    return vectors, len(fresh)


def build_index_from_embeddings(
    paths: list[Path],
    out: Path,
    encoder: Encoder,
    *,
    model_name: str,
    kind: str = "flat",
    precision: str = "float32",
    batch_rows: int = BATCH_ROWS,
    show_progress: bool = True,
) -> IndexReport:
    """Index the (`id`, `embedding`) rows of Parquet shards written by `cpt embed -o
    NAME.parquet` (files, or folders of them) into `out`, in the format `build_index` writes,
    each row a chunk whose path is its id, with no text; `encoder` (the model that embedded
    them) embeds the queries. For millions of vectors made elsewhere (a GPU farm): the shards
    stream through in batches of `batch_rows`, to vectors.npy through a memory map and into
    FAISS, so that the vectors are never all in memory (except inside a flat or HNSW index,
    which holds them, at `precision`); IVF-PQ and int8 train on a sample drawn across the
    shards first."""
    check_precision(kind, precision)
    check_output(out)
    started = time.perf_counter()
    shards = vector_shards(paths)
    if shards[0].dim != encoder.dim:
        raise InputError(
            f"{shards[0].path}: embeddings of dimension {shards[0].dim}, but model "
            f"{model_name!r} embeds {encoder.dim}; pass the --model that wrote them"
        )
    rows = sum(shard.rows for shard in shards)
    if not rows:
        raise InputError(f"{shards[0].path}: no vectors in the {len(shards)} shard(s) given")
    fingerprint = model_fingerprint(encoder)
    index = empty_faiss_index(encoder.dim, kind, rows, precision)
    with atomic_dir(out) as tmp:
        sample = _copy_shards(tmp, shards, index, batch_rows, show_progress)
        if not index.is_trained:
            train_faiss_index(index, sample)
            del sample
            for _, vectors in _stream(shards, batch_rows, rows, "adding", show_progress):
                add_vectors(index, vectors)
        write_faiss_index(index, tmp / FAISS_INDEX)
        write_manifest(
            tmp,
            model=model_name,
            model_fingerprint=fingerprint,
            dim=encoder.dim,
            kind=kind,
            precision=precision,
            source="embeddings",
            shards=[str(shard.path.resolve()) for shard in shards],
            roots=[],
            exclude=[],
            files=len(shards),
            chunks=rows,
        )
    return IndexReport(out, len(shards), rows, 0, 0, time.perf_counter() - started, {})


def _copy_shards(
    folder: Path,
    shards: list[VectorShard],
    index: FaissIndex,
    batch_rows: int,
    show_progress: bool,
) -> np.ndarray:
    """One pass over the shards, a batch at a time: their vectors into vectors.npy and
    `index` (if it is trained already), their ids into the metadata; the `training_rows`
    sample of the vectors, for an index that must be trained first."""
    rows, dim = sum(shard.rows for shard in shards), shards[0].dim
    sample_rows = training_rows(index, rows)
    sample = np.zeros((len(sample_rows), dim), dtype=np.float32)
    offset = _new_npy(folder / VECTORS, rows, dim)
    start = 0
    desc = "adding" if index.is_trained else "reading"  # ivfpq, int8: train, then add
    with new_metadata(folder) as db:
        for ids, vectors in _stream(shards, batch_rows, rows, desc, show_progress):
            _write_npy_rows(folder / VECTORS, offset, start, vectors)
            write_vector_ids(db, start, ids)
            lo, hi = np.searchsorted(sample_rows, [start, start + len(ids)])
            sample[lo:hi] = vectors[sample_rows[lo:hi] - start]
            if index.is_trained:
                add_vectors(index, vectors)
            start += len(ids)
    return sample


def _new_npy(path: Path, rows: int, dim: int) -> int:
    """Create `path` as a float32 (rows, dim) .npy file to be filled by `_write_npy_rows`;
    the byte offset of its data."""
    header = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, dim))
    offset = header.offset
    del header  # written a batch at a time, so that no more is ever mapped
    return offset


def _write_npy_rows(path: Path, offset: int, start: int, vectors: np.ndarray) -> None:
    """Write `vectors` as rows start, start + 1, ... of the .npy file from `_new_npy`,
    mapping only those rows."""
    window = np.memmap(
        path,
        dtype=np.float32,
        mode="r+",
        offset=offset + start * vectors.itemsize * vectors.shape[1],
        shape=vectors.shape,
    )
    window[:] = vectors
    window.flush()
    del window


def _stream(
    shards: list[VectorShard], batch_rows: int, rows: int, desc: str, show_progress: bool
) -> Iterator[tuple[list[str], np.ndarray]]:
    """(ids, vectors) batches of every shard in order (none empty), with a progress bar
    over vectors."""
    with tqdm(total=rows, desc=desc, unit="vector", disable=not show_progress) as bar:
        for shard in shards:
            for ids, vectors in iter_vector_batches(shard, batch_rows):
                if ids:
                    yield ids, vectors
                    bar.update(len(ids))
