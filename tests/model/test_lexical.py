"""BM25, the lexical baseline: the scores of bm25s used as its documentation shows, and
identifiers split so that words meet names."""

from __future__ import annotations

import bm25s
import numpy as np
import pytest
import Stemmer

from cpt_embed.model.lexical import BM25, identifier_parts, split_identifiers, tokenize


def _scifact(mini_data):
    from cpt_embed.eval.data import load_beir

    data = load_beir(mini_data / "retrieval" / "scifact")
    return data.corpus_texts, data.query_texts


def test_scores_equal_bm25s_used_as_documented(mini_data):
    corpus, queries = _scifact(mini_data)
    stemmer = Stemmer.Stemmer("english")
    oracle = bm25s.BM25()  # Lucene's BM25, k1 = 1.5, b = 0.75
    oracle.index(bm25s.tokenize(corpus, stopwords="en", stemmer=stemmer, show_progress=False))
    query_tokens = bm25s.tokenize(queries, stopwords="en", stemmer=stemmer, return_ids=False)
    _, expected_scores = oracle.retrieve(
        bm25s.tokenize(queries, stopwords="en", stemmer=stemmer, show_progress=False),
        k=10,
        show_progress=False,
    )
    ours = BM25(corpus)
    scores, index = ours.top(queries, 10)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)
    assert scores.max() > 0
    for query, terms, row_scores, row in zip(queries, query_tokens, scores, index, strict=True):
        every = oracle.get_scores(terms)  # ties may be ordered otherwise, never scored otherwise
        np.testing.assert_allclose(every[row], row_scores, rtol=1e-5)
        np.testing.assert_allclose(ours.scores(query), every, rtol=1e-5)


@pytest.mark.parametrize(
    "identifier, parts",
    [
        ("getUserName", ["get", "User", "Name"]),
        ("get_user_name", ["get", "user", "name"]),
        ("parseHTTPResponse_v2", ["parse", "HTTP", "Response", "v", "2"]),
        ("XMLParser", ["XML", "Parser"]),
        ("name", ["name"]),
    ],
)
def test_identifier_parts(identifier, parts):
    assert identifier_parts(identifier) == parts


def test_split_identifiers_keeps_the_whole_name_and_adds_its_parts():
    assert split_identifiers("return self.userName") == "return self.userName user Name"
    terms = tokenize(["def load_config_file(path):"], code=True)[0]
    assert {"load_config_fil", "load", "config", "file", "path"} <= set(terms)


def test_code_tokens_let_words_find_names_plain_tokens_cannot():
    functions = [
        "def getUserName(account): return account.profile.displayName",
        "def send_email(to, body): smtp.send(to, body)",
        "def parse_date(text): return datetime.strptime(text, FORMAT)",
    ]
    assert BM25(functions, code=False).scores("get the user name").max() == 0
    code = BM25(functions, code=True)
    assert int(np.argmax(code.scores("get the user name"))) == 0
    assert int(np.argmax(code.scores("send an email"))) == 1
    # the exact identifier still ranks its function first
    assert int(np.argmax(code.scores("parse_date"))) == 2


def test_a_query_of_unknown_or_stop_words_scores_nothing():
    index = BM25(["the cat sat on the mat", "dogs bark"])
    assert not index.scores("the of and").any()
    assert not index.scores("zyzzyva").any()
    scores, rows = index.top(["zyzzyva", "cats"], 5)
    assert rows.shape == (2, 2) and scores[0].max() == 0 and scores[1, 0] > 0


def test_a_saved_index_loads_with_the_same_scores_and_no_pickle(tmp_path, mini_data):
    corpus, queries = _scifact(mini_data)
    index = BM25(corpus, code=True)
    index.save(tmp_path / "lexical")
    assert {p.suffix for p in (tmp_path / "lexical").iterdir()} <= {".npy", ".json"}
    again = BM25.load(tmp_path / "lexical")
    assert again.code and again.size == len(corpus)
    for query in queries[:5]:
        np.testing.assert_array_equal(again.scores(query), index.scores(query))


def test_an_empty_index_answers_nothing():
    empty = BM25([])
    assert empty.scores("anything").shape == (0,)
    scores, rows = empty.top(["anything"], 10)
    assert scores.shape == (1, 0) and rows.shape == (1, 0)
