"""The routes: POST /v1/embeddings, POST /v1/search, GET /health, GET /metrics and the
search page at /, answering from the app's ServeState."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError

from cpt_embed.model import Encoder
from cpt_embed.search.query import Searcher, hits_to_dicts
from cpt_embed.serve.batcher import MicroBatcher, QueueFull
from cpt_embed.serve.errors import ApiError, invalid_body
from cpt_embed.serve.metrics import CONTENT_TYPE, ServerMetrics
from cpt_embed.serve.schemas import (
    MAX_INPUT_TOKENS,
    MAX_INPUTS,
    MAX_REQUEST_TOKENS,
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorResponse,
    Health,
    SearchRequest,
    SearchResponse,
)

# Requests with at most this many characters are tokenized on the event loop (tens of
# microseconds); handing them to a thread and back costs ten times that. Longer ones go to
# a thread, so that a body near the cap does not stall the loop for a second.
INLINE_TOKENIZE_CHARS = 16_384


@dataclass(frozen=True)
class ServeState:
    """What the routes answer from (the app's `state.serve`)."""

    encoder: Encoder
    model_name: str
    batcher: MicroBatcher
    metrics: ServerMetrics
    searcher: Searcher | None = None


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


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 503)
}


def _state(request: Request) -> ServeState:
    return request.app.state.serve


def _json_or_untyped(content_type: str) -> bool:
    """True for a body read as JSON: no Content-Type, or application/json or
    application/*+json."""
    kind = content_type.split(";")[0].strip().lower()
    return kind in ("", "application/json") or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def _parse(raw: bytes, content_type: str) -> EmbeddingRequest:
    """The request in `raw`, parsed by pydantic from the bytes at once: FastAPI's body
    validation costs ~0.2 ms a request, as much as the forward pass of a short text.

    Bodies of other types are refused as FastAPI refuses them (a browser can send
    text/plain across sites without asking first): no body is a missing one, any other
    bytes are no object."""
    if not _json_or_untyped(content_type):
        if not raw:
            raise ApiError(400, "invalid request body: Field required")
        raise ApiError(
            400,
            "invalid request body: Input should be a valid dictionary or object to extract "
            "fields from",
        )
    try:
        return EmbeddingRequest.model_validate_json(raw)
    except ValidationError as err:
        raise invalid_body(err.errors()) from None


def _texts(body: EmbeddingRequest, encoder: Encoder) -> list[str]:
    """The request's inputs as texts (token ids decoded), within OpenAI's limits."""
    tokenizer = encoder.tokenizer
    items = body.input
    if isinstance(items, str):
        items = [items]
    if not items:
        raise ApiError(400, "input must not be empty", param="input")
    if isinstance(items[0], int):
        items = [items]
    if len(items) > MAX_INPUTS:
        raise ApiError(400, f"{len(items)} inputs; at most {MAX_INPUTS} per request", param="input")
    texts = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            if not item:
                raise ApiError(400, f"input[{i}] is an empty string", param="input")
            texts.append(item)
            continue
        if not item or any(not 0 <= t < len(tokenizer) for t in item):
            raise ApiError(
                400,
                f"input[{i}]: token ids must be a non-empty list in "
                f"[0, {len(tokenizer)}) of this model's tokenizer",
                param="input",
            )
        texts.append(tokenizer.decode(item, skip_special_tokens=True))
    return texts


async def _tokens_used(texts: list[str], encoder: Encoder) -> int:
    """Tokens the model reads of `texts` (each up to its max_length), after checking the
    whole texts against OpenAI's per-input and per-request limits."""
    tokenizer, limit = encoder.tokenizer, encoder.config.max_length
    if sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS:
        encoded = tokenizer(texts, verbose=False)
    else:
        encoded = await asyncio.to_thread(tokenizer, texts, verbose=False)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    for i, n in enumerate(lengths):
        if n > MAX_INPUT_TOKENS:
            raise ApiError(
                400,
                f"input[{i}] has {n} tokens; at most {MAX_INPUT_TOKENS} per input "
                f"(the model reads the first {limit})",
                param="input",
            )
    if sum(lengths) > MAX_REQUEST_TOKENS:
        raise ApiError(
            400,
            f"{sum(lengths)} tokens in this request; at most {MAX_REQUEST_TOKENS}",
            param="input",
        )
    return sum(min(n, limit) for n in lengths)


async def _embed(state: ServeState, texts: list[str], side: str, tokens: int) -> np.ndarray:
    try:
        return await state.batcher.embed(texts, side, tokens)
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
    body = _parse(await request.body(), request.headers.get("content-type", ""))
    if body.model != state.model_name:
        raise ApiError(
            404,
            f"model {body.model!r} is not served here; this server has {state.model_name!r}",
            param="model",
            code="model_not_found",
        )
    dim = state.encoder.dim
    if body.dimensions is not None and not 1 <= body.dimensions <= dim:
        raise ApiError(
            400, f"dimensions must be in [1, {dim}], got {body.dimensions}", param="dimensions"
        )
    texts = _texts(body, state.encoder)
    tokens = await _tokens_used(texts, state.encoder)
    vectors = await _embed(state, texts, body.input_type, tokens)
    if body.dimensions is not None:
        vectors = vectors[:, : body.dimensions]
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    state.metrics.tokens += tokens
    return _vectors_response(vectors, body.encoding_format, state.model_name, tokens)


async def search(body: SearchRequest, request: Request) -> dict[str, Any]:
    """The index's best hits for a query (404 when the server has no index)."""
    state = _state(request)
    if state.searcher is None:
        raise ApiError(404, "no index loaded: start the server with --index INDEX", code="no_index")
    encoder = state.encoder
    tokens = min(len(encoder.tokenizer(body.query)["input_ids"]), encoder.config.max_length)
    vector = (await _embed(state, [body.query], "query", tokens))[0]
    hits = state.searcher.search_vector(
        vector, body.k, language=body.lang, path_glob=body.path_glob
    )
    return {"object": "list", "data": hits_to_dicts(hits), "model": state.model_name}


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


@cache
def _page() -> str:
    return resources.files("cpt_embed.serve").joinpath("page.html").read_text("utf-8")


async def page() -> str:
    """The search page (plain HTML + JS over /v1/search)."""
    return _page()


def add_routes(app: FastAPI) -> None:
    """Register the routes on `app` itself, ahead of FastAPI's own (/docs, /openapi.json):
    an included APIRouter is wrapped by FastAPI (0.16x) and matched twice on every request
    (~12 us a request), and each route tried before the right one costs a regex match."""
    router = app.router
    theirs = list(router.routes)
    router.routes.clear()
    router.add_api_route(
        "/v1/embeddings",
        embeddings,
        methods=["POST"],
        route_class_override=RequestRoute,
        response_class=VectorsJSON,
        responses={200: {"model": EmbeddingResponse}, **_ERRORS},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": EmbeddingRequest.model_json_schema()}},
            }
        },
    )
    router.add_api_route(
        "/v1/search",
        search,
        methods=["POST"],
        responses={200: {"model": SearchResponse}, **_ERRORS},
    )
    router.add_api_route("/health", health, methods=["GET"])
    router.add_api_route("/metrics", metrics, methods=["GET"], response_class=PlainTextResponse)
    router.add_api_route("/", page, methods=["GET"], response_class=HTMLResponse)
    router.routes.extend(theirs)
