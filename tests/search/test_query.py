"""Searching an index with the default model on the sample repository: the right function
and section, language and path filters, the model check, approximate kinds, and the hits'
JSON form."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cpt_embed import Encoder
from cpt_embed.cli import app
from cpt_embed.errors import InputError
from cpt_embed.search.build import build_index
from cpt_embed.search.query import Hit, Searcher, hits_to_dicts
from cpt_embed.search.store import read_manifest


def test_search_finds_the_right_function_and_section(repo, tmp_path, encoder):
    report = build_index([repo], tmp_path / "idx", encoder, model_name="default")
    assert report.files == 3 and report.embedded == report.chunks
    searcher = Searcher(tmp_path / "idx", encoder, "default")
    best = searcher.search("decode a json string", k=3)[0]
    assert (best.path, best.name, best.start_line) == ("repo/pkg/jsonutil.py", "parse_json", 2)
    assert searcher.search("how long to cook spaghetti", k=1)[0].text.startswith("# Cooking")
    mail = searcher.search("send an email", k=1, language="py")[0]
    assert mail.name == "send_email"
    only_docs = searcher.search("decode a json string", k=5, path_glob="docs/*")
    assert only_docs and {h.language for h in only_docs} == {"markdown"}
    assert searcher.search("anything", k=5, language="go") == []
    # dense scores are the cosines of the query with the stored chunk vectors
    best = searcher.search("decode a json string", k=3, mode="dense")[0]
    vectors = np.load(tmp_path / "idx" / "vectors.npy")
    query = encoder.encode(["decode a json string"])[0]
    assert best.score == pytest.approx(float((vectors @ query).max()), abs=1e-5)
    with pytest.raises(InputError, match="k must be >= 1, got 0"):
        searcher.search_vector(query, k=0)


def test_wrong_model_and_bad_paths_fail_clearly(repo, tmp_path, encoder, tiny_bert):
    build_index([repo], tmp_path / "idx", encoder, model_name="default")
    with pytest.raises(InputError, match="not the model this index was built with"):
        Searcher(tmp_path / "idx", Encoder.load(tiny_bert), str(tiny_bert))
    with pytest.raises(InputError, match="not an index"):
        Searcher(tmp_path, encoder, "default")
    with pytest.raises(InputError, match="no such file or folder"):
        build_index([tmp_path / "missing"], tmp_path / "x", encoder, model_name="default")


def test_hnsw_finds_what_exact_search_finds(repo, tmp_path, encoder):
    build_index([repo], tmp_path / "hnsw", encoder, model_name="default", kind="hnsw")
    searcher = Searcher(tmp_path / "hnsw", encoder, "default")
    assert searcher.search("decode a json string", k=1)[0].name == "parse_json"
    assert read_manifest(tmp_path / "hnsw")["kind"] == "hnsw"


def test_hits_to_dicts_has_one_key_per_field_in_order():
    hit = Hit(0.5, "repo/a.py", "python", 1, 3, "f", "def f():\n    pass")
    assert hits_to_dicts([hit]) == [
        {
            "score": 0.5,
            "path": "repo/a.py",
            "language": "python",
            "start_line": 1,
            "end_line": 3,
            "name": "f",
            "text": "def f():\n    pass",
        }
    ]
    assert list(hits_to_dicts([hit])[0]) == list(hit.__dataclass_fields__)
    assert hits_to_dicts([]) == []


def test_cli_build_search_json(repo, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["index", "build", str(repo), "-o", str(tmp_path / "idx")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["search", str(tmp_path / "idx"), "send mail", "-k", "2", "--json"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert hits[0]["name"] == "send_email" and len(hits) == 2
    shown = runner.invoke(app, ["search", str(tmp_path / "idx"), "send mail", "-k", "1"])
    assert "repo/pkg/mail.py:2-6" in shown.stdout and "send_email" in shown.stdout
