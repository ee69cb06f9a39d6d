"""Compact vectors in an exact index (`--precision int8|binary`): the same hits as float32
after exact re-scoring, with exact cosine scores; the precision recorded in the manifest and
kept by an update; combinations that do not go together refused before any work; index files
about 4x and 32x smaller; recall against exact search on random data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bad_inputs import one_line_error
from typer.testing import CliRunner

from cpt_embed.cli import app
from cpt_embed.data.vectors import write_vectors
from cpt_embed.errors import InputError
from cpt_embed.model import Encoder
from cpt_embed.search import index as index_module
from cpt_embed.search.build import build_index, build_index_from_embeddings, update_index
from cpt_embed.search.index import (
    PRECISIONS,
    check_precision,
    faiss_index,
    nearest,
    read_faiss_index,
    write_faiss_index,
)
from cpt_embed.search.query import Searcher
from cpt_embed.search.store import MANIFEST, read_manifest

QUERIES = ("parse a json string", "send an email", "boil pasta", "reverse a list", "tomatoes")


def _unit(rows: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, dim), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(
        np.mean([len(set(a) & set(b)) / a.size for a, b in zip(found, exact, strict=True)])
    )


@pytest.fixture(scope="module")
def indexes(tmp_path_factory, encoder):
    """The sample repository indexed at each precision."""
    from sample_repo import write_repo

    root = tmp_path_factory.mktemp("precision")
    repo = write_repo(root / "repo")
    for precision in PRECISIONS:
        build_index([repo], root / precision, encoder, model_name="default", precision=precision)
    return root


@pytest.mark.parametrize("precision", ["int8", "binary"])
def test_compact_indexes_find_what_float32_finds_with_exact_scores(indexes, encoder, precision):
    exact = Searcher(indexes / "float32", encoder, "default")
    compact = Searcher(indexes / precision, encoder, "default")
    assert read_manifest(indexes / precision)["precision"] == precision
    vectors = np.load(indexes / precision / "vectors.npy")
    for query in QUERIES:
        vector = encoder.encode([query], side="query")[0]
        want = exact.search_vector(vector, k=3)
        got = compact.search_vector(vector, k=3)
        assert [(h.path, h.start_line) for h in got] == [(h.path, h.start_line) for h in want]
        np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-6)
        assert got[0].score == pytest.approx(float(np.max(vectors @ vector)), abs=1e-6)
        # hybrid takes its dense candidates from the compact index
        fused = [(h.path, h.start_line, round(h.score, 5)) for h in compact.search(query, k=3)]
        assert fused == [
            (h.path, h.start_line, round(h.score, 5)) for h in exact.search(query, k=3)
        ]


def test_update_keeps_the_precision_and_old_indexes_are_float32(repo, tmp_path, encoder):
    index = tmp_path / "idx"
    build_index([repo], index, encoder, model_name="default", precision="binary")
    (repo / "pkg" / "shout.py").write_text(
        'def shout(s):\n    """Upper-case."""\n    return s.upper()\n'
    )
    assert update_index(index, encoder).embedded == 1
    assert read_manifest(index)["precision"] == "binary"
    assert Searcher(index, encoder, "default").search("upper case a string", k=1)[0].name == "shout"
    # an index written before precisions existed has no key, and is float32
    build_index([repo], tmp_path / "old", encoder, model_name="default")
    manifest = json.loads((tmp_path / "old" / MANIFEST).read_text())
    del manifest["precision"]
    (tmp_path / "old" / MANIFEST).write_text(json.dumps(manifest))
    assert Searcher(tmp_path / "old", encoder, "default").precision == "float32"
    update_index(tmp_path / "old", encoder)
    assert read_manifest(tmp_path / "old")["precision"] == "float32"


@pytest.mark.parametrize(
    "args, names",
    [
        (["--kind", "hnsw", "--precision", "int8"], ["--precision int8", "--kind hnsw"]),
        (["--kind", "ivfpq", "--precision", "binary"], ["--precision binary", "--kind ivfpq"]),
        (["--kind", "hnsw", "--precision", "binary", "--from-embeddings"], ["--kind hnsw"]),
    ],
)
def test_bad_combinations_are_refused_before_the_model_loads(
    args, names, repo, tmp_path, monkeypatch
):
    def no_model(*_, **__):
        raise AssertionError("the model loaded")

    monkeypatch.setattr(Encoder, "load", no_model)
    result = CliRunner().invoke(
        app, ["index", "build", str(repo), "-o", str(tmp_path / "i"), *args]
    )
    one_line_error(result, *names)
    assert not (tmp_path / "i").exists()
    with pytest.raises(InputError, match="precision must be one of"):
        check_precision("flat", "float16")


def test_compact_index_files_shrink_4x_and_32x(tmp_path):
    vectors = _unit(20_000, 384, seed=0)
    sizes = {}
    for precision in PRECISIONS:
        index = faiss_index(vectors, "flat", precision)
        write_faiss_index(index, tmp_path / precision)
        sizes[precision] = (tmp_path / precision).stat().st_size
        assert read_faiss_index(tmp_path / precision, precision).ntotal == len(vectors)
    assert 3.9 <= sizes["float32"] / sizes["int8"] <= 4.0
    assert 31.0 <= sizes["float32"] / sizes["binary"] <= 32.0


def test_recall_against_exact_search_on_random_vectors():
    vectors, queries = _unit(20_000, 384, seed=0), _unit(100, 384, seed=1)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    scores, int8 = nearest(faiss_index(vectors, "flat", "int8"), vectors, queries, 10)
    assert _recall(int8, exact) >= 0.98
    np.testing.assert_allclose(scores, np.einsum("qkd,qd->qk", vectors[int8], queries), atol=1e-6)
    # sign bits of unstructured Gaussian vectors keep little of their angles: the worst case
    # (on real embeddings BINARY_RERANK keeps recall@10 near 1: docs/benchmarks.md)
    _, binary = nearest(faiss_index(vectors, "flat", "binary"), vectors, queries, 10)
    assert _recall(binary, exact) >= 0.5


def test_fewer_vectors_than_candidates(monkeypatch):
    vectors = _unit(30, 32, seed=0)
    monkeypatch.setattr(index_module, "BINARY_RERANK", 1000)
    scores, rows = nearest(faiss_index(vectors, "flat", "binary"), vectors, vectors[:2], 40)
    assert (rows[:, :30] >= 0).all() and (rows[:, 30:] == -1).all()
    assert rows[0, 0] == 0 and rows[1, 0] == 1 and np.isneginf(scores[:, 30:]).all()
    empty = faiss_index(vectors[:0], "flat", "int8")
    assert (nearest(empty, vectors[:0], vectors[:1], 3)[1] == -1).all()


@pytest.mark.parametrize("precision", ["int8", "binary"])
def test_from_embeddings_streams_at_a_precision(precision, tmp_path, tiny_encoder, tiny_bert):
    vectors = _unit(3000, tiny_encoder.dim, seed=0)
    for i, part in enumerate(np.array_split(np.arange(len(vectors)), 3)):
        write_vectors(tmp_path / f"part-{i}.parquet", vectors[part], [f"v{r}" for r in part])
    build_index_from_embeddings(
        sorted(tmp_path.glob("*.parquet")),
        tmp_path / "idx",
        tiny_encoder,
        model_name=str(tiny_bert),
        precision=precision,
        batch_rows=512,
        show_progress=False,
    )
    assert read_manifest(tmp_path / "idx")["precision"] == precision
    searcher = Searcher(tmp_path / "idx", tiny_encoder, str(tiny_bert))
    for row in (0, 1234, 2999):
        hits = searcher.search_vector(vectors[row], k=3)
        assert hits[0].path == f"v{row}" and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_cli_builds_and_searches_at_a_precision(repo, tmp_path, tiny_bert):
    index = tmp_path / "idx"
    build = ["index", "build", str(repo), "-o", str(index), "-m", str(tiny_bert)]
    done = CliRunner().invoke(app, [*build, "--precision", "binary"])
    assert done.exit_code == 0, done.output
    assert read_manifest(index)["precision"] == "binary"
    found = CliRunner().invoke(app, ["search", str(index), "send email", "--json", "-k", "20"])
    assert found.exit_code == 0, found.output
    assert len(json.loads(found.output)) == read_manifest(index)["chunks"]
