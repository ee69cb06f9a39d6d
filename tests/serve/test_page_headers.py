"""The search page's security headers: a Content-Security-Policy that admits the page's own
inline script and style blocks by hash (and nothing inline else), no framing, no sniffing;
HEAD answers as GET does, without the body."""

from __future__ import annotations

import base64
import hashlib
import re

from highlighting import PAGE


def _hash(block: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(block.encode()).digest()).decode() + "'"


def test_the_page_has_security_headers_that_admit_its_own_blocks_alone(client):
    response = client.get("/")
    html = PAGE.read_text("utf-8")
    assert response.text == html
    policy = dict(
        (part.split()[0], part.split()[1:])
        for part in response.headers["content-security-policy"].split("; ")
    )
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", html, flags=re.DOTALL)
    styles = re.findall(r"<style[^>]*>(.*?)</style>", html, flags=re.DOTALL)
    assert len(scripts) == 2 and len(styles) == 1
    assert sorted(policy["script-src"]) == sorted(map(_hash, scripts))
    assert policy["style-src"] == [_hash(styles[0])]
    assert policy["default-src"] == ["'none'"] and policy["connect-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert "'unsafe-inline'" not in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_head_answers_as_get_does_without_the_body(client):
    get, head = client.get("/"), client.head("/")
    assert head.status_code == 200 and head.content == b""
    for name in ("content-type", "content-length", "content-security-policy"):
        assert head.headers[name] == get.headers[name]
    assert client.head("/health").status_code == 200
    assert client.head("/v1/embeddings").status_code == 405
