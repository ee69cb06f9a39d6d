"""The search page at / and the headers that keep it to itself: a Content-Security-Policy
that lets the page run its own inline script and style blocks alone (by their hashes) and
talk to this server alone, no framing by other sites, no content sniffing."""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib import resources

from fastapi.responses import HTMLResponse


@cache
def page_html() -> str:
    """The page's HTML (page.html beside this module)."""
    return resources.files("cpt_embed.serve").joinpath("page.html").read_text("utf-8")


def _hashes(tag: str, html: str) -> str:
    """CSP sources for each inline <tag> block of `html`: 'sha256-...' of its text."""
    blocks = re.findall(rf"<{tag}\b[^>]*>(.*?)</{tag}>", html, flags=re.DOTALL)
    digests = [base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() for b in blocks]
    return " ".join(f"'sha256-{digest}'" for digest in digests) or "'none'"


@cache
def page_headers() -> dict[str, str]:
    """The page's security headers, its script and style hashes computed from the file."""
    html = page_html()
    policy = [
        "default-src 'none'",
        f"script-src {_hashes('script', html)}",
        f"style-src {_hashes('style', html)}",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
    return {
        "Content-Security-Policy": "; ".join(policy),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


async def page() -> HTMLResponse:
    """The search page (plain HTML + JS over /v1/search), with its security headers."""
    return HTMLResponse(page_html(), headers=page_headers())
