"""Errors as OpenAI answers them, and no stack trace on the wire."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from pydantic import ValidationError
from servers import Wrapped

from cpt_embed.serve.app import create_app
from cpt_embed.serve.errors import ApiError, invalid_body
from cpt_embed.serve.schemas import SearchRequest


def test_an_api_error_answers_openais_error_object():
    response = ApiError(404, "no such model", param="model", code="model_not_found").response()
    assert response.status_code == 404 and "retry-after" not in response.headers
    assert json.loads(response.body) == {
        "error": {
            "message": "no such model",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
    busy = ApiError(503, "busy", kind="server_error").response()
    assert busy.headers["retry-after"] == "1"


def test_a_bad_body_names_its_first_wrong_field():
    try:
        SearchRequest.model_validate({"query": "x", "k": 0, "lang": "y" * 100})
    except ValidationError as err:
        error = invalid_body(err.errors())
    assert error.status == 400 and error.param == "k"
    assert error.message == "invalid request body: Input should be greater than or equal to 1 at k"
    fastapi_style = invalid_body([{"loc": ("body", "query"), "msg": "Field required"}], skip=1)
    assert (fastapi_style.message, fastapi_style.param) == (
        "invalid request body: Field required at query",
        "query",
    )
    assert invalid_body([]).message == "invalid request body: not valid"


def test_internal_errors_answer_json_without_a_stack_trace(encoder, caplog):
    def broken(texts, side="query"):
        raise RuntimeError("secret detail from deep inside")

    app = create_app(Wrapped(encoder, broken), "default")
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/v1/embeddings", json={"model": "default", "input": "x"})
        search = client.post("/v1/search", json={"query": "x"})  # no index: a 404, no 500
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "secret" not in response.text and "Traceback" not in response.text
    assert "POST /v1/embeddings failed" in caplog.text  # the details go to the log
    assert search.status_code == 404
