"""Errors as OpenAI answers them ({"error": {message, type, param, code}}), and the
exception handlers that turn every failure into one: never a stack trace on the wire."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

RETRY_AFTER_SECONDS = 1

log = logging.getLogger("cpt_embed.serve")


class ApiError(Exception):
    """An error answered as OpenAI does: {"error": {message, type, param, code}}; a 503
    also tells the client when to retry."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = (
            status,
            message,
            kind,
            param,
            code,
        )
        self.headers = dict(headers or {})
        if status == 503:
            self.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)

    def body(self) -> dict[str, Any]:
        """The error object: {"error": {message, type, param, code}}."""
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        """The answer to send for this error."""
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers or None)


def invalid_body(errors: Sequence[Any], skip: int = 0) -> ApiError:
    """400 for the first of pydantic's errors about a request body, naming the field as
    OpenAI does; `skip` leading parts of its location are not the body's own (FastAPI
    puts "body" first)."""
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ())[skip:]) or None
    message = f"invalid request body: {first.get('msg', 'not valid')}" + (
        f" at {where}" if where else ""
    )
    return ApiError(400, message, param=where)


async def _api_error(request: Request, err: ApiError) -> JSONResponse:
    return err.response()


async def _bad_body(request: Request, err: RequestValidationError) -> JSONResponse:
    return invalid_body(err.errors(), skip=1).response()


async def _http_error(request: Request, err: HTTPException) -> JSONResponse:
    """Routing's own refusals (404 no such path, 405 wrong method with its Allow header)."""
    method, path = request.method, request.url.path
    if err.status_code == 404:
        message, code = f"no such path: {path}", "not_found"
    elif err.status_code == 405:
        allowed = (err.headers or {}).get("Allow", "")
        message, code = f"{method} is not allowed on {path}; use {allowed}", "method_not_allowed"
    else:
        message, code = str(err.detail), None
    return ApiError(err.status_code, message, code=code, headers=err.headers).response()


async def _internal_error(request: Request, err: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=err)
    return ApiError(
        500,
        "internal error while answering; the server log has the details",
        kind="server_error",
        code="internal_error",
    ).response()


# For FastAPI(exception_handlers=...): OpenAI-style answers to our errors, to bodies FastAPI
# refused, to routing's 404 and 405, and to anything unexpected (logged here, answered
# without details).
EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    RequestValidationError: _bad_body,
    HTTPException: _http_error,
    Exception: _internal_error,
}
