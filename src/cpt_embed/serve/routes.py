"""The routes: POST /v1/embeddings, POST /v1/search, GET /health, GET /metrics and the
search page at /, answering from the app's ServeState; /openapi.json documents every status
each of them answers."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute

from cpt_embed.errors import InputError
from cpt_embed.model import Encoder
from cpt_embed.search.explain import explain_hits
from cpt_embed.search.query import Searcher, hits_to_dicts
from cpt_embed.serve.batcher import MicroBatcher, QueueFull
from cpt_embed.serve.embedding import usage
from cpt_embed.serve.errors import ApiError
from cpt_embed.serve.inputs import parse_body, read_inputs, text_tokens
from cpt_embed.serve.metrics import CONTENT_TYPE, ServerMetrics
from cpt_embed.serve.page import page
from cpt_embed.serve.schemas import (
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorResponse,
    Health,
    SearchRequest,
    SearchResponse,
    embedding_request_schema,
)


@dataclass(frozen=True)
class ServeState:
    """What the routes answer from (the app's `state.serve`)."""

    encoder: Encoder
    model_name: str
    batcher: MicroBatcher
    metrics: ServerMetrics
    searcher: Searcher | None = None
    # explanations run one at a time, beside the batcher: each is a backward pass per hit
    explaining: asyncio.Lock = field(default_factory=asyncio.Lock)


class VectorsJSON(JSONResponse):
    """JSON with numpy float32 arrays written by orjson: 30x faster than json.dumps of
    lists, half the bytes, and each number reads back as exactly the same float32."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class RequestRoute(APIRoute):
    """An APIRoute whose endpoint takes the Request alone and returns its Response: FastAPI
    routes to it, answers its errors and lists it in /openapi.json (its body described by
    `openapi_extra`), but solves no dependencies for it, which cost ~25 us a request."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint


# What each route may answer besides its 200, and when.
_WHEN = {
    400: "The request is not valid: its body, or a Content-Length that is no number.",
    401: "Missing or wrong API key (when the server has one).",
    404: "No such model on this server, or no index to search.",
    413: "The body is over the server's cap.",
    500: "An internal error; the server log has the details.",
    503: "Over capacity, or past the request's deadline: retry after Retry-After seconds.",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": ErrorResponse, "description": _WHEN[status]}
        | ({"headers": _RETRY_AFTER} if status == 503 else {})
        for status in statuses
    }


API_ERRORS = _errors(400, 401, 404, 413, 500, 503)
OPEN_ERRORS = _errors(400, 413, 500, 503)


def _state(request: Request) -> ServeState:
    return request.app.state.serve


def _body_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def _embed(
    state: ServeState, items: list, side: str, lengths: list[int], ids: bool = False
) -> np.ndarray:
    try:
        return await state.batcher.embed(items, side, lengths, ids=ids)
    except QueueFull:
        raise ApiError(
            503, "the server is at capacity; retry shortly", kind="server_error", code="overloaded"
        ) from None


def _vectors_response(
    vectors: np.ndarray, encoding_format: str, model_name: str, tokens: int
) -> VectorsJSON:
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    data = []
    for i, vector in enumerate(vectors):
        if encoding_format == "base64":
            value: Any = base64.b64encode(vector.tobytes()).decode("ascii")
        else:
            value = vector
        data.append({"object": "embedding", "index": i, "embedding": value})
    return VectorsJSON(
        {
            "object": "list",
            "data": data,
            "model": model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


async def embeddings(request: Request) -> VectorsJSON:
    """OpenAI's embeddings API over the served model (body: EmbeddingRequest)."""
    state = _state(request)
    body = parse_body(
        await request.body(), request.headers.get("content-type", ""), EmbeddingRequest
    )
    if body.model != state.model_name:
        raise ApiError(
            404,
            f"model {body.model!r} is not served here; this server has {state.model_name!r}",
            param="model",
            code="model_not_found",
        )
    encoder = state.encoder
    if body.dimensions is not None and not 1 <= body.dimensions <= encoder.dim:
        raise ApiError(
            400,
            f"dimensions must be in [1, {encoder.dim}], got {body.dimensions}",
            param="dimensions",
        )
    inputs = read_inputs(body, len(encoder.tokenizer))
    if inputs.ids:
        lengths = [len(ids) for ids in inputs.items]
    else:
        lengths = await text_tokens(inputs.items, encoder)  # type: ignore[arg-type]
    read = usage(encoder, lengths, body.input_type)
    vectors = await _embed(state, inputs.items, body.input_type, read, inputs.ids)
    if body.dimensions is not None:
        vectors = vectors[:, : body.dimensions]
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    state.metrics.tokens += sum(read)
    return _vectors_response(vectors, body.encoding_format, state.model_name, sum(read))


async def search(request: Request) -> JSONResponse:
    """The index's best hits for a query (body: SearchRequest; 404 when the server has no
    index)."""
    state = _state(request)
    body = parse_body(await request.body(), request.headers.get("content-type", ""), SearchRequest)
    if state.searcher is None:
        raise ApiError(404, "no index loaded: start the server with --index INDEX", code="no_index")
    try:
        mode = state.searcher.check_mode(body.mode)
    except InputError as err:
        raise ApiError(400, str(err), param="mode", code="mode_unavailable") from None
    vector = None
    if mode != "lexical":
        # at most max_length tokens are read: the batch budget needs no tokenizing here
        tokens = state.encoder.config.max_length
        vector = (await _embed(state, [body.query], "query", [tokens]))[0]
    hits = state.searcher.search_vector(
        vector, body.k, language=body.lang, path_glob=body.path_glob, text=body.query, mode=mode
    )
    explanations = None
    if body.explain:
        async with state.explaining:
            explanations = await asyncio.to_thread(explain_hits, state.encoder, body.query, hits)
    data = hits_to_dicts(hits, explanations)
    return JSONResponse({"object": "list", "data": data, "model": state.model_name})


async def health(request: Request) -> Health:
    """Liveness, the served model and index, and the queue's depth."""
    state = _state(request)
    return Health(
        model=state.model_name,
        dim=state.encoder.dim,
        index=str(state.searcher.path) if state.searcher is not None else None,
        queued_texts=state.batcher.queued,
    )


async def metrics(request: Request) -> PlainTextResponse:
    """Prometheus text of the server's counts."""
    return PlainTextResponse(_state(request).metrics.render(), media_type=CONTENT_TYPE)


def add_routes(app: FastAPI) -> None:
    """Register the routes on `app` itself, ahead of FastAPI's own (/docs, /openapi.json):
    an included APIRouter is wrapped by FastAPI (0.16x) and matched twice on every request
    (~12 us a request), and each route tried before the right one costs a regex match."""
    router = app.router
    theirs = list(router.routes)
    router.routes.clear()
    encoder = app.state.serve.encoder
    router.add_api_route(
        "/v1/embeddings",
        embeddings,
        methods=["POST"],
        route_class_override=RequestRoute,
        response_class=VectorsJSON,
        responses={200: {"model": EmbeddingResponse}, **API_ERRORS},
        openapi_extra=_body_schema(embedding_request_schema(encoder.dim, len(encoder.tokenizer))),
    )
    router.add_api_route(
        "/v1/search",
        search,
        methods=["POST"],
        route_class_override=RequestRoute,
        responses={200: {"model": SearchResponse}, **API_ERRORS},
        openapi_extra=_body_schema(SearchRequest.model_json_schema()),
    )
    router.add_api_route("/health", health, methods=["GET"], responses=OPEN_ERRORS)
    router.add_api_route(
        "/metrics",
        metrics,
        methods=["GET"],
        response_class=PlainTextResponse,
        responses=OPEN_ERRORS,
    )
    router.add_api_route(
        "/", page, methods=["GET"], response_class=HTMLResponse, responses=OPEN_ERRORS
    )
    router.routes.extend(theirs)
