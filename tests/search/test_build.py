"""Building and updating indexes: from the sample repository with the default model (an
update embeds only what changed, keeps the exclude patterns, and killed midway leaves the
previous index usable) and from Parquet embedding shards (equal to brute force, streamed in
batches, bad shards and rows refused naming the file)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import sparse_file, write
from sample_repo import FILES
from typer.testing import CliRunner

from cpt_embed.cli import app
from cpt_embed.data.vectors import write_vectors
from cpt_embed.errors import InputError
from cpt_embed.search import build as build_module
from cpt_embed.search.build import build_index, build_index_from_embeddings, update_index
from cpt_embed.search.query import Searcher
from cpt_embed.search.store import read_manifest


def test_update_embeds_only_what_changed(repo, tmp_path, encoder):
    index = tmp_path / "idx"
    first = build_index([repo], index, encoder, model_name="default")
    again = update_index(index, encoder)
    assert again.embedded == 0 and again.chunks == first.chunks
    (repo / "pkg" / "mail.py").write_text(FILES["pkg/mail.py"].replace("SMTP", "SMTP_SSL"))
    (repo / "docs" / "guide.md").unlink()
    (repo / "pkg" / "new.py").write_text(
        'def shout(s):\n    """Upper-case."""\n    return s.upper()\n'
    )
    changed = update_index(index, encoder)
    assert changed.embedded == 2 and changed.removed_files == 1
    assert read_manifest(index)["files"] == 3
    searcher = Searcher(index, encoder, "default")
    assert searcher.search("upper case a string", k=1)[0].name == "shout"
    assert all(h.language != "markdown" for h in searcher.search("pasta", k=10))
    fresh = build_index([repo], tmp_path / "fresh", encoder, model_name="default")
    np.testing.assert_allclose(
        np.sort(np.load(index / "vectors.npy"), axis=0),
        np.sort(np.load(tmp_path / "fresh" / "vectors.npy"), axis=0),
        atol=1e-6,
    )
    assert fresh.chunks == changed.chunks


_SLOW_UPDATE = """
import sys, time
from cpt_embed import Encoder
from cpt_embed.search.build import update_index
encoder = Encoder.load("default")
real = encoder.encode
def slow(texts, **kw):
    print("embedding", flush=True)
    time.sleep(60)
    return real(texts, **kw)
encoder.encode = slow
update_index(sys.argv[1], encoder)
"""


def test_killing_an_update_midway_leaves_the_previous_index_usable(repo, tmp_path, encoder):
    index = tmp_path / "idx"
    build_index([repo], index, encoder, model_name="default")
    before = Searcher(index, encoder, "default").search("decode a json string", k=3)
    (repo / "pkg" / "extra.py").write_text('def ping():\n    """Ping."""\n    return 1\n')
    process = subprocess.Popen(
        [sys.executable, "-c", _SLOW_UPDATE, str(index)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    try:
        assert process.stdout.readline().strip() == "embedding"
        time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    after = Searcher(index, encoder, "default").search("decode a json string", k=3)
    assert [(h.path, h.start_line, h.score) for h in after] == [
        (h.path, h.start_line, h.score) for h in before
    ]
    assert read_manifest(index)["files"] == 3
    update_index(index, encoder)  # and the next update completes
    assert read_manifest(index)["files"] == 4


def test_excluded_paths_stay_out_and_updates_keep_the_patterns(repo, tmp_path, encoder):
    index = tmp_path / "idx"
    report = build_index([repo], index, encoder, model_name="default", exclude=["docs/"])
    assert report.files == 2
    (repo / "docs" / "more.md").write_text("# More\n\ntext\n")
    assert update_index(index, encoder).files == 2
    assert read_manifest(index)["exclude"] == ["docs/"]


def test_a_file_over_the_cap_is_left_out_by_its_size_unread(tmp_path, tiny_encoder, monkeypatch):
    """A 3 GiB file (sparse) is skipped as too large by its size alone: it used to be hashed
    whole first (seconds of reading for a file that is never indexed)."""
    tree = tmp_path / "tree"
    sparse_file(tree / "huge.txt", 3)
    write(tree / "good.md", "# Title\n\nSome words.\n")
    hashed, real = [], build_module.sha256_of
    monkeypatch.setattr(
        build_module, "sha256_of", lambda path: hashed.append(path.name) or real(path)
    )
    report = build_index(
        [tree], tmp_path / "idx", tiny_encoder, model_name="tiny", show_progress=False
    )
    assert hashed == ["good.md"]
    assert report.counts["file_too_large"] == 1 and report.files == 1


def test_an_unknown_kind_is_refused_before_any_work(repo, tmp_path, tiny_encoder, tiny_bert):
    for build, sources in ((build_index, [repo]), (build_index_from_embeddings, [tmp_path / "x"])):
        with pytest.raises(InputError, match="index kind must be one of .*, got 'annoy'"):
            build(sources, tmp_path / "idx", tiny_encoder, model_name=str(tiny_bert), kind="annoy")
    assert not (tmp_path / "idx").exists()


# ---------------------------------------------------------------- from embedding shards


def _clustered(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around 40 random centres, like embeddings of topics."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dim))
    vectors = centres[rng.integers(0, 40, rows)] + 0.4 * rng.normal(size=(rows, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _shards(folder: Path, vectors: np.ndarray, count: int) -> list[Path]:
    """`vectors` split into `count` Parquet shards with ids v0, v1, ... as `cpt embed`
    writes them."""
    paths = []
    for i, part in enumerate(np.array_split(np.arange(len(vectors)), count)):
        ids = [f"v{row}" for row in part]
        paths.append(write_vectors(folder / f"part-{i}.parquet", vectors[part], ids))
    return paths


def test_flat_from_shards_equals_brute_force(tmp_path, tiny_encoder, tiny_bert):
    vectors = _clustered(600, tiny_encoder.dim)
    shards = _shards(tmp_path / "shards", vectors, 3)
    report = build_index_from_embeddings(
        [tmp_path / "shards"], tmp_path / "idx", tiny_encoder, model_name=str(tiny_bert)
    )
    assert (report.files, report.chunks) == (3, 600)
    manifest = read_manifest(tmp_path / "idx")
    assert manifest["source"] == "embeddings" and manifest["kind"] == "flat"
    assert manifest["shards"] == [str(p.resolve()) for p in shards]
    np.testing.assert_array_equal(np.load(tmp_path / "idx" / "vectors.npy"), vectors)
    searcher = Searcher(tmp_path / "idx", tiny_encoder, str(tiny_bert))
    for query in _clustered(5, tiny_encoder.dim, seed=1):
        scores = vectors @ query
        top = np.argsort(-scores, kind="stable")[:10]
        hits = searcher.search_vector(query, k=10)
        assert [h.path for h in hits] == [f"v{row}" for row in top]
        np.testing.assert_allclose([h.score for h in hits], scores[top], atol=1e-5)


def test_ivfpq_from_shards_recalls_exact_search(tmp_path, tiny_encoder, tiny_bert):
    vectors = _clustered(4000, tiny_encoder.dim)
    _shards(tmp_path, vectors, 4)
    build_index_from_embeddings(
        sorted(tmp_path.glob("*.parquet")),
        tmp_path / "idx",
        tiny_encoder,
        model_name=str(tiny_bert),
        kind="ivfpq",
        show_progress=False,
    )
    searcher = Searcher(tmp_path / "idx", tiny_encoder, str(tiny_bert))
    queries = _clustered(50, tiny_encoder.dim, seed=1)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    recall = np.mean(
        [
            len({h.path for h in searcher.search_vector(q, k=10)} & {f"v{r}" for r in best}) / 10
            for q, best in zip(queries, exact, strict=True)
        ]
    )
    assert recall >= 0.9


def test_shards_stream_in_batches(tmp_path, tiny_encoder, tiny_bert, monkeypatch):
    import faiss
    import pyarrow.parquet as pq

    vectors = _clustered(3000, tiny_encoder.dim)
    _shards(tmp_path, vectors, 3)
    read, added = [], []
    iter_batches, add = pq.ParquetFile.iter_batches, faiss.IndexIVFPQFastScan.add

    def recording_iter_batches(self, *args, **kwargs):
        for batch in iter_batches(self, *args, **kwargs):
            read.append(len(batch))
            yield batch

    def recording_add(self, x):
        added.append(len(x))
        return add(self, x)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", recording_iter_batches)
    monkeypatch.setattr(faiss.IndexIVFPQFastScan, "add", recording_add)
    build_index_from_embeddings(
        [tmp_path],
        tmp_path / "idx",
        tiny_encoder,
        model_name=str(tiny_bert),
        kind="ivfpq",
        batch_rows=256,
        show_progress=False,
    )
    assert max(read) <= 256 and max(added) <= 256 and sum(added) == 3000
    # the rows map back to their shard ids
    np.testing.assert_array_equal(np.load(tmp_path / "idx" / "vectors.npy"), vectors)
    hit = Searcher(tmp_path / "idx", tiny_encoder, str(tiny_bert)).search_vector(vectors[1234])
    assert hit[0].path == "v1234"


def _bad_shards(folder: Path) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir()
    pq.write_table(pa.table({"id": ["a"], "text": ["hello"]}), folder / "texts.parquet")
    write_vectors(folder / "dim16.parquet", np.ones((2, 16), dtype=np.float32))
    write_vectors(folder / "dim32.parquet", np.ones((2, 32), dtype=np.float32))
    (folder / "junk.parquet").write_text("not parquet")
    return {name: folder / f"{name}.parquet" for name in ("texts", "dim16", "dim32", "junk")}


@pytest.mark.parametrize(
    "names, message",
    [
        (["dim32", "texts"], "texts.parquet: needs columns 'id' and 'embedding'"),
        (["dim32", "dim16"], "dim16.parquet: embeddings of dimension 16, but"),
        (["dim16"], "dim16.parquet: embeddings of dimension 16, but model"),
        (["dim32", "junk"], "junk.parquet: not a Parquet file"),
        (["dim32", "missing"], "missing.parquet: no such file or folder"),
        ([], "no embedding shards given"),
    ],
)
def test_bad_shards_fail_naming_the_file(tmp_path, tiny_encoder, tiny_bert, names, message):
    files = _bad_shards(tmp_path / "in")
    paths = [files.get(name, tmp_path / f"{name}.parquet") for name in names]
    with pytest.raises(InputError, match=message):
        build_index_from_embeddings(
            paths, tmp_path / "idx", tiny_encoder, model_name=str(tiny_bert)
        )
    assert not (tmp_path / "idx").exists()


def test_a_bad_row_midway_leaves_the_previous_index(tmp_path, tiny_encoder, tiny_bert):
    vectors = _clustered(300, tiny_encoder.dim)
    shards = _shards(tmp_path, vectors, 2)
    build_index_from_embeddings(shards, tmp_path / "idx", tiny_encoder, model_name=str(tiny_bert))
    vectors[250, 3] = np.nan
    write_vectors(shards[1], vectors[150:], [f"w{i}" for i in range(150)])
    with pytest.raises(InputError, match="part-1.parquet: .* NaN/inf value in rows 0-149"):
        build_index_from_embeddings(
            shards, tmp_path / "idx", tiny_encoder, model_name=str(tiny_bert), batch_rows=1000
        )
    hits = Searcher(tmp_path / "idx", tiny_encoder, str(tiny_bert)).search_vector(vectors[200])
    assert hits[0].path == "v200"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx", "part-0.parquet", "part-1.parquet"]


def test_cli_builds_from_embeddings_and_searches(tmp_path, tiny_encoder, tiny_bert):
    texts = ["parse a json string", "send an email", "boil the pasta", "water the tomatoes"]
    vectors = tiny_encoder.encode(texts, side="document")
    for i in range(2):
        write_vectors(
            tmp_path / f"emb-{i}.parquet", vectors[2 * i : 2 * i + 2], texts[2 * i : 2 * i + 2]
        )
    runner = CliRunner()
    build = ["index", "build", "--from-embeddings", str(tmp_path), "-o", str(tmp_path / "idx")]
    result = runner.invoke(app, [*build, "--model", str(tiny_bert), "--kind", "hnsw"])
    assert result.exit_code == 0, result.output
    assert "4 vectors from 2 shards (hnsw)" in result.output
    query = "send mail"
    best = texts[int(np.argmax(vectors @ tiny_encoder.encode([query], side="query")[0]))]
    result = runner.invoke(app, ["search", str(tmp_path / "idx"), query, "-k", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["path"] == best
    assert best in runner.invoke(app, ["search", str(tmp_path / "idx"), query, "-k", "1"]).stdout
    result = runner.invoke(app, ["index", "update", str(tmp_path / "idx")])
    assert result.exit_code == 2 and "built from embedding shards" in result.output
    result = runner.invoke(app, [*build, "--model", "default"])
    assert result.exit_code == 2 and "dimension 32, but model 'default' embeds 384" in result.output
