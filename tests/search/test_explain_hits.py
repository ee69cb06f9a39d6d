"""Explaining search hits: the model's explanation of the chunk as the index embedded it
(heading line included), shown over the hit's own text with the file's line numbers; the
JSON form of hits carries it; the best MAX_EXPLAINED_HITS of a search alone."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from cpt_embed.cli import app
from cpt_embed.search.build import build_index
from cpt_embed.search.chunks import Chunk
from cpt_embed.search.explain import explain_hits
from cpt_embed.search.query import Searcher, hits_to_dicts

QUERY = "decode a json string"


@pytest.fixture(scope="module")
def index(tmp_path_factory, encoder):
    from sample_repo import write_repo

    root = tmp_path_factory.mktemp("explained")
    build_index([write_repo(root / "repo")], root / "idx", encoder, model_name="default")
    return root / "idx"


def test_a_hit_is_explained_as_embedded_and_shown_over_its_own_text(index, encoder):
    hits = Searcher(index, encoder, "default").search(QUERY, k=3, mode="dense")
    explained = explain_hits(encoder, QUERY, hits)
    assert len(explained) == 3
    for hit, got in zip(hits, explained, strict=True):
        chunk = Chunk(hit.path, hit.language, hit.start_line, hit.end_line, hit.text, hit.name)
        whole = encoder.explain(QUERY, chunk.embed_text)
        # the similarity is the dense score, the cosine with the stored vector, up to bfloat16
        # (explain runs under autocast, encode on the cast copy with its GELU fused)
        assert got.similarity == pytest.approx(hit.score, abs=5e-3)
        assert got.similarity == pytest.approx(whole.similarity, abs=1e-6)
        assert got.document.scores == pytest.approx(whole.document.scores, abs=1e-6)
        assert got.query.scores == pytest.approx(whole.query.scores, abs=1e-6)
        side = got.document
        assert side.text == hit.text
        # each text token's span covers the same characters in the hit's text
        heading_end = len(chunk.embed_text) - len(hit.text)
        for label, span, old in zip(side.tokens, side.spans, whole.document.spans, strict=True):
            if span is not None:
                assert hit.text[span[0] : span[1]] == label
                assert old == (span[0] + heading_end, span[1] + heading_end)
            else:
                assert old is None or old[0] < heading_end
        # the heading's share and the text's add up to the side's scores
        in_text = sum(s for s, span in zip(side.scores, side.spans, strict=True) if span)
        assert got.heading + in_text == pytest.approx(sum(side.scores), abs=1e-9)
        # lines numbered as in the file, scored as the whole explanation's lines 2...
        assert [line.number for line in side.lines] == list(
            range(hit.start_line, hit.start_line + len(side.lines))
        )
        assert [line.text for line in side.lines] == hit.text.split("\n")[: len(side.lines)]
        below = whole.document.lines[1:]
        assert [line.score for line in side.lines] == [line.score for line in below]
        assert whole.document.lines[0].score == pytest.approx(got.heading, abs=1e-9)


def test_the_function_that_matches_is_credited_for_its_words(index, encoder):
    (hit,) = Searcher(index, encoder, "default").search(QUERY, k=1)
    assert hit.name == "parse_json"
    (explained,) = explain_hits(encoder, QUERY, [hit])
    side = explained.document
    in_text = [(score, span) for score, span in zip(side.scores, side.spans, strict=True) if span]
    start, _ = max(in_text)[1]
    word = re.search(r"\w*$", hit.text[:start])[0] + re.match(r"\w*", hit.text[start:])[0]
    assert word.lower() in {"json", "parse_json", "parse", "string", "loads"}, word
    docstring = next(line for line in side.lines if "Parse a JSON" in line.text)
    assert docstring.score == max(line.score for line in side.lines)


def test_hits_json_carries_each_explanation(index, encoder):
    hits = Searcher(index, encoder, "default").search(QUERY, k=2)
    explained = explain_hits(encoder, QUERY, hits)
    data = hits_to_dicts(hits, explained)
    assert [d["explanation"] for d in data] == [e.to_dict() for e in explained]
    first = data[0]["explanation"]
    assert set(first) == {"similarity", "heading", "layer", "steps", "query", "document"}
    assert first["document"]["lines"][0]["line"] == hits[0].start_line
    assert "explanation" not in hits_to_dicts(hits)[0]
    json.dumps(data)  # plain JSON all through
    partly = hits_to_dicts(hits, explained[:1])
    assert "explanation" in partly[0] and "explanation" not in partly[1]


def test_the_best_hits_alone_are_explained(index, encoder, monkeypatch):
    monkeypatch.setattr("cpt_embed.search.explain.MAX_EXPLAINED_HITS", 2)
    hits = Searcher(index, encoder, "default").search(QUERY, k=4)
    assert len(hits) == 4
    explained = explain_hits(encoder, QUERY, hits)
    assert [e.document.text for e in explained] == [hit.text for hit in hits[:2]]


def test_cpt_search_explain(index):
    runner = CliRunner()
    shown = runner.invoke(app, ["search", str(index), QUERY, "-k", "1", "--explain"])
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert "parse_json" in lines[0] and "similarity +0." in lines[1]
    assert any(line.strip().startswith("2 ") and "def parse_json" in line for line in lines)
    assert "most: " in lines[-1]
    as_json = runner.invoke(app, ["search", str(index), QUERY, "-k", "2", "--explain", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert all("explanation" in hit for hit in json.loads(as_json.stdout))
