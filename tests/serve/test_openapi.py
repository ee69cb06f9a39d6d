"""/openapi.json documents every status each route answers (none it never answers), and
every error, routing's 404 and 405 included, is an OpenAI error object."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from cpt_embed.serve.app import create_app

STATUSES = {
    ("/v1/embeddings", "post"): {"200", "400", "401", "404", "413", "500", "503"},
    ("/v1/search", "post"): {"200", "400", "401", "404", "413", "500", "503"},
    ("/health", "get"): {"200", "400", "413", "500", "503"},
    ("/metrics", "get"): {"200", "400", "413", "500", "503"},
    ("/", "get"): {"200", "400", "413", "500", "503"},
}


def test_every_status_a_route_answers_is_documented(client, encoder):
    schema = client.get("/openapi.json").json()
    documented = {
        (path, method): set(operation["responses"])
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }
    assert documented == STATUSES
    for (path, method), statuses in STATUSES.items():
        responses = schema["paths"][path][method]["responses"]
        for status in statuses - {"200"}:
            assert "ErrorResponse" in json.dumps(responses[status]), (path, status)
        assert "Retry-After" in responses["503"]["headers"]
    embeddings = schema["paths"]["/v1/embeddings"]["post"]["requestBody"]
    body = embeddings["content"]["application/json"]["schema"]
    dimensions = body["properties"]["dimensions"]
    assert (dimensions["type"], dimensions["minimum"], dimensions["maximum"]) == (
        "integer",
        1,
        encoder.dim,
    )
    # OpenAPI 3.0.3: its draft-4 schemas read 2.0 as no integer, as the server does
    assert schema["openapi"] == "3.0.3" and dimensions["nullable"] is True
    assert '"type": "null"' not in json.dumps(schema) and '"const"' not in json.dumps(schema)
    assert "security" not in schema["paths"]["/v1/embeddings"]["post"]
    # a nullable enum must list null, or 3.0 validators refuse the null the server takes
    search = schema["paths"]["/v1/search"]["post"]["requestBody"]
    mode = search["content"]["application/json"]["schema"]["properties"]["mode"]
    assert mode["nullable"] is True and None in mode["enum"]


def test_a_server_with_a_key_documents_it_on_v1_routes(encoder):
    with TestClient(create_app(encoder, "default", api_key="k")) as client:
        schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert schema["paths"]["/v1/search"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in schema["paths"]["/health"]["get"]


def _error(response) -> dict:
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(
    "method, path, content, status, code",
    [
        ("GET", "/nowhere", None, 404, "not_found"),
        ("GET", "/v1/models", None, 404, "not_found"),
        ("DELETE", "/v1/embeddings", None, 405, "method_not_allowed"),
        ("GET", "/v1/search", None, 405, "method_not_allowed"),
        ("POST", "/health", b"{}", 405, "method_not_allowed"),
        ("POST", "/v1/search", b'{"query": ', 400, None),
        ("POST", "/v1/search", b'{"query": "\xff"}', 400, None),  # not UTF-8
        ("POST", "/v1/search", b'[{"query": "x"}]', 400, None),
    ],
)
def test_every_error_is_an_openai_error_object(client, method, path, content, status, code):
    headers = {"Content-Type": "application/json"} if content is not None else {}
    response = client.request(method, path, content=content, headers=headers)
    assert response.status_code == status, response.text
    assert _error(response)["code"] == code


def test_a_wrong_method_names_the_allowed_ones(client):
    response = client.delete("/v1/embeddings")
    assert response.headers["allow"] == "POST"
    assert _error(response)["message"] == "DELETE is not allowed on /v1/embeddings; use POST"
