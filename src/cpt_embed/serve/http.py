"""The HTTP/1.1 connections under the app: uvicorn's httptools protocol, with

- a header deadline: a connection that has not sent a whole request head within
  `header_timeout` seconds of opening (or of its request's first byte) is closed, so that
  silent or trickling sockets cannot hold the server's connection slots (`--timeout`
  starts once the headers are in; uvicorn's keep-alive timeout only runs between
  requests);
- a malformed request answered after the requests pipelined before it (uvicorn answered
  it at once and closed the connection, losing their answers);
- the protocol's own refusals (malformed request, too many connections, late headers) as
  OpenAI error objects like every other error.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from cpt_embed.serve.errors import ApiError

HEADER_TIMEOUT_SECONDS = 10.0


class ServerConfig(uvicorn.Config):
    """uvicorn's Config for the server's app: its connections run `Connection`, at most
    `max_connections` of them (503 beyond), each closed when its request head is not in
    within `header_timeout` seconds."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_connections: int | None = None,
        header_timeout: float = HEADER_TIMEOUT_SECONDS,
        **options: Any,
    ) -> None:
        super().__init__(app, http=Connection, limit_concurrency=max_connections, **options)
        self.header_timeout = header_timeout


def _over_capacity() -> ApiError:
    return ApiError(
        503,
        "too many open connections; retry shortly",
        kind="server_error",
        code="overloaded",
    )


def _malformed() -> ApiError:
    return ApiError(400, "malformed HTTP request; the connection is closed", code="bad_http")


async def _too_many_connections(scope: Scope, receive: Receive, send: Send) -> None:
    response = _over_capacity().response()
    response.headers["Connection"] = "close"
    await response(scope, receive, send)


class Connection(HttpToolsProtocol):
    """One client connection (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = getattr(self.config, "header_timeout", HEADER_TIMEOUT_SECONDS)
        self._header_timer: asyncio.TimerHandle | None = None
        self._started = False  # a request's first byte has come, its head not yet whole
        self._deferred_400: str | None = None

    # the header deadline
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._started = True
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def on_headers_complete(self) -> None:
        self._stop_header_timer()
        self._started = False
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # close once the answer in progress is sent
        elif self._started:
            message = f"request headers not received within {self.header_timeout:g} s"
            self._write_error(ApiError(408, message, code="timeout"))
        else:
            self.transport.close()

    # malformed requests after pipelined ones, and the protocol's own answers
    def send_400_response(self, msg: str) -> None:
        """Answer a request the parser cannot read (400) once the requests before it on
        this connection are answered, then close the connection."""
        self._stop_header_timer()
        if self.cycle is not None and not self.cycle.response_complete:
            self._deferred_400 = msg
            self.flow.pause_reading()  # what follows cannot be read either
            return
        self._write_error(_malformed())

    def on_response_complete(self) -> None:
        super().on_response_complete()
        last_done = self.cycle is None or self.cycle.response_complete
        if self._deferred_400 is not None and last_done and not self.transport.is_closing():
            self._unset_keepalive_if_required()
            self._write_error(_malformed())

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if app is service_unavailable:  # over --max-connections
            app = _too_many_connections
        super()._start_asgi_task(cycle, app)

    def _write_error(self, error: ApiError) -> None:
        """Answer `error` on the socket itself and close the connection."""
        body = orjson.dumps(error.body())
        head = [STATUS_LINE[error.status]]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: application/json\r\n")
        head.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        self.transport.close()
