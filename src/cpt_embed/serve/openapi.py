"""/openapi.json as OpenAPI 3.0.3, whose schemas read JSON numbers as JSON Schema draft 4
does: an "integer" is a number written without a fraction, so `2.0` is not one. The server
validates so (a token id or `dimensions` of 2.0 is refused), and in OpenAPI 3.1 (JSON
Schema 2020-12) `2.0` would be an integer the schema admits. FastAPI writes 3.1; the few
3.1 forms its schemas use are written the 3.0 way here (`nullable`, one-value `enum`).
A server with an API key also documents it on the /v1/ routes."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

OPENAPI_VERSION = "3.0.3"


def _as_3_0(node: Any) -> Any:
    """`node` (a part of a 3.1 document) with null types as `nullable` (and null in the
    enum of a nullable enum) and `const` as a one-value `enum`."""
    if isinstance(node, list):
        return [_as_3_0(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _as_3_0(value) for key, value in node.items()}
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for key in ("anyOf", "oneOf"):
        options = node.get(key)
        if isinstance(options, list) and {"type": "null"} in options:
            rest = [option for option in options if option != {"type": "null"}]
            del node[key]
            node |= rest[0] if len(rest) == 1 else {key: rest}
            node["nullable"] = True
            if "enum" in node:  # an enum admits only what it lists, null included (3.0.3)
                node["enum"] = [*node["enum"], None]
    return node


def install_openapi(app: FastAPI, *, api_key: bool) -> None:
    """Make `app` answer /openapi.json as OpenAPI 3.0.3 (and with a bearer security scheme
    on /v1/ routes where `api_key`)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = _as_3_0(generate())
            schema["openapi"] = OPENAPI_VERSION
            if api_key:
                schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
                schemes["bearer"] = {"type": "http", "scheme": "bearer"}
                for path, operations in schema["paths"].items():
                    if path.startswith("/v1/"):
                        for operation in operations.values():
                            operation["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
