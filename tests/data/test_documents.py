"""Documents of a corpus: every supported file kind, and bad files skipped and counted."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

from cpt_embed.data.documents import corpus_files, documents_of


def _all(root, counts, field="text"):
    return [
        d
        for f in corpus_files([root])
        for d in documents_of(f.path, f.relative, field, None, counts, 1_000_000)
    ]


def test_every_kind_of_file_gives_documents(tmp_path):
    (tmp_path / "a.txt").write_text("plain text document")
    (tmp_path / "b.md").write_text("# Title\n\nmarkdown body")
    (tmp_path / "c.rst.gz").write_bytes(gzip.compress(b"restructured text"))
    (tmp_path / "d.jsonl.gz").write_bytes(
        gzip.compress(
            (
                json.dumps({"id": 7, "text": "from jsonl"}) + "\n\n" + json.dumps({"text": 5})
            ).encode()
        )
    )
    pq.write_table(
        pa.table({"text": ["row zero", None], "id": ["r0", "r1"]}), tmp_path / "e.parquet"
    )
    counts = Counter()
    docs = _all(tmp_path, counts)
    assert [(d.id, d.text) for d in docs] == [
        ("a.txt", "plain text document"),
        ("b.md", "# Title\n\nmarkdown body"),
        ("c.rst.gz", "restructured text"),
        ("d.jsonl.gz:7", "from jsonl"),
        ("e.parquet:r0", "row zero"),
    ]
    assert counts["record_unreadable"] == 2  # a non-string text, a null row


def test_bad_files_are_skipped_and_counted(tmp_path):
    (tmp_path / "bin.txt").write_bytes(b"\x00\x01\x02binary")
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "broken.txt.gz").write_bytes(b"not gzip")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 nonsense")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "big.txt").write_text("x" * 2_000_000)
    counts = Counter()
    assert _all(tmp_path, counts) == []
    assert counts == Counter(
        {
            "file_binary": 1,
            "file_not_utf8": 1,
            "file_unreadable": 2,
            "file_not_text": 1,
            "file_too_large": 1,
        }
    )
