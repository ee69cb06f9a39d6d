"""The HTTP API: OpenAI-compatible `/v1/embeddings`, `/v1/search` over an index, `/health`,
`/metrics` (Prometheus text) and a search page at `/`.

Exposed to a network it holds its ground: request bodies are capped (413), every request has
a deadline (503 + Retry-After), a full queue refuses at once (503 + Retry-After), the API key
is compared in constant time, errors never carry a stack trace, and no cross-origin browser
access is allowed unless origins are named.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Literal

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field, ValidationError

from cpt_embed.model import Encoder
from cpt_embed.serve.batcher import MicroBatcher, QueueFull

# OpenAI's limits for its embedding models.
MAX_INPUTS = 2048
MAX_INPUT_TOKENS = 8192
MAX_REQUEST_TOKENS = 300_000
# A search query is one input; its text is capped before tokenizing (4 bytes per token).
MAX_QUERY_CHARS = 4 * MAX_INPUT_TOKENS
RETRY_AFTER_SECONDS = 1
# The largest body that can hold MAX_INPUTS inputs of typical length, with room to spare.
MAX_BODY_BYTES = 8 * 1024 * 1024
REQUEST_TIMEOUT_SECONDS = 60.0
# Requests with at most this many characters are tokenized on the event loop (tens of
# microseconds); handing them to a thread and back costs ten times that. Longer ones go to
# a thread, so that a body near the cap does not stall the loop for a second.
INLINE_TOKENIZE_CHARS = 16_384

log = logging.getLogger("cpt_embed.serve")


class ApiError(Exception):
    """An error answered as OpenAI does: {"error": {message, type, param, code}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = (
            status,
            message,
            kind,
            param,
            code,
        )

    def response(self) -> JSONResponse:
        body = {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if self.status == 503 else None
        return JSONResponse(body, status_code=self.status, headers=headers)


class EmbeddingRequest(BaseModel):
    input: str | list[str] | list[int] | list[list[int]]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None
    input_type: Literal["query", "document"] = Field(
        "query", description="cpt-embed extension: the side to embed on."
    )


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    k: int = Field(10, ge=1, le=1000)
    lang: str | None = Field(None, max_length=64)
    path_glob: str | None = Field(None, max_length=1024)


class _VectorsJSON(JSONResponse):
    """JSON with numpy float32 arrays written by orjson: 30x faster than json.dumps of
    lists, half the bytes, and each number reads back as exactly the same float32."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class _Metrics:
    def __init__(self) -> None:
        self.requests: Counter = Counter()
        self.seconds: Counter = Counter()
        self.tokens = 0

    def render(self, batcher: MicroBatcher) -> str:
        lines = [
            "# HELP cpt_requests_total HTTP requests by path and status code.",
            "# TYPE cpt_requests_total counter",
        ]
        for (path, status), count in sorted(self.requests.items()):
            lines.append(f'cpt_requests_total{{path="{path}",status="{status}"}} {count}')
        lines += [
            "# HELP cpt_request_seconds_total Time spent answering, by path.",
            "# TYPE cpt_request_seconds_total counter",
        ]
        for path, seconds in sorted(self.seconds.items()):
            lines.append(f'cpt_request_seconds_total{{path="{path}"}} {seconds:.6f}')
        stats = batcher.stats
        for name, kind, value, text in [
            ("cpt_tokens_total", "counter", self.tokens, "Tokens embedded (usage)."),
            ("cpt_embedded_texts_total", "counter", stats.texts, "Texts embedded."),
            ("cpt_batches_total", "counter", stats.batches, "Forward passes (micro-batches)."),
            ("cpt_rejected_total", "counter", stats.rejected, "Requests refused: queue full."),
            ("cpt_queued_texts", "gauge", batcher.queued, "Texts waiting in the queue."),
        ]:
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {value}"]
        return "\n".join(lines) + "\n"


def _invalid_body(errors: list[dict], skip: int) -> ApiError:
    """400 for the first of pydantic's errors about a request body; `skip` leading parts of
    its location are not the body's own (FastAPI puts "body" first)."""
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ())[skip:]) or None
    message = f"invalid request body: {first.get('msg', 'not valid')}" + (
        f" at {where}" if where else ""
    )
    return ApiError(400, message, param=where)


Handler = Callable[[bytes], Awaitable[Response]]


def _json_or_untyped(headers: dict[bytes, bytes]) -> bool:
    """True for a body FastAPI would read as JSON: no Content-Type, or application/json or
    application/*+json. Others go to FastAPI, which refuses them as it always has (a
    browser can send text/plain across sites without asking first)."""
    kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    return kind in (b"", b"application/json") or (
        kind.startswith(b"application/") and kind.endswith(b"+json")
    )


class _Guard:
    """ASGI middleware in front of everything: counts requests and time per known path,
    checks the API key on /v1/ paths, caps the request body and gives each request a
    deadline. Plain ASGI, not BaseHTTPMiddleware, which costs a task per request.

    POSTs to a path in `direct` go to its handler with the body read here, past FastAPI's
    routing and validation: at 0.2 ms a request those cost as much as the forward pass
    of a short text does (docs/benchmarks.md). FastAPI keeps the route for its docs."""

    def __init__(
        self,
        app,
        *,
        metrics: _Metrics,
        api_key: str | None,
        routes: frozenset[str],
        max_body_bytes: int,
        timeout: float,
        direct: dict[str, Handler],
    ) -> None:
        self.app = app
        self.direct = direct
        self.metrics = metrics
        self.expected = f"Bearer {api_key}".encode() if api_key else None
        self.routes = routes
        self.max_body_bytes = max_body_bytes
        self.timeout = timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        known = path if path in self.routes else "other"
        status = 500  # what is counted when the app raises before responding

        async def send_and_record(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            headers = dict(scope["headers"])
            error = self._refusal(scope, headers)
            if error is None:
                try:
                    async with asyncio.timeout(self.timeout):
                        await self._answer(scope, headers, receive, send_and_record)
                except TimeoutError:
                    error = ApiError(
                        503,
                        f"the request took longer than {self.timeout:g} s; retry shortly",
                        kind="server_error",
                        code="timeout",
                    )
            if error is not None and status == 500:  # not once the response has started
                await error.response()(scope, receive, send_and_record)
        finally:
            self.metrics.requests[(known, status)] += 1
            self.metrics.seconds[known] += time.perf_counter() - started

    def _refusal(self, scope, headers: dict[bytes, bytes]) -> ApiError | None:
        guarded = self.expected is not None and scope["path"].startswith("/v1/")
        if guarded and not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
            return ApiError(
                401,
                "missing or incorrect API key: send Authorization: Bearer <key>",
                code="invalid_api_key",
            )
        length = headers.get(b"content-length", b"0")
        if not length.isdigit():
            return ApiError(400, "Content-Length must be a number of bytes")
        if int(length) > self.max_body_bytes:
            return self._too_large()
        return None

    def _too_large(self) -> ApiError:
        return ApiError(
            413,
            f"request body over {self.max_body_bytes} bytes; send fewer or shorter inputs",
            code="body_too_large",
        )

    async def _answer(self, scope, headers: dict[bytes, bytes], receive, send) -> None:
        """Read the whole body within the cap (a chunked body has no Content-Length to
        check up front), then hand it to the app as one message."""
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                await self._too_large().response()(scope, receive, send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        handler = self.direct.get(scope["path"]) if scope["method"] == "POST" else None
        if handler is not None and _json_or_untyped(headers):
            await (await handler(body))(scope, receive, send)
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def create_app(
    encoder: Encoder,
    model_name: str,
    *,
    searcher=None,
    api_key: str | None = None,
    max_batch_tokens: int = 16_384,
    max_wait: float = 0.005,
    max_queue: int = 4096,
    max_body_bytes: int = MAX_BODY_BYTES,
    timeout: float = REQUEST_TIMEOUT_SECONDS,
    cors_origins: Sequence[str] = (),
) -> FastAPI:
    """The server's app around one loaded Encoder (and optionally a `Searcher`).

    `max_body_bytes` caps a request body (413 beyond), `timeout` is each request's deadline
    in seconds (503 beyond), `cors_origins` the web origins whose pages may call the API
    (none by default: browsers block cross-origin calls).
    """
    batcher = MicroBatcher(
        encoder, max_batch_tokens=max_batch_tokens, max_wait=max_wait, max_queue=max_queue
    )
    metrics = _Metrics()
    tokenizer = encoder.tokenizer
    limit = encoder.config.max_length

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="cpt-embed", lifespan=lifespan)
    app.state.batcher = batcher

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, err: RequestValidationError) -> JSONResponse:
        return _invalid_body(err.errors(), skip=1).response()

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=err)
        return ApiError(
            500,
            "internal error while answering; the server log has the details",
            kind="server_error",
            code="internal_error",
        ).response()

    def texts_of(body: EmbeddingRequest) -> list[str]:
        items = body.input
        if isinstance(items, str):
            items = [items]
        if not items:
            raise ApiError(400, "input must not be empty", param="input")
        if isinstance(items[0], int):
            items = [items]
        if len(items) > MAX_INPUTS:
            raise ApiError(
                400, f"{len(items)} inputs; at most {MAX_INPUTS} per request", param="input"
            )
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

    async def embed(texts: list[str], side: str, tokens: int) -> np.ndarray:
        try:
            return await batcher.embed(texts, side, tokens)
        except QueueFull:
            raise ApiError(
                503,
                "the server is at capacity; retry shortly",
                kind="server_error",
                code="overloaded",
            ) from None

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest) -> JSONResponse:
        if body.model != model_name:
            raise ApiError(
                404,
                f"model {body.model!r} is not served here; this server has {model_name!r}",
                param="model",
                code="model_not_found",
            )
        if body.dimensions is not None and not 1 <= body.dimensions <= encoder.dim:
            raise ApiError(
                400,
                f"dimensions must be in [1, {encoder.dim}], got {body.dimensions}",
                param="dimensions",
            )
        texts = texts_of(body)
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
        used = [min(n, limit) for n in lengths]
        vectors = await embed(texts, body.input_type, sum(used))
        if body.dimensions is not None:
            vectors = vectors[:, : body.dimensions]
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        metrics.tokens += sum(used)
        vectors = np.ascontiguousarray(vectors, dtype="<f4")
        data = []
        for i, vector in enumerate(vectors):
            if body.encoding_format == "base64":
                value: Any = base64.b64encode(vector.tobytes()).decode("ascii")
            else:
                value = vector
            data.append({"object": "embedding", "index": i, "embedding": value})
        return _VectorsJSON(
            {
                "object": "list",
                "data": data,
                "model": model_name,
                "usage": {"prompt_tokens": sum(used), "total_tokens": sum(used)},
            }
        )

    async def embeddings_direct(raw: bytes) -> Response:
        try:
            body = EmbeddingRequest.model_validate_json(raw)
        except ValidationError as err:
            return _invalid_body(err.errors(), skip=0).response()
        try:
            return await embeddings(body)
        except ApiError as err:
            return err.response()

    @app.post("/v1/search")
    async def search(body: SearchRequest) -> dict[str, Any]:
        if searcher is None:
            raise ApiError(
                404, "no index loaded: start the server with --index INDEX", code="no_index"
            )
        tokens = min(len(tokenizer(body.query)["input_ids"]), limit)
        vector = (await embed([body.query], "query", tokens))[0]
        hits = searcher.search_vector(vector, body.k, language=body.lang, path_glob=body.path_glob)
        return {"object": "list", "data": [hit.__dict__ for hit in hits], "model": model_name}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": model_name,
            "dim": encoder.dim,
            "index": str(searcher.path) if searcher is not None else None,
            "queued_texts": batcher.queued,
        }

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> str:
        return metrics.render(batcher)

    page = resources.files("cpt_embed.serve").joinpath("page.html").read_text("utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def index_page() -> str:
        return page

    # the guard inside CORS: its own answers (direct, 401, 413, 503) carry CORS headers too
    app.add_middleware(
        _Guard,
        metrics=metrics,
        api_key=api_key,
        routes=frozenset(route.path for route in app.routes),
        max_body_bytes=max_body_bytes,
        timeout=timeout,
        direct={"/v1/embeddings": embeddings_direct},
    )
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app
