"""Errors as OpenAI answers them ({"error": {message, type, param, code}}), and the
exception handlers that turn every failure into one: never a stack trace on the wire."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

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
        """The answer to send for this error."""
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


async def _internal_error(request: Request, err: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=err)
    return ApiError(
        500,
        "internal error while answering; the server log has the details",
        kind="server_error",
        code="internal_error",
    ).response()


# For FastAPI(exception_handlers=...): OpenAI-style answers to our errors, to bodies FastAPI
# refused, and to anything unexpected (logged here, answered without details).
EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    RequestValidationError: _bad_body,
    Exception: _internal_error,
}
