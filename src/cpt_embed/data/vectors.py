"""Writing embeddings to .npy or Parquet (id + vector), atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cpt_embed.atomic import atomic_file
from cpt_embed.errors import InputError

VECTOR_SUFFIXES = (".npy", ".parquet")


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
