"""The app as a whole against the Encoder as oracle: the official openai client on a live
server, `cpt serve` itself, the OpenAPI schema and cross-origin access."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from servers import free_port, served

from cpt_embed.serve.app import create_app

TEXTS = ["read a json file", "def add(a, b):\n    return a + b", "the cat sat on the mat"]


@pytest.fixture(scope="module")
def live_server(encoder):
    with served(create_app(encoder, "default", api_key="secret")) as url:
        yield url


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


def test_cpt_serve_command_binds_loopback_and_checks_the_key():
    import httpx

    port = free_port()
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


def test_the_openapi_schema_describes_every_route(client):
    schema = client.get("/openapi.json").json()
    embeddings = schema["paths"]["/v1/embeddings"]["post"]
    body = embeddings["requestBody"]["content"]["application/json"]["schema"]
    assert body["title"] == "EmbeddingRequest" and {"input", "model"} <= set(body["required"])
    assert "EmbeddingResponse" in json.dumps(embeddings["responses"]["200"])
    assert "ErrorResponse" in json.dumps(embeddings["responses"]["400"])
    search = schema["paths"]["/v1/search"]["post"]
    assert "SearchRequest" in json.dumps(search["requestBody"])
    assert "SearchResponse" in json.dumps(search["responses"]["200"])
    assert "Health" in json.dumps(schema["paths"]["/health"]["get"]["responses"]["200"])
    assert set(schema["paths"]) == {"/v1/embeddings", "/v1/search", "/health", "/metrics", "/"}


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
    app = create_app(encoder, "default", api_key="k", cors_origins=["https://app.example"])
    with TestClient(app) as client:
        allowed = client.options(
            "/v1/embeddings", headers={**preflight, "Origin": "https://app.example"}
        )
        refused = client.options("/v1/embeddings", headers=preflight)
        origin = {"Origin": "https://app.example"}
        body = {"model": "default", "input": "x"}
        embedded = client.post(
            "/v1/embeddings", json=body, headers={**origin, "Authorization": "Bearer k"}
        )
        unauthorised = client.post("/v1/embeddings", json=body, headers=origin)
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in refused.headers
    # answers of the routes and refusals of the guard alike carry CORS headers
    assert embedded.status_code == 200 and unauthorised.status_code == 401
    for response in (embedded, unauthorised):
        assert response.headers["access-control-allow-origin"] == "https://app.example"
