"""Helpers for the server tests: a free loopback port, an app served by uvicorn in a
thread, and an encoder whose `encode` a test replaces."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from cpt_embed import Encoder
from cpt_embed.serve.http import ServerConfig


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def served(app, **options) -> Iterator[str]:
    """`app` served by uvicorn on loopback in a thread, with the connections of `cpt
    serve` (`options` for its ServerConfig), while the block runs; yields its base URL."""
    port = free_port()
    config = ServerConfig(app, host="127.0.0.1", port=port, log_level="error", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class Wrapped:
    """The encoder with a slow or failing `encode`, everything else its own."""

    def __init__(self, encoder: Encoder, encode) -> None:
        self._encoder, self.encode = encoder, encode

    def __getattr__(self, name):
        return getattr(self._encoder, name)
