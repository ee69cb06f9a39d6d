"""The HTTP API: OpenAI-compatible `/v1/embeddings`, `/v1/search` over an index, `/health`,
`/metrics` (Prometheus text) and a search page at `/`.

Exposed to a network it holds its ground: request bodies are capped (413), every request has
a deadline (503 + Retry-After), a full queue refuses at once (503 + Retry-After), the API key
is compared in constant time, errors never carry a stack trace, and no cross-origin browser
access is allowed unless origins are named.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.routing import Route

from cpt_embed.model import Encoder
from cpt_embed.search.query import Searcher
from cpt_embed.serve.batcher import MicroBatcher
from cpt_embed.serve.errors import EXCEPTION_HANDLERS
from cpt_embed.serve.guard import MAX_BODY_BYTES, REQUEST_TIMEOUT_SECONDS, Guard
from cpt_embed.serve.memory import Trimmer
from cpt_embed.serve.metrics import ServerMetrics
from cpt_embed.serve.openapi import install_openapi
from cpt_embed.serve.routes import ServeState, add_routes


def create_app(
    encoder: Encoder,
    model_name: str,
    *,
    searcher: Searcher | None = None,
    api_key: str | None = None,
    max_batch_tokens: int = 16_384,
    max_wait: float = 0.005,
    max_queue: int = 4096,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_bytes_in_flight: int | None = None,
    timeout: float = REQUEST_TIMEOUT_SECONDS,
    cors_origins: Sequence[str] = (),
) -> FastAPI:
    """The server's app around one loaded Encoder (and optionally a `Searcher`).

    `max_body_bytes` caps a request body (413 beyond), `max_bytes_in_flight` the bytes of
    bodies held at once (503 beyond; default 8 bodies of the largest size), `timeout` is each
    request's deadline in seconds (503 beyond), `cors_origins` the web origins whose pages
    may call the API (none by default: browsers block cross-origin calls).
    """
    batcher = MicroBatcher(
        encoder, max_batch_tokens=max_batch_tokens, max_wait=max_wait, max_queue=max_queue
    )
    metrics = ServerMetrics(batcher)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="cpt-embed",
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
        **_without_telemetry(),
    )
    app.state.serve = ServeState(encoder, model_name, batcher, metrics, searcher)
    add_routes(app)
    # the guard inside CORS: its refusals (401, 413, 503) carry CORS headers too
    app.add_middleware(
        Guard,
        metrics=metrics,
        api_key=api_key,
        routes=[route.path for route in app.routes if isinstance(route, Route)],
        max_body_bytes=max_body_bytes,
        max_bytes_in_flight=max_bytes_in_flight,
        timeout=timeout,
        trimmer=Trimmer(working=lambda: batcher.working),
    )
    install_openapi(app, api_key=bool(api_key))
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app


def _without_telemetry() -> dict[str, Any]:
    """FastAPI's own OpenTelemetry switched off where it has it (0.16x): it asks the
    OpenTelemetry API on every request whether a provider is set (~5 us a request). The
    server reports through its Prometheus /metrics."""
    if "telemetry" not in inspect.signature(FastAPI).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
