"""A search index on disk: chunk vectors in FAISS, their files and lines in SQLite.

    INDEX/manifest.json   model, its fingerprint, dimension, FAISS kind, roots, counts
    INDEX/vectors.npy     float32 (n, dim), row i = chunk i: the source of truth
    INDEX/vectors.faiss   the FAISS index over those rows (exact inner product by default)
    INDEX/meta.sqlite     chunks (row, path, language, lines, name, text, hash), files (hash)

Every build and update writes a whole new folder beside the old one and swaps it in with
a rename, so a crash or Ctrl-C at any moment leaves the previous index usable.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from cpt_embed.atomic import atomic_dir
from cpt_embed.data.vectors import VectorShard, iter_vector_batches, vector_shards
from cpt_embed.data.walk import walk_files
from cpt_embed.errors import InputError, missing_path
from cpt_embed.model import Encoder
from cpt_embed.model.fingerprint import model_fingerprint
from cpt_embed.model.runtime import COMPILE_FROM
from cpt_embed.search.chunks import Chunk, chunk_file, kind_of

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
KINDS = ("flat", "hnsw", "ivfpq")
# ivfpq: k-means sample per list, lists searched, candidates per hit re-scored exactly
IVF_TRAIN_PER_LIST = 64
IVF_NPROBE = 64
RERANK = 4
# rows of embedding shards read, written and added at a time (100 MB at 384 dims)
BATCH_ROWS = 65_536
_SCHEMA = """
CREATE TABLE chunks (row INTEGER PRIMARY KEY, path TEXT, language TEXT, start_line INTEGER,
                     end_line INTEGER, name TEXT, text TEXT, hash TEXT);
CREATE INDEX chunks_path ON chunks(path);
CREATE TABLE files (path TEXT PRIMARY KEY, root TEXT, hash TEXT);
"""


@dataclass
class Hit:
    """One search result."""

    score: float
    path: str
    language: str
    start_line: int
    end_line: int
    name: str
    text: str


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


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _found_files(roots: list[Path], exclude: list[str]) -> dict[str, tuple[Path, Path]]:
    """Indexable files by their key (root name + relative path): (path, root); `exclude`
    holds gitignore-style patterns matched against the path below its root."""
    import pathspec

    skip = pathspec.GitIgnoreSpec.from_lines(exclude)
    found: dict[str, tuple[Path, Path]] = {}
    for root in roots:
        if not root.exists():
            raise missing_path(root)
        for item in walk_files(root, skip_tests=False):
            if kind_of(item.path) is not None and not skip.match_file(item.relative):
                key = f"{root.resolve().name}/{item.relative}" if root.is_dir() else item.relative
                found[key] = (item.path, root)
    return found


def empty_faiss_index(dim: int, kind: str, rows: int):
    """An empty FAISS index of `kind` for `rows` unit vectors of `dim` floats, searched by
    inner product: exact (`flat`), HNSW, or IVF-PQ sized for `rows` (for millions; search
    it with `nearest`). IVF-PQ must be trained (`train_faiss_index`) before vectors are
    added; the others take vectors at once. Separate steps so that a build can train on a
    sample and then add vectors batch by batch, never holding them all."""
    import faiss

    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 128
        return index
    if kind == "ivfpq":
        lists = max(1, min(4096, int(np.sqrt(rows))))
        if rows < lists * 39:
            raise InputError(
                f"--kind ivfpq needs at least {lists * 39} chunks or vectors to train, "
                f"got {rows}; use flat or hnsw"
            )
        # a 4-bit PQ code per dimension (1/8 of float32), scanned with SIMD ("fast scan");
        # its scores pick candidates, which `nearest` re-scores exactly
        index = faiss.IndexIVFPQFastScan(
            faiss.IndexFlatIP(dim), dim, lists, dim, 4, faiss.METRIC_INNER_PRODUCT
        )
        index.nprobe = min(lists, IVF_NPROBE)
        return index
    raise InputError(f"index kind must be one of {KINDS}, got {kind!r}")


def training_rows(index, rows: int) -> np.ndarray:
    """The sorted rows (of `rows` vectors) to train `index` on: a fixed random sample of
    IVF_TRAIN_PER_LIST per inverted list; none for an index that needs no training."""
    if index.is_trained:
        return np.zeros(0, dtype=np.int64)
    sample = np.random.default_rng(0).permutation(rows)[: IVF_TRAIN_PER_LIST * index.nlist]
    return np.sort(sample)


def train_faiss_index(index, sample: np.ndarray) -> None:
    """Train an empty IVF-PQ index from `empty_faiss_index` on the `training_rows` vectors."""
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    index.pq.sync_transposed_centroids()  # about twice as fast to encode in add()


def faiss_index(vectors: np.ndarray, kind: str):
    """A FAISS index of `kind` (see `empty_faiss_index`) over the unit rows of `vectors`,
    trained where it needs to be on a sample of them."""
    index = empty_faiss_index(vectors.shape[1], kind, len(vectors))
    if not index.is_trained:
        train_faiss_index(index, vectors[training_rows(index, len(vectors))])
    if len(vectors):
        index.add(vectors)
    return index


def nearest(
    index, vectors: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The k best (scores, rows) for each row of `queries` in `index` over the unit rows
    `vectors` (row -1 where there are fewer). IVF-PQ scores are approximate, so it takes
    RERANK * k candidates and re-scores them exactly against `vectors` (vectors.npy,
    memory-mapped: only the candidate rows are read)."""
    import faiss

    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if not isinstance(index, (faiss.IndexIVFPQ, faiss.IndexIVFPQFastScan)):
        return index.search(queries, k)
    _, ids = index.search(queries, k * RERANK)
    rows = np.asarray(vectors[ids.clip(0).ravel()]).reshape(*ids.shape, -1)
    scores = np.einsum("qcd,qd->qc", rows, queries)
    scores[ids < 0] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def build_index(
    roots: list[Path],
    out: Path,
    encoder: Encoder,
    *,
    model_name: str,
    kind: str = "flat",
    exclude: list[str] | None = None,
    previous: Path | None = None,
    batch_size: int = 128,
    show_progress: bool = True,
) -> IndexReport:
    """Index the files under `roots` (minus gitignore-style `exclude` patterns) into `out`;
    with `previous`, reuse the vectors of every file whose content hash is unchanged (that
    is `cpt index update`)."""
    import faiss

    if kind not in KINDS:
        raise InputError(f"index kind must be one of {KINDS}, got {kind!r}")
    started = time.perf_counter()
    fingerprint = model_fingerprint(encoder)
    counts: Counter = Counter()
    exclude = list(exclude or [])
    found = _found_files([Path(r) for r in roots], exclude)
    old_rows: dict[str, list[tuple]] = {}
    old_vectors = None
    if previous is not None:
        manifest = read_manifest(previous)
        check_model(manifest, fingerprint, model_name)
        old_vectors = np.load(previous / "vectors.npy", mmap_mode="r")
        with sqlite3.connect(previous / "meta.sqlite") as db:
            hashes = dict(db.execute("SELECT path, hash FROM files"))
            for row in db.execute(
                "SELECT row, path, language, start_line, end_line, name, text, hash FROM chunks"
            ):
                old_rows.setdefault(row[1], []).append(row)
    else:
        hashes = {}
    chunks: list[Chunk] = []
    reused: list[int] = []  # old row of each chunk, or -1 to embed
    files: list[tuple[str, str, str]] = []
    for key, (path, root) in tqdm(
        sorted(found.items()), desc="reading", unit="file", disable=not show_progress
    ):
        try:
            digest = _sha256(path.read_bytes())
        except OSError:
            counts["file_unreadable"] += 1
            continue
        files.append((key, str(root), digest))
        if hashes.get(key) == digest:
            for row in old_rows.get(key, []):
                chunks.append(Chunk(row[1], row[2], row[3], row[4], row[6], row[5]))
                reused.append(row[0])
            counts["files_unchanged"] += 1
            continue
        for chunk in chunk_file(path, key, counts):
            chunks.append(chunk)
            reused.append(-1)
        counts["files_embedded"] += 1
    removed = len(set(hashes) - set(found))
    fresh = [i for i, old in enumerate(reused) if old < 0]
    vectors = np.zeros((len(chunks), encoder.dim), dtype=np.float32)
    if fresh:
        vectors[fresh] = encoder.encode(
            [chunks[i].embed_text for i in fresh],
            side="document",
            batch_size=batch_size,
            compile=len(fresh) >= COMPILE_FROM,
            show_progress=show_progress,
        )
    kept = [i for i, old in enumerate(reused) if old >= 0]
    if kept and old_vectors is not None:
        vectors[kept] = old_vectors[[reused[i] for i in kept]]
    with atomic_dir(out) as tmp:
        np.save(tmp / "vectors.npy", vectors)
        faiss.write_index(faiss_index(vectors, kind), str(tmp / "vectors.faiss"))
        with sqlite3.connect(tmp / "meta.sqlite") as db:
            db.executescript(_SCHEMA)
            db.executemany(
                "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        i,
                        c.path,
                        c.language,
                        c.start_line,
                        c.end_line,
                        c.name,
                        c.text,
                        _sha256(c.text.encode("utf-8", "surrogatepass")),
                    )
                    for i, c in enumerate(chunks)
                ),
            )
            db.executemany("INSERT INTO files VALUES (?, ?, ?)", files)
        db.close()
        _write_manifest(
            tmp,
            model=model_name,
            model_fingerprint=fingerprint,
            dim=encoder.dim,
            kind=kind,
            roots=[str(Path(r).resolve()) for r in roots],
            exclude=exclude,
            files=len(files),
            chunks=len(chunks),
        )
    return IndexReport(
        out,
        len(files),
        len(chunks),
        len(fresh),
        removed,
        time.perf_counter() - started,
        dict(counts),
    )


def build_index_from_embeddings(
    paths: list[Path],
    out: Path,
    encoder: Encoder,
    *,
    model_name: str,
    kind: str = "flat",
    batch_rows: int = BATCH_ROWS,
    show_progress: bool = True,
) -> IndexReport:
    """Index the (`id`, `embedding`) rows of Parquet shards written by `cpt embed -o
    NAME.parquet` (files, or folders of them) into `out`, in the format `build_index` writes,
    each row a chunk whose path is its id, with no text; `encoder` (the model that embedded
    them) embeds the queries. For millions of vectors made elsewhere (a GPU farm): the shards
    stream through in batches of `batch_rows`, to vectors.npy through a memory map and into
    FAISS, so that the vectors are never all in memory (except inside a flat or HNSW index,
    which holds them); IVF-PQ trains on a sample drawn across the shards first."""
    import faiss

    if kind not in KINDS:
        raise InputError(f"index kind must be one of {KINDS}, got {kind!r}")
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
    index = empty_faiss_index(encoder.dim, kind, rows)
    sample_rows = training_rows(index, rows)
    sample = np.zeros((len(sample_rows), encoder.dim), dtype=np.float32)
    with atomic_dir(out) as tmp:
        header = np.lib.format.open_memmap(
            tmp / "vectors.npy", mode="w+", dtype=np.float32, shape=(rows, encoder.dim)
        )
        offset = header.offset
        del header  # written a batch at a time below, so that no more is ever mapped
        with sqlite3.connect(tmp / "meta.sqlite") as db:
            db.executescript(_SCHEMA)
            start = 0
            desc = "adding" if index.is_trained else "reading"  # ivfpq: train, then add
            for ids, vectors in _stream(shards, batch_rows, rows, desc, show_progress):
                window = np.memmap(
                    tmp / "vectors.npy",
                    dtype=np.float32,
                    mode="r+",
                    offset=offset + start * vectors.itemsize * encoder.dim,
                    shape=vectors.shape,
                )
                window[:] = vectors
                window.flush()
                del window
                db.executemany(
                    "INSERT INTO chunks VALUES (?, ?, '', 0, 0, '', '', '')",
                    zip(range(start, start + len(ids)), ids, strict=True),
                )
                lo, hi = np.searchsorted(sample_rows, [start, start + len(ids)])
                sample[lo:hi] = vectors[sample_rows[lo:hi] - start]
                if index.is_trained:
                    index.add(vectors)
                start += len(ids)
        db.close()
        if not index.is_trained:
            train_faiss_index(index, sample)
            del sample
            for _, vectors in _stream(shards, batch_rows, rows, "adding", show_progress):
                index.add(vectors)
        faiss.write_index(index, str(tmp / "vectors.faiss"))
        _write_manifest(
            tmp,
            model=model_name,
            model_fingerprint=fingerprint,
            dim=encoder.dim,
            kind=kind,
            source="embeddings",
            shards=[str(shard.path.resolve()) for shard in shards],
            roots=[],
            exclude=[],
            files=len(shards),
            chunks=rows,
        )
    return IndexReport(out, len(shards), rows, 0, 0, time.perf_counter() - started, {})


def _write_manifest(folder: Path, **fields: Any) -> None:
    manifest = {"format_version": FORMAT_VERSION, **fields}
    manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


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


def read_manifest(index: Path) -> dict[str, Any]:
    """The manifest of an index folder, or a clear error for anything else."""
    path = Path(index) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"{index}: not an index (no {MANIFEST}); build one with cpt index build"
        ) from None
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: unreadable ({err}); rebuild the index") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise InputError(
            f"{index}: index format {manifest.get('format_version')}, this cpt-embed "
            f"reads {FORMAT_VERSION}; rebuild it"
        )
    return manifest


def check_model(manifest: dict[str, Any], fingerprint: str, model_name: str) -> None:
    """Refuse a query model other than the one the index was built with."""
    if manifest["model_fingerprint"] != fingerprint:
        raise InputError(
            f"model {model_name!r} is not the model this index was built with "
            f"({manifest['model']!r}); pass --model {manifest['model']} or rebuild the index"
        )


class Searcher:
    """Queries one index folder with its model."""

    def __init__(self, index: Path, encoder: Encoder, model_name: str) -> None:
        import faiss

        self.path = Path(index)
        self.manifest = read_manifest(self.path)
        check_model(self.manifest, model_fingerprint(encoder), model_name)
        self.encoder = encoder
        self.faiss = faiss.read_index(str(self.path / "vectors.faiss"))
        self.vectors = np.load(self.path / "vectors.npy", mmap_mode="r")
        self.db = sqlite3.connect(self.path / "meta.sqlite", check_same_thread=False)

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        language: str | None = None,
        path_glob: str | None = None,
    ) -> list[Hit]:
        """The k chunks most similar to `query`, optionally only of one language and/or
        paths matching a glob (filtered searches are exact over the matching chunks)."""
        vector = self.encoder.encode([query], side="query")[0]
        return self.search_vector(vector, k, language=language, path_glob=path_glob)

    def search_vector(
        self,
        vector: np.ndarray,
        k: int = 10,
        *,
        language: str | None = None,
        path_glob: str | None = None,
    ) -> list[Hit]:
        """`search` for a query already embedded (query side, this index's model)."""
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        vector = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if language or path_glob:
            rows = self._filtered(language, path_glob)
            if not rows:
                return []
            scores = np.asarray(self.vectors[rows]) @ vector[0]
            top = np.argsort(-scores, kind="stable")[:k]
            pairs = [(float(scores[i]), rows[i]) for i in top]
        else:
            scores, ids = nearest(
                self.faiss, self.vectors, vector, min(k, max(1, self.faiss.ntotal))
            )
            pairs = [(float(s), int(i)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]
        return [self._hit(score, row) for score, row in pairs]

    def _filtered(self, language: str | None, path_glob: str | None) -> list[int]:
        sql, args = "SELECT row, path FROM chunks", []
        if language:
            sql += " WHERE language = ?"
            args.append(_LANGUAGE_ALIASES.get(language, language))
        rows = self.db.execute(sql, args).fetchall()
        if path_glob:
            rows = [
                r
                for r in rows
                if fnmatch.fnmatch(r[1], path_glob) or fnmatch.fnmatch(r[1], f"*/{path_glob}")
            ]
        return [r[0] for r in rows]

    def _hit(self, score: float, row: int) -> Hit:
        path, language, start, end, name, text = self.db.execute(
            "SELECT path, language, start_line, end_line, name, text FROM chunks WHERE row = ?",
            (row,),
        ).fetchone()
        return Hit(score, path, language, start, end, name, text)


_LANGUAGE_ALIASES = {
    "py": "python",
    "js": "javascript",
    "ts": "typescript",
    "rb": "ruby",
    "rs": "rust",
    "md": "markdown",
    "txt": "text",
}


def update_index(index: Path, encoder: Encoder, model_name: str | None = None, **kw) -> IndexReport:
    """Re-index the roots recorded in `index`: embed changed and new files only, drop
    deleted ones; an unchanged tree embeds nothing."""
    manifest = read_manifest(index)
    if manifest.get("source") == "embeddings":
        raise InputError(
            f"{index}: built from embedding shards, not folders, so there is nothing to "
            f"update; rebuild it with cpt index build --from-embeddings SHARD ... -o {index}"
        )
    roots = [Path(r) for r in manifest["roots"]]
    return build_index(
        roots,
        Path(index),
        encoder,
        model_name=model_name or manifest["model"],
        kind=kw.pop("kind", manifest["kind"]),
        exclude=manifest.get("exclude", []),
        previous=Path(index),
        **kw,
    )


def hits_to_dicts(hits: Iterable[Hit]) -> list[dict[str, Any]]:
    """Hits as plain dicts (for --json and the HTTP API)."""
    return [hit.__dict__.copy() for hit in hits]
