"""The guard in front of the routes: the API key, the body cap (announced or streamed), the
deadline and the counts, on its own around a small ASGI app and inside the server."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from servers import Wrapped
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cpt_embed.serve.app import create_app
from cpt_embed.serve.batcher import MicroBatcher
from cpt_embed.serve.guard import Guard
from cpt_embed.serve.metrics import ServerMetrics


async def _echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"method": request.method, "bytes": len(body), "head": body[:8].decode()})


async def _slow(request: Request) -> JSONResponse:
    await asyncio.sleep(1.0)
    return JSONResponse({})


def _guarded(encoder, api_key: str | None = None, **options) -> tuple[TestClient, ServerMetrics]:
    """A Starlette app (echo at /v1/echo and /open, a slow route) behind the guard."""
    paths = ["/v1/echo", "/open", "/v1/slow"]
    inner = Starlette(
        routes=[
            Route("/v1/echo", _echo, methods=["GET", "POST"]),
            Route("/open", _echo, methods=["GET", "POST"]),
            Route("/v1/slow", _slow),
        ]
    )
    metrics = ServerMetrics(MicroBatcher(encoder))
    guard = Guard(inner, metrics=metrics, api_key=api_key, routes=paths, **options)
    return TestClient(guard), metrics


def test_the_guard_hands_the_whole_body_to_the_app_and_answers_no_route_itself(encoder):
    client, metrics = _guarded(encoder, max_body_bytes=1000)
    body = b"0123456789" * 90

    def chunks():
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    streamed = client.post("/v1/echo", content=chunks())
    assert streamed.json() == {"method": "POST", "bytes": 900, "head": "01234567"}
    assert client.get("/open").json()["bytes"] == 0
    assert client.post("/nowhere", content=b"{}").status_code == 404  # the app's own answer
    assert metrics.requests == {("/v1/echo", 200): 1, ("/open", 200): 1, ("other", 404): 1}
    assert set(metrics.seconds) == {"/v1/echo", "/open", "other"}


def test_the_key_guards_v1_paths_alone(encoder):
    client, metrics = _guarded(encoder, api_key="s3cret")
    refused = [
        client.post("/v1/echo", content=b"{}"),
        client.post("/v1/echo", content=b"{}", headers={"Authorization": "Bearer wrong"}),
        client.post("/v1/echo", content=b"{}", headers={"Authorization": "s3cret"}),
    ]
    for response in refused:
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
    ok = client.post("/v1/echo", content=b"{}", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    assert client.get("/open").status_code == 200
    assert metrics.requests[("/v1/echo", 401)] == 3


def test_a_content_length_that_is_no_number_is_refused(encoder):
    client, _ = _guarded(encoder)
    response = client.post("/open", content=b"{}", headers={"Content-Length": "2x"})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Content-Length must be a number of bytes"


def test_a_slow_answer_gets_503_at_the_deadline(encoder):
    client, metrics = _guarded(encoder, timeout=0.2)
    started = time.perf_counter()
    late = client.get("/v1/slow")
    assert time.perf_counter() - started < 0.9
    assert late.status_code == 503 and late.headers["retry-after"] == "1"
    assert late.json()["error"] == {
        "message": "the request took longer than 0.2 s; retry shortly",
        "type": "server_error",
        "param": None,
        "code": "timeout",
    }
    assert metrics.requests[("/v1/slow", 503)] == 1


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

    app = create_app(Wrapped(encoder, slow), "default", timeout=0.2)
    with TestClient(app) as client:
        late = client.post("/v1/embeddings", json={"model": "default", "input": "x"})
        health = client.get("/health")
    assert late.status_code == 503 and late.headers["retry-after"] == "1"
    assert late.json()["error"]["code"] == "timeout"
    assert health.status_code == 200
    assert app.state.serve.metrics.requests[("/v1/embeddings", 503)] == 1


@pytest.mark.parametrize("path", ["/v1/embeddings", "/v1/search"])
def test_the_server_checks_the_key_before_reading_a_body(encoder, path):
    app = create_app(encoder, "default", api_key="k", max_body_bytes=10)
    with TestClient(app) as client:
        response = client.post(path, content=b"x" * 100)
    assert response.status_code == 401


def test_bodies_held_at_once_are_capped_and_a_request_over_it_gets_503(encoder):
    paths = ["/v1/slow-echo"]

    async def slow_echo(request: Request) -> JSONResponse:
        body = await request.body()
        await asyncio.sleep(0.5)
        return JSONResponse({"bytes": len(body)})

    inner = Starlette(routes=[Route("/v1/slow-echo", slow_echo, methods=["POST"])])
    metrics = ServerMetrics(MicroBatcher(encoder))
    options = {"max_body_bytes": 1000, "max_bytes_in_flight": 1500}
    guard = Guard(inner, metrics=metrics, api_key=None, routes=paths, **options)

    async def scenario():
        transport = httpx.ASGITransport(app=guard)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first = asyncio.ensure_future(client.post("/v1/slow-echo", content=b"x" * 1000))
            await asyncio.sleep(0.1)
            refused = await client.post("/v1/slow-echo", content=b"y" * 1000)
            small = await client.post("/v1/slow-echo", content=b"z" * 400)  # fits beside it
            after = await client.post("/v1/slow-echo", content=b"w" * 1000)
            return await first, refused, small, after

    first, refused, small, after = asyncio.run(scenario())
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "overloaded"
    assert [r.json()["bytes"] for r in (first, small, after)] == [1000, 400, 1000]
    assert guard.bytes_in_flight == 0
