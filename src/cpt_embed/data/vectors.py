"""Writing embeddings to .npy or Parquet (id + vector), atomically."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cpt_embed.atomic import atomic_file
from cpt_embed.errors import InputError, first_line, missing_path

VECTOR_SUFFIXES = (".npy", ".parquet")
_SHARD_FIX = "write shards with cpt embed -o NAME.parquet"


def check_vector_path(path: str | Path) -> Path:
    """The output path if its suffix is a vector format we write; a clear error otherwise."""
    path = Path(path)
    if path.suffix.lower() not in VECTOR_SUFFIXES:
        raise InputError(f"{path}: output must end in .npy or .parquet")
    return path


def write_vectors(path: str | Path, vectors: np.ndarray, ids: list[str] | None = None) -> Path:
    """Write `vectors` (n, dim) float32: .npy holds the matrix alone, .parquet rows of
    (`id`, `embedding`). A crash leaves any earlier file at `path` intact."""
    path = check_vector_path(path)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if path.suffix.lower() == ".npy":
        with atomic_file(path) as handle:
            np.save(handle, vectors)
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = ids if ids is not None else [str(i) for i in range(len(vectors))]
    if len(ids) != len(vectors):
        raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    column = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
    table = pa.table({"id": pa.array(ids, type=pa.string()), "embedding": column})
    with atomic_file(path) as handle:
        pq.write_table(table, handle)
    return path


def read_vectors(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Ids and float32 vectors from a file written by `write_vectors`."""
    path = check_vector_path(path)
    if path.suffix.lower() == ".npy":
        vectors = np.load(path, allow_pickle=False)
        return [str(i) for i in range(len(vectors))], vectors
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size
    vectors = column.values.to_numpy(zero_copy_only=False).reshape(-1, dim)
    return [str(v) for v in table.column("id").to_pylist()], vectors.astype(np.float32)


@dataclass(frozen=True)
class VectorShard:
    """One Parquet file of (`id`, `embedding`) rows, checked by `vector_shards`."""

    path: Path
    rows: int
    dim: int


def vector_shards(paths: Iterable[str | Path]) -> list[VectorShard]:
    """The Parquet shards of (`id`, `embedding`) rows that `write_vectors` writes, from
    files and folders (a folder: the *.parquet files below it, sorted), each checked from its
    schema alone: so that a bad shard fails before hours of work, naming the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            # `cpt embed` of shards nests them; a FIFO would block its reader for ever
            found = sorted(p for p in path.rglob("*.parquet") if p.is_file())
            if not found:
                raise InputError(f"{path}: no .parquet files in this folder; {_SHARD_FIX}")
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise missing_path(path)
    if not files:
        raise InputError(f"no embedding shards given; pass Parquet files or folders ({_SHARD_FIX})")
    shards: list[VectorShard] = []
    for path in files:
        try:
            handle = pq.ParquetFile(path)
            schema = handle.schema_arrow
            names = schema.names  # a damaged schema fails only here (not UTF-8)
        except (OSError, ValueError, pa.ArrowException) as err:
            raise InputError(
                f"{path}: not a Parquet file ({first_line(err)}); {_SHARD_FIX}"
            ) from None
        if "id" not in names or "embedding" not in names:
            raise InputError(
                f"{path}: needs columns 'id' and 'embedding', has {names}; {_SHARD_FIX}"
            )
        id_type, vector_type = schema.field("id").type, schema.field("embedding").type
        if not (pa.types.is_string(id_type) or pa.types.is_large_string(id_type)):
            raise InputError(f"{path}: column 'id' is {id_type}, not string; {_SHARD_FIX}")
        if not (
            pa.types.is_fixed_size_list(vector_type) and vector_type.value_type == pa.float32()
        ):
            raise InputError(
                f"{path}: column 'embedding' is {vector_type}, not a fixed-size list of "
                f"float32; {_SHARD_FIX}"
            )
        shard = VectorShard(path, handle.metadata.num_rows, vector_type.list_size)
        if shards and shard.dim != shards[0].dim:
            raise InputError(
                f"{path}: embeddings of dimension {shard.dim}, but {shards[0].path} has "
                f"{shards[0].dim}; all shards must come from one model"
            )
        shards.append(shard)
    return shards


def iter_vector_batches(
    shard: VectorShard, batch_rows: int
) -> Iterator[tuple[list[str], np.ndarray]]:
    """(ids, float32 (n, dim) vectors) of `shard` in batches of at most `batch_rows` rows,
    so that shards of any size stream through a fixed amount of memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    done = 0
    batches = pq.ParquetFile(shard.path).iter_batches(
        batch_size=batch_rows, columns=["id", "embedding"]
    )
    while True:
        try:
            batch = next(batches, None)
        except (OSError, pa.ArrowException) as err:  # its schema was fine, its data is not
            raise InputError(
                f"{shard.path}: damaged after row {done} ({first_line(err)}); write the shard again"
            ) from None
        if batch is None:
            return
        ids, column = batch.column("id"), batch.column("embedding")
        vectors = None
        if not (ids.null_count or column.null_count):
            vectors = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, shard.dim)
        if vectors is None or not np.isfinite(vectors).all():
            raise InputError(
                f"{shard.path}: a missing id, missing embedding or NaN/inf value in rows "
                f"{done}-{done + len(batch) - 1}; fix or drop those rows"
            )
        done += len(batch)
        yield ids.to_pylist(), vectors
