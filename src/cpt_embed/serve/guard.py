"""The ASGI middleware in front of the routes: the API key, the body cap, a cap on the
bytes of bodies held at once, each request's deadline, and the counts per path. Plain
ASGI, not BaseHTTPMiddleware, which costs a task per request. It answers refusals (401,
400, 413, 503) and nothing else: every request it lets through goes to FastAPI's routing
(a HEAD request as a GET, whose body the server leaves out)."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cpt_embed.serve.errors import ApiError
from cpt_embed.serve.memory import Trimmer
from cpt_embed.serve.metrics import ServerMetrics

# The largest body that can hold MAX_INPUTS inputs of typical length, with room to spare.
MAX_BODY_BYTES = 8 * 1024 * 1024
# Bodies held at once, in bodies of the largest size: each is parsed and checked while
# held (up to ~6x its size for token ids), so this bounds a burst's memory.
BODIES_IN_FLIGHT = 8
REQUEST_TIMEOUT_SECONDS = 60.0


class Guard:
    """Counts requests and time per known path (others as "other"), checks the API key on
    /v1/ paths in constant time, caps the request body (413) and the bytes of bodies held
    at once (503 beyond `max_bytes_in_flight`), and gives each request a deadline (503),
    reading the body included, so that a stalled client cannot hold a slot. Its `trimmer`
    hands memory back once no request is in flight."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: ServerMetrics,
        api_key: str | None,
        routes: Iterable[str],
        max_body_bytes: int = MAX_BODY_BYTES,
        max_bytes_in_flight: int | None = None,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
        trimmer: Trimmer | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.expected = f"Bearer {api_key}".encode() if api_key else None
        self.routes = frozenset(routes)
        self.max_body_bytes = max_body_bytes
        self.max_bytes_in_flight = max_bytes_in_flight or BODIES_IN_FLIGHT * max_body_bytes
        self.timeout = timeout
        self.active = 0
        self.bytes_in_flight = 0
        self.trimmer = trimmer or Trimmer()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        status = 500  # what is counted when the app raises before responding

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        if scope["method"] == "HEAD":
            scope = {**scope, "method": "GET"}
        self.active += 1
        self.trimmer.busy()
        held = [0]  # bytes of this request's body counted in bytes_in_flight
        try:
            error = self._refusal(scope)
            if error is None:
                try:
                    async with asyncio.timeout(self.timeout):
                        await self._answer(scope, receive, send_and_record, held)
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
            self.bytes_in_flight -= held[0]
            self.active -= 1
            if not self.active:
                self.trimmer.idle()
            known = path if path in self.routes else "other"
            self.metrics.record(known, status, time.perf_counter() - started)

    def _refusal(self, scope: Scope) -> ApiError | None:
        headers = dict(scope["headers"])
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

    def _hold(self, held: list[int], nbytes: int) -> bool:
        """Count `nbytes` more of this request's body as held, unless that would pass
        max_bytes_in_flight while other bodies are held."""
        others = self.bytes_in_flight - held[0]
        if others and self.bytes_in_flight + nbytes > self.max_bytes_in_flight:
            return False
        held[0] += nbytes
        self.bytes_in_flight += nbytes
        return True

    async def _answer(self, scope: Scope, receive: Receive, send: Send, held: list[int]) -> None:
        """Read the whole body within the caps (a chunked body has no Content-Length to
        check up front), then hand it to the app as one message."""
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        announced = int(dict(scope["headers"]).get(b"content-length", b"0"))
        if not self._hold(held, announced):
            await _busy().response()(scope, receive, send)
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
            if size > held[0] and not self._hold(held, size - held[0]):
                await _busy().response()(scope, receive, send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        self.trimmer.read(len(body))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _busy() -> ApiError:
    return ApiError(
        503,
        "the server holds too many request bodies at once; retry shortly",
        kind="server_error",
        code="overloaded",
    )
