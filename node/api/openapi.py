"""An OpenAPI 3.1 document generated from the route tables (SPEC-003 §3.8).

The document is built from ``route_specs(app)``, the same metadata the middlewares enforce and
the conformance walk checks, so it cannot drift from what the node serves: every route's
method, path (pattern parameters keep their pattern), query and body schemas (JSON Schema
2020-12, which OpenAPI 3.1 speaks natively), its security (bearer unless public) and the
problem+json error answer.

``python -m node.api.openapi [PATH]`` writes the whole node's document (default
``docs/openapi.json``, see ``node/apidoc.py``); ``tests/test_api_openapi.py`` fails when that
file is out of date.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from .problem import PROBLEM_CONTENT_TYPE
from .routes import RouteSpec, RouteTable, route_specs

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"

_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details (SPEC-003 §9).",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}


# Part of the core table (same name, so the same tag): every listener with the core routes
# serves its own document.
openapi_routes = RouteTable("core")


@openapi_routes.get("/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of this listener's routes (SPEC-003 §3.8)."""
    return web.json_response(openapi_document(request.app))


def openapi_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route installed on ``app``."""
    return document_for(route_specs(app).values())


def document_for(specs: Iterable[RouteSpec]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for spec in sorted(specs, key=lambda s: (s.path, s.method)):
        template, params = _path_template(spec.path)
        paths.setdefault(template, {})[spec.method.lower()] = _operation(spec, template, params)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "maia-node local API",
            "version": API_VERSION,
            "description": (
                "Generated from the node's route tables (SPEC-003 §3.8). Private routes take "
                "`Authorization: Bearer <token>` (the content of <data>/runtime/api.token) or "
                "the web page's login cookie; every error is application/problem+json."
            ),
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Problem": _PROBLEM_SCHEMA},
            "responses": {
                "Problem": {
                    "description": "An error, as RFC 9457 problem details.",
                    "content": {
                        PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}
                    },
                }
            },
        },
    }


def _operation(spec: RouteSpec, template: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": _operation_id(spec.method, template),
        "summary": spec.summary or f"{spec.method} {template}",
        "tags": [spec.table],
        "security": [] if spec.public else [{"bearer": []}],
        "responses": {
            "2XX": {"description": "Success."},
            "default": {"$ref": "#/components/responses/Problem"},
        },
    }
    if spec.public_reason:
        operation["description"] = f"Public: {spec.public_reason}"
    parameters = list(params)
    query = spec.query_schema or {}
    required = set(query.get("required", ()))
    for name, schema in sorted(query.get("properties", {}).items()):
        parameters.append({"name": name, "in": "query", "required": name in required,
                           "schema": _clean(schema)})
    if parameters:
        operation["parameters"] = parameters
    if spec.body_schema is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _clean(spec.body_schema)}},
        }
    if spec.streaming:
        operation["x-maia-streaming"] = True
    if spec.principal_kinds != frozenset({"local"}):
        operation["x-maia-principal-kinds"] = sorted(spec.principal_kinds)
    return operation


def _clean(schema: Any) -> Any:
    """A copy of ``schema`` without its `$schema` member (the document's dialect applies)."""
    if isinstance(schema, dict):
        return {k: _clean(v) for k, v in schema.items() if k != "$schema"}
    if isinstance(schema, list):
        return [_clean(v) for v in schema]
    return schema


def _operation_id(method: str, template: str) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", template).strip("_") or "root"
    return f"{method.lower()}_{words}"


def _path_template(path: str) -> tuple[str, list[dict[str, Any]]]:
    """aiohttp's `/x/{name:regex}` as OpenAPI's `/x/{name}` plus path parameter objects.

    A regex may hold braces of its own (`[a-z]{26}`), so braces are matched by depth.
    """
    out: list[str] = []
    params: list[dict[str, Any]] = []
    i = 0
    while i < len(path):
        if path[i] != "{":
            out.append(path[i])
            i += 1
            continue
        depth, j = 1, i + 1
        while depth:
            depth += {"{": 1, "}": -1}.get(path[j], 0)
            j += 1
        name, _, pattern = path[i + 1 : j - 1].partition(":")
        schema: dict[str, Any] = {"type": "string", "pattern": f"^(?:{pattern or '[^/]+'})$"}
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
        out.append("{" + name + "}")
        i = j
    return "".join(out), params


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":  # the script lives above node/api: it reads every feature's routes
    from node.apidoc import main

    raise SystemExit(main())
