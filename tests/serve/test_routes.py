"""The routes in-process against the Encoder as oracle: inputs and formats, OpenAI-style
errors, bodies of other types, search, health and the page. /v1/embeddings parses its body
itself but is a route like the others: its answers and errors are those FastAPI's body
validation gave before, and the app's exception handlers make them."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cpt_embed.search.build import build_index
from cpt_embed.search.explain import explain_hits
from cpt_embed.search.query import Searcher
from cpt_embed.serve.app import create_app
from cpt_embed.serve.errors import ApiError

TEXTS = ["read a json file", "def add(a, b):\n    return a + b", "the cat sat on the mat"]


def test_token_id_inputs_and_base64_format(client, encoder):
    ids = encoder.tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"]
    body = {"model": "default", "input": [ids, ids], "encoding_format": "base64"}
    response = client.post("/v1/embeddings", json=body)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    vector = np.frombuffer(base64.b64decode(data[1]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vector, encoder.encode([TEXTS[0]])[0], atol=1e-6)
    one = client.post("/v1/embeddings", json={"model": "default", "input": ids})
    assert len(one.json()["data"]) == 1
    document = client.post(
        "/v1/embeddings", json={"model": "default", "input": TEXTS[1], "input_type": "document"}
    )
    np.testing.assert_allclose(
        document.json()["data"][0]["embedding"],
        encoder.encode([TEXTS[1]], side="document")[0],
        atol=1e-6,
    )


def test_an_answer_has_openais_shape_and_usage(client, encoder):
    response = client.post("/v1/embeddings", json={"model": "default", "input": TEXTS[:2]})
    answer = response.json()
    assert response.headers["content-type"] == "application/json"
    assert set(answer) == {"object", "data", "model", "usage"}
    assert answer["object"] == "list" and answer["model"] == "default"
    assert [(item["object"], item["index"]) for item in answer["data"]] == [
        ("embedding", 0),
        ("embedding", 1),
    ]
    tokens = sum(len(ids) for ids in encoder.tokenizer(TEXTS[:2])["input_ids"])
    assert answer["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


@pytest.mark.parametrize(
    "body, status, match",
    [
        ({"model": "default", "input": []}, 400, "must not be empty"),
        ({"model": "default", "input": ["ok", ""]}, 400, r"input\[1\] is an empty string"),
        ({"model": "default", "input": ["x"] * 2049}, 400, "at most 2048"),
        ({"model": "default", "input": "word " * 9000}, 400, "at most 8192 per input"),
        ({"model": "default", "input": ["word " * 5000] * 70}, 400, "at most 300000"),
        ({"model": "default", "input": [[10**9]]}, 400, "token ids must be"),
        ({"model": "default", "input": "x", "dimensions": 0}, 400, "dimensions must be"),
        ({"model": "other", "input": "x"}, 404, "not served here"),
        ({"input": "x"}, 400, "invalid request body"),
        ({"model": "default", "input": "x", "encoding_format": "int8"}, 400, "invalid"),
    ],
)
def test_bad_requests_get_openai_style_errors(client, body, status, match):
    response = client.post("/v1/embeddings", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert re.search(match, error["message"]), error["message"]


@pytest.mark.parametrize(
    "body, message, param",
    [
        ('{"input": "x"}', "invalid request body: Field required at model", "model"),
        (
            '{"model": "default", "input": [["x"]]}',
            "invalid request body: Input should be a valid string at input.str",
            "input.str",
        ),
        (
            '{"model": "default"',
            "invalid request body: Invalid JSON: EOF while parsing an object at line 1 column 19",
            None,
        ),
        (
            "",
            "invalid request body: Invalid JSON: EOF while parsing a value at line 1 column 0",
            None,
        ),
    ],
)
def test_body_errors_name_the_field_as_openai_does(client, body, message, param):
    # the embeddings route parses its body itself, other routes leave it to FastAPI: both
    # name the field alone, without FastAPI's leading "body"
    error = client.post("/v1/embeddings", content=body).json()["error"]
    assert (error["message"], error["param"]) == (message, param)
    search = client.post("/v1/search", json={"k": 3}).json()["error"]
    assert search["param"] == "query", search


@pytest.mark.parametrize("kind", ["text/plain", "application/x-www-form-urlencoded"])
def test_bodies_not_sent_as_json_are_refused_as_fastapi_refuses_them(client, kind):
    # a browser sends these across sites without a preflight: they must not be embedded
    body = json.dumps({"model": "default", "input": "x"})
    response = client.post("/v1/embeddings", content=body, headers={"Content-Type": kind})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "invalid request body: Input should be a valid dictionary or object to "
        "extract fields from",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    # FastAPI's words for the same body on a route it validates
    search = client.post("/v1/search", content=body, headers={"Content-Type": kind})
    assert search.json()["error"] == response.json()["error"]
    empty = client.post("/v1/embeddings", content=b"", headers={"Content-Type": kind})
    assert empty.json()["error"]["message"] == "invalid request body: Field required"


@pytest.mark.parametrize(
    "kind", [None, "application/json; charset=utf-8", "Application/JSON", "application/vnd.x+json"]
)
def test_json_bodies_and_untyped_ones_are_embedded(client, encoder, kind):
    body = json.dumps({"model": "default", "input": TEXTS[2]})
    headers = {"Content-Type": kind} if kind else {}
    response = client.post("/v1/embeddings", content=body, headers=headers)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        response.json()["data"][0]["embedding"], encoder.encode([TEXTS[2]])[0], atol=1e-6
    )


def test_the_embeddings_routes_errors_are_answered_by_the_apps_handlers(encoder):
    app = create_app(encoder, "default")

    async def teapot(request, err: ApiError):
        from fastapi.responses import PlainTextResponse

        return PlainTextResponse(f"{err.status}: {err.message}", status_code=418)

    app.exception_handlers[ApiError] = teapot
    with TestClient(app) as client:
        response = client.post("/v1/embeddings", json={"model": "other", "input": "x"})
        bad = client.post("/v1/embeddings", content=b"{")
    assert response.status_code == 418 and response.text.startswith("404: model 'other'")
    assert bad.status_code == 418 and "Invalid JSON" in bad.text


def _two_functions(tmp_path):
    """A folder holding one Python file of two functions."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "util.py").write_text(
        'def parse_json(text):\n    """Parse JSON text."""\n    return json.loads(text)\n\n\n'
        'def send_email(to):\n    """Send an email."""\n    smtp.send(to)\n'
    )
    return repo


def test_search_health_and_page(encoder, tmp_path):
    repo = _two_functions(tmp_path)
    build_index([repo], tmp_path / "idx", encoder, model_name="default")
    searcher = Searcher(tmp_path / "idx", encoder, "default")
    with TestClient(create_app(encoder, "default", searcher=searcher)) as client:
        found = client.post("/v1/search", json={"query": "decode json", "k": 1}).json()
        health = client.get("/health").json()
        page = client.get("/")
    assert found["object"] == "list" and found["model"] == "default"
    assert found["data"][0]["name"] == "parse_json" and found["data"][0]["path"] == "repo/util.py"
    assert health == {
        "status": "ok",
        "model": "default",
        "dim": 384,
        "index": str(tmp_path / "idx"),
        "queued_texts": 0,
    }
    assert page.status_code == 200 and "/v1/search" in page.text
    assert page.headers["content-type"].startswith("text/html")
    with TestClient(create_app(encoder, "default")) as bare:
        missing = bare.post("/v1/search", json={"query": "x"})
        assert bare.get("/health").json()["index"] is None
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "no_index"


def test_search_takes_a_mode(encoder, tmp_path):
    repo = _two_functions(tmp_path)
    build_index([repo], tmp_path / "idx", encoder, model_name="default")
    build_index([repo], tmp_path / "dense", encoder, model_name="default", lexical=False)
    searcher = Searcher(tmp_path / "idx", encoder, "default")
    with TestClient(create_app(encoder, "default", searcher=searcher)) as client:
        ask = lambda **body: client.post("/v1/search", json={"query": "smtp send", **body})  # noqa: E731
        modes = {m: ask(mode=m).json()["data"] for m in ("hybrid", "dense", "lexical")}
        bogus = ask(mode="fuzzy")
    expected = searcher.search("smtp send", k=10, mode="lexical")
    assert [h["score"] for h in modes["lexical"]] == [h.score for h in expected]
    assert modes["dense"][0]["name"] == modes["hybrid"][0]["name"] == "send_email"
    assert len(modes["lexical"]) == 1  # parse_json holds neither word
    assert bogus.status_code == 400
    plain = Searcher(tmp_path / "dense", encoder, "default")
    with TestClient(create_app(encoder, "default", searcher=plain)) as client:
        refused = client.post("/v1/search", json={"query": "x", "mode": "hybrid"})
        default = client.post("/v1/search", json={"query": "smtp send"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "mode_unavailable"
    assert default.status_code == 200 and default.json()["data"][0]["name"] == "send_email"


def test_search_explains_each_hit_when_asked(encoder, tmp_path):
    repo = _two_functions(tmp_path)
    build_index([repo], tmp_path / "idx", encoder, model_name="default")
    searcher = Searcher(tmp_path / "idx", encoder, "default")
    with TestClient(create_app(encoder, "default", searcher=searcher)) as client:
        ask = lambda **body: client.post("/v1/search", json={"query": "decode json", **body})  # noqa: E731
        explained = ask(k=2, explain=True).json()["data"]
        plain = ask(k=2).json()["data"]
        lexical = ask(k=1, explain=True, mode="lexical").json()["data"]
    hits = searcher.search("decode json", k=2)
    expected = [e.to_dict() for e in explain_hits(encoder, "decode json", hits)]
    assert [hit.pop("explanation") for hit in explained] == expected
    assert explained == plain  # the hits themselves unchanged
    # a BM25 hit is explained by the model all the same
    (bm25,) = searcher.search("decode json", k=1, mode="lexical")
    (model,) = explain_hits(encoder, "decode json", [bm25])
    assert lexical[0]["explanation"]["similarity"] == pytest.approx(model.similarity, abs=1e-6)


@pytest.mark.parametrize(
    "body",
    [
        {"query": "q" * 40_000},
        {"query": ""},
        {"query": "x", "k": 0},
        {"query": "x", "path_glob": "*" * 2000},
    ],
)
def test_search_requests_are_bounded(client, body):
    response = client.post("/v1/search", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("invalid request body")


def test_a_saturated_server_answers_503_with_retry_after(encoder):
    app = create_app(encoder, "default", max_queue=1)
    with TestClient(app) as client:
        response = client.post("/v1/embeddings", json={"model": "default", "input": ["a", "b"]})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "overloaded"
