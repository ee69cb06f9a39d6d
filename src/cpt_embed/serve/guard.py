"""The ASGI middleware in front of the routes: the API key, the body cap, each request's
deadline, and the counts per path. Plain ASGI, not BaseHTTPMiddleware, which costs a task
per request. It answers refusals (401, 400, 413, 503) and nothing else: every request it
lets through goes to FastAPI's routing."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cpt_embed.serve.errors import ApiError
from cpt_embed.serve.metrics import ServerMetrics

# The largest body that can hold MAX_INPUTS inputs of typical length, with room to spare.
MAX_BODY_BYTES = 8 * 1024 * 1024
REQUEST_TIMEOUT_SECONDS = 60.0


class Guard:
    """Counts requests and time per known path (others as "other"), checks the API key on
    /v1/ paths in constant time, caps the request body (413) and gives each request a
    deadline (503), reading the body included, so that a stalled client cannot hold a
    slot."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: ServerMetrics,
        api_key: str | None,
        routes: Iterable[str],
        max_body_bytes: int = MAX_BODY_BYTES,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.expected = f"Bearer {api_key}".encode() if api_key else None
        self.routes = frozenset(routes)
        self.max_body_bytes = max_body_bytes
        self.timeout = timeout

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

        try:
            error = self._refusal(scope)
            if error is None:
                try:
                    async with asyncio.timeout(self.timeout):
                        await self._answer(scope, receive, send_and_record)
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

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
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
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)
