"""Lexical and hybrid search over an index folder: BM25 over the same chunks, row for row,
built and updated with the vectors; the fused ranking's ends are each retriever alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cpt_embed.cli import app
from cpt_embed.errors import InputError
from cpt_embed.model import fusion
from cpt_embed.model.lexical import BM25
from cpt_embed.search.build import build_index, update_index
from cpt_embed.search.query import Searcher
from cpt_embed.search.store import open_metadata, read_chunk, read_manifest


@pytest.fixture
def index(repo, tmp_path, encoder):
    build_index([repo], tmp_path / "idx", encoder, model_name="default")
    return tmp_path / "idx"


def _texts(index):
    db = open_metadata(index)
    rows = read_manifest(index)["chunks"]
    return [read_chunk(db, row).text for row in range(rows)]


def test_lexical_mode_is_bm25_over_the_same_chunks(index, encoder):
    searcher = Searcher(index, encoder, "default")
    assert searcher.modes == ("hybrid", "dense", "lexical")
    assert read_manifest(index)["lexical"] is True
    oracle = BM25(_texts(index), code=True)
    hits = searcher.search("sendmail smtplib", k=3, mode="lexical")
    assert hits[0].name == "send_email"
    expected = oracle.scores("sendmail smtplib")
    assert hits[0].score == pytest.approx(float(expected.max()), rel=1e-6)
    assert len(hits) == int((expected > 0).sum())  # a chunk no word matches is no hit
    # an identifier's parts find it, and a filter holds
    assert searcher.search("reverse list", k=1, mode="lexical")[0].name == "reverse_list"
    assert searcher.search("pasta", k=5, mode="lexical", language="py") == []


@pytest.mark.parametrize("weight, alone", [(1.0, "dense"), (0.0, "lexical")])
def test_hybrid_at_the_ends_of_the_weight_ranks_as_one_retriever(
    index, encoder, monkeypatch, weight, alone
):
    monkeypatch.setattr(fusion, "FUSION", "convex")
    monkeypatch.setattr(fusion, "DENSE_WEIGHT", weight)
    searcher = Searcher(index, encoder, "default")
    query = "parse a json string"
    single = [(h.path, h.start_line) for h in searcher.search(query, k=3, mode=alone)]
    fused = [(h.path, h.start_line) for h in searcher.search(query, k=len(single))]
    assert fused == single


def test_hybrid_is_the_default_and_scores_in_the_unit_interval(index, encoder):
    hits = Searcher(index, encoder, "default").search("send an email over smtp", k=5)
    assert hits[0].name == "send_email"
    assert all(0.0 <= h.score <= 1.0 for h in hits)


def test_no_lexical_index_answers_dense_only(repo, tmp_path, encoder):
    build_index([repo], tmp_path / "idx", encoder, model_name="default", lexical=False)
    searcher = Searcher(tmp_path / "idx", encoder, "default")
    assert searcher.modes == ("dense",)
    assert searcher.search("send an email", k=1)[0].name == "send_email"
    with pytest.raises(InputError, match="no lexical index.*--mode dense"):
        searcher.search("send an email", mode="hybrid")


def test_update_rebuilds_the_lexical_index(repo, index, encoder):
    (repo / "pkg" / "mail.py").write_text("def frobnicate_widget(x):\n    return x\n")
    report = update_index(index, encoder, "default")
    assert report.embedded == 1
    hits = Searcher(index, encoder, "default").search("frobnicate", k=3, mode="lexical")
    assert [h.name for h in hits] == ["frobnicate_widget"]
    assert len(BM25.load(index / "lexical").scores("x")) == read_manifest(index)["chunks"]


def test_cli_search_takes_a_mode(index):
    done = CliRunner().invoke(
        app, ["search", str(index), "smtplib sendmail", "--mode", "lexical", "--json", "-k", "2"]
    )
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)[0]["name"] == "send_email"
    bad = CliRunner().invoke(app, ["search", str(index), "x", "--mode", "fuzzy"])
    assert bad.exit_code == 2


def test_fused_scores_are_those_of_model_fusion(index, encoder):
    searcher = Searcher(index, encoder, "default")
    query = "boil pasta"
    vector = encoder.encode([query], side="query")[0]
    vectors = np.load(index / "vectors.npy")
    rows = np.arange(len(vectors))  # the sample repo is smaller than fusion.DEPTH
    lexical = BM25(_texts(index), code=True).scores(query)
    pool = fusion.candidates(np.argsort(-(vectors @ vector), kind="stable"), rows[lexical > 0])
    expected = fusion.fuse(vectors[pool] @ vector, lexical[pool])
    best = searcher.search(query, k=1)[0]
    assert best.score == pytest.approx(float(expected.max()), abs=1e-5)
    assert best.text.startswith("# Cooking")
