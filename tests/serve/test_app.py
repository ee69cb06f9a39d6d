"""The HTTP API against the Encoder as oracle, driven through the official openai client on
a live server, and in-process for errors, auth, limits, search, metrics and micro-batching."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient

from cpt_embed import Encoder
from cpt_embed.search.index import Searcher, build_index
from cpt_embed.serve.app import create_app
from cpt_embed.serve.batcher import MicroBatcher, QueueFull

TEXTS = ["read a json file", "def add(a, b):\n    return a + b", "the cat sat on the mat"]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder.load("default")


@pytest.fixture
def client(encoder):
    with TestClient(create_app(encoder, "default")) as test_client:
        yield test_client


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(encoder):
    port = _free_port()
    app = create_app(encoder, "default", api_key="secret")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_official_openai_client_gets_our_embeddings(live_server, encoder):
    import openai

    client = openai.OpenAI(base_url=f"{live_server}/v1", api_key="secret")
    expected = encoder.encode(TEXTS)
    response = client.embeddings.create(model="default", input=TEXTS)  # base64 on the wire
    got = np.array([item.embedding for item in response.data], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert [item.index for item in response.data] == [0, 1, 2]
    assert response.usage.prompt_tokens == sum(
        len(ids) for ids in encoder.tokenizer(TEXTS)["input_ids"]
    )
    as_floats = client.embeddings.create(
        model="default", input=TEXTS[0], encoding_format="float", dimensions=64
    )
    short = np.array(as_floats.data[0].embedding)
    cut = expected[0, :64] / np.linalg.norm(expected[0, :64])
    np.testing.assert_allclose(short, cut, atol=1e-6)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{live_server}/v1", api_key="wrong").embeddings.create(
            model="default", input="x"
        )
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.embeddings.create(model="text-embedding-3-small", input="x")


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


@pytest.mark.parametrize(
    "body, status, match",
    [
        ({"model": "default", "input": []}, 400, "must not be empty"),
        ({"model": "default", "input": ["ok", ""]}, 400, r"input\[1\] is an empty string"),
        ({"model": "default", "input": ["x"] * 2049}, 400, "at most 2048"),
        ({"model": "default", "input": "word " * 9000}, 400, "at most 8192 per input"),
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
    "body, param",
    [({"input": "x"}, "model"), ({"model": "default", "input": [["x"]]}, "input.str")],
)
def test_body_errors_name_the_field_as_openai_does(client, body, param):
    # /v1/embeddings bodies are parsed by the guard in front of FastAPI, other routes' by
    # FastAPI: both name the field alone, without FastAPI's leading "body"
    error = client.post("/v1/embeddings", json=body).json()["error"]
    assert error["param"] == param, error
    search = client.post("/v1/search", json={"k": 3}).json()["error"]
    assert search["param"] == "query", search


def test_the_embeddings_route_stays_in_the_openapi_schema(client):
    schema = client.get("/openapi.json").json()
    assert "EmbeddingRequest" in json.dumps(schema["paths"]["/v1/embeddings"])


def test_search_health_metrics_and_page(encoder, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "util.py").write_text(
        'def parse_json(text):\n    """Parse JSON text."""\n    return json.loads(text)\n\n\n'
        'def send_email(to):\n    """Send an email."""\n    smtp.send(to)\n'
    )
    build_index([repo], tmp_path / "idx", encoder, model_name="default")
    searcher = Searcher(tmp_path / "idx", encoder, "default")
    with TestClient(create_app(encoder, "default", searcher=searcher)) as client:
        hits = client.post("/v1/search", json={"query": "decode json", "k": 1}).json()["data"]
        assert hits[0]["name"] == "parse_json" and hits[0]["path"] == "repo/util.py"
        assert client.get("/health").json()["status"] == "ok"
        client.post("/v1/embeddings", json={"model": "default", "input": ["a", "b"]})
        metrics = client.get("/metrics").text
        assert 'cpt_requests_total{path="/v1/embeddings",status="200"} 1' in metrics
        assert "cpt_embedded_texts_total 3" in metrics  # the query and the two texts
        page = client.get("/")
        assert page.status_code == 200 and "/v1/search" in page.text
    with TestClient(create_app(encoder, "default")) as bare:
        assert bare.post("/v1/search", json={"query": "x"}).status_code == 404


def test_concurrent_requests_share_forward_passes_and_a_full_queue_refuses(encoder):
    async def scenario():
        batcher = MicroBatcher(encoder, max_batch_tokens=10_000, max_wait=0.05, max_queue=40)
        await batcher.start()
        try:
            results = await asyncio.gather(
                *(batcher.embed([f"text number {i}"], "query", 6) for i in range(32))
            )
            stats = (batcher.stats.requests, batcher.stats.batches)
            with pytest.raises(QueueFull):
                await asyncio.gather(*(batcher.embed(["x"] * 30, "query", 90) for _ in range(2)))
        finally:
            await batcher.stop()
        return results, stats

    results, (requests, batches) = asyncio.run(scenario())
    # each caller gets its own row (batch composition may move bf16 results by ~1e-6)
    expected = encoder.encode([f"text number {i}" for i in range(32)])
    np.testing.assert_allclose(np.concatenate(results), expected, atol=1e-3)
    assert requests == 32 and batches <= 4


def test_a_saturated_server_answers_503_with_retry_after(encoder):
    app = create_app(encoder, "default", max_queue=1)
    with TestClient(app) as client:
        response = client.post("/v1/embeddings", json={"model": "default", "input": ["a", "b"]})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "overloaded"


def test_cpt_serve_command_binds_loopback_and_checks_the_key():
    import httpx

    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cpt_embed.cli", "serve", "--port", str(port)],
        env={**os.environ, "CPT_API_KEY": "k3y"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.HTTPError:
                assert process.poll() is None, process.stderr.read()
                assert time.time() < deadline, "cpt serve did not start"
                time.sleep(0.2)
        assert health.json()["model"] == "default"
        url = f"http://127.0.0.1:{port}/v1/embeddings"
        body = {"model": "default", "input": "hello"}
        assert httpx.post(url, json=body).status_code == 401
        ok = httpx.post(url, json=body, headers={"Authorization": "Bearer k3y"})
        assert ok.status_code == 200 and len(ok.json()["data"][0]["embedding"]) == 384
    finally:
        process.terminate()
        process.wait(10)


class _Wrapped:
    """The encoder with a slow or failing `encode`, everything else its own."""

    def __init__(self, encoder: Encoder, encode) -> None:
        self._encoder, self.encode = encoder, encode

    def __getattr__(self, name):
        return getattr(self._encoder, name)


def test_bodies_over_the_cap_get_413_whether_announced_or_streamed(encoder):
    app = create_app(encoder, "default", max_body_bytes=1000)
    body = b'{"model": "default", "input": "' + b"x" * 2000 + b'"}'

    def chunks():
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    with TestClient(app) as client:
        announced = client.post("/v1/embeddings", content=body)
        streamed = client.post("/v1/embeddings", content=chunks())  # chunked: no length
        small = client.post("/v1/embeddings", json={"model": "default", "input": "ok"})
    for response in (announced, streamed):
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "body_too_large"
    assert small.status_code == 200


def test_a_request_past_its_deadline_gets_503_and_the_server_goes_on(encoder):
    def slow(texts, side="query"):
        time.sleep(1.0)
        return encoder.encode(texts, side=side)

    app = create_app(_Wrapped(encoder, slow), "default", timeout=0.2)
    with TestClient(app) as client:
        late = client.post("/v1/embeddings", json={"model": "default", "input": "x"})
        health = client.get("/health")
        metrics = client.get("/metrics").text
    assert late.status_code == 503 and late.headers["retry-after"] == "1"
    assert late.json()["error"]["code"] == "timeout"
    assert health.status_code == 200
    assert 'cpt_requests_total{path="/v1/embeddings",status="503"} 1' in metrics


def test_internal_errors_answer_json_without_a_stack_trace(encoder):
    def broken(texts, side="query"):
        raise RuntimeError("secret detail from deep inside")

    app = create_app(_Wrapped(encoder, broken), "default")
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/v1/embeddings", json={"model": "default", "input": "x"})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "secret" not in response.text and "Traceback" not in response.text


def test_cross_origin_calls_are_closed_unless_origins_are_named(encoder):
    preflight = {
        "Origin": "https://evil.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    with TestClient(create_app(encoder, "default")) as client:
        closed = client.options("/v1/embeddings", headers=preflight)
        simple = client.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in closed.headers
    assert "access-control-allow-origin" not in simple.headers
    app = create_app(encoder, "default", cors_origins=["https://app.example"])
    with TestClient(app) as client:
        allowed = client.options(
            "/v1/embeddings", headers={**preflight, "Origin": "https://app.example"}
        )
        refused = client.options("/v1/embeddings", headers=preflight)
        body = {"model": "default", "input": "x"}
        embedded = client.post(
            "/v1/embeddings", json=body, headers={"Origin": "https://app.example"}
        )
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in refused.headers
    # answered by the guard in front of FastAPI, and still inside CORS
    assert embedded.status_code == 200
    assert embedded.headers["access-control-allow-origin"] == "https://app.example"


@pytest.mark.parametrize("kind", ["text/plain", "application/x-www-form-urlencoded"])
def test_bodies_not_sent_as_json_are_refused_as_fastapi_refuses_them(client, kind):
    # a browser sends these across sites without a preflight: they must not be embedded
    body = json.dumps({"model": "default", "input": "x"})
    response = client.post("/v1/embeddings", content=body, headers={"Content-Type": kind})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("invalid request body")
    typed = client.post(
        "/v1/embeddings", content=body, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert typed.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"query": "q" * 40_000},
        {"query": ""},
        {"query": "x", "k": 0},
        {"query": "x", "path_glob": "*" * 2000},
    ],
)
def test_search_requests_are_bounded(encoder, body):
    with TestClient(create_app(encoder, "default")) as client:
        response = client.post("/v1/search", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("invalid request body")


def test_callers_that_gave_up_are_not_embedded(encoder):
    async def scenario():
        batcher = MicroBatcher(encoder, max_batch_tokens=10_000, max_wait=0.05, max_queue=100)
        await batcher.start()
        try:
            gone = asyncio.ensure_future(batcher.embed(["given up"] * 10, "query", 30))
            await asyncio.sleep(0)
            gone.cancel()
            kept = await batcher.embed(["still waiting"], "query", 3)
        finally:
            await batcher.stop()
        return kept, batcher.stats

    kept, stats = asyncio.run(scenario())
    assert stats.texts == 1  # the ten texts of the cancelled caller were dropped
    np.testing.assert_allclose(kept, encoder.encode(["still waiting"]), atol=1e-3)
