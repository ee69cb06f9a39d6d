"""Connections at the socket level, with the HTTP protocol of `cpt serve`: sockets that
send no request head, or trickle it, are closed after the header timeout instead of
holding connection slots; a malformed request pipelined after a valid one leaves the valid
one's answer in place; the protocol's own refusals are OpenAI error objects."""

from __future__ import annotations

import contextlib
import json
import socket
import time

import httpx
import pytest
from servers import served

from cpt_embed.serve.app import create_app

BODY = b'{"model": "default", "input": "hello"}'
GOOD = (
    b"POST /v1/embeddings HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)


def _connect(url: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=20)


def _responses(sock: socket.socket) -> list[tuple[int, dict[str, str], bytes]]:
    """Every response on `sock` until the server closes it: (status, headers, body)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    answers = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        length = int(headers.get("content-length", 0))
        answers.append((int(lines[0].split()[1]), headers, data[:length]))
        data = data[length:]
    return answers


def _open_error(body: bytes) -> dict:
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.fixture(scope="module")
def url(encoder):
    app = create_app(encoder, "default")
    with served(app, max_connections=6, header_timeout=1.0) as base:
        yield base


def test_silent_and_trickling_connections_are_closed_after_the_header_timeout(url):
    silent = [_connect(url) for _ in range(3)]
    trickling = [_connect(url) for _ in range(3)]
    for sock in trickling:
        sock.sendall(b"GET /health HTTP/1.1\r\n")
    time.sleep(0.2)
    busy = httpx.get(f"{url}/health", timeout=10)  # every slot is held now
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert _open_error(busy.content)["code"] == "overloaded"
    for _ in range(8):  # one header line every 0.3 s: never a whole head
        time.sleep(0.3)
        for sock in trickling:
            with contextlib.suppress(OSError):  # closed by the server meanwhile
                sock.sendall(b"X-Slow: 1\r\n")
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    for sock in silent:
        assert sock.recv(100) == b""  # closed, nothing said: no request had begun
        sock.close()
    for sock in trickling:
        [(status, headers, body)] = _responses(sock)
        assert status == 408 and headers["connection"] == "close"
        assert _open_error(body)["code"] == "timeout"
        sock.close()


def test_a_connection_between_requests_may_wait_for_its_next_one(url):
    # the header deadline counts from a request's first byte, not from the last answer
    with _connect(url) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        time.sleep(1.5)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        [(status, _, _)] = _responses(sock)
    assert status == 200


@pytest.mark.parametrize(
    "malformed",
    [b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: zz\r\n\r\n"],
)
def test_a_malformed_request_after_a_pipelined_one_keeps_its_answer(url, encoder, malformed):
    with _connect(url) as sock:
        sock.sendall(GOOD + malformed)  # one write: both requests in one segment
        answers = _responses(sock)
    assert [status for status, _, _ in answers] == [200, 400]
    vector = json.loads(answers[0][2])["data"][0]["embedding"]
    assert abs(vector[0] - float(encoder.encode(["hello"])[0, 0])) < 1e-3
    assert _open_error(answers[1][2])["code"] == "bad_http"


def test_a_malformed_request_alone_gets_an_openai_error(url):
    with _connect(url) as sock:
        sock.sendall(b"GARBAGE\r\n\r\n")
        [(status, headers, body)] = _responses(sock)
    assert status == 400 and headers["content-type"] == "application/json"
    assert _open_error(body)["message"] == "malformed HTTP request; the connection is closed"
