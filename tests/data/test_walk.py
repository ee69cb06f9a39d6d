"""Walking trees and listing folders: what is no regular file below a folder (a FIFO, a
socket) is left out, and counted where the walk reports, since reading it would block for
ever; one named directly is yielded."""

from __future__ import annotations

from collections import Counter

import numpy as np
from bad_inputs import PY_FUNCTION, deadline, special_files, write

from cpt_embed.data.shards import pair_files
from cpt_embed.data.vectors import vector_shards, write_vectors
from cpt_embed.data.walk import walk_files


def test_fifos_and_sockets_below_a_folder_are_skipped_and_counted(tmp_path):
    tree = tmp_path / "tree"
    write(tree / "a.py", PY_FUNCTION)
    fifo, _ = special_files(tree / "pkg", "p.py", "s.sock")
    counts: Counter = Counter()
    with deadline(30):
        found = [item.relative for item in walk_files(tree, counts=counts)]
    assert found == ["a.py"]
    assert counts == Counter({"file_not_a_regular_file": 2})
    assert [item.path for item in walk_files(fifo)] == [fifo]  # named: the caller's choice


def test_folders_of_shards_leave_fifos_out(tmp_path):
    """Pair folders without a manifest and folders of embedding shards are listed by
    suffix: a FIFO named like a shard used to be opened, and waited on for ever."""
    pairs, vectors = tmp_path / "pairs", tmp_path / "vectors"
    write(pairs / "a.jsonl", '{"x": "a", "y": "b"}\n')
    write_vectors(vectors / "a.parquet", np.ones((2, 4), np.float32), ["0", "1"])
    special_files(pairs, "b.jsonl")
    special_files(vectors, "b.parquet")
    with deadline(30):
        assert pair_files(pairs) == [pairs / "a.jsonl"]
        assert [shard.path for shard in vector_shards([vectors])] == [vectors / "a.parquet"]
