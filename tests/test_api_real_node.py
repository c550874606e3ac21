"""SPEC-003 against a real node process: every route the node serves answers 401 without a
credential unless it is public, and bad requests get problem+json while the node keeps serving."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

from node.api.routes import RouteTable
from node.apidoc import node_route_tables
from tests.test_api_conformance import EXPECTED_PUBLIC as PUBLIC


def _node_route_tables() -> list[RouteTable]:
    """The tables a node installs: core and every feature's."""
    return node_route_tables()


def _call(node, method: str, path: str, body: bytes | None = None, token: str | None = None,
          ctype: str = "application/json") -> tuple[int, dict, str]:
    req = urllib.request.Request(node.base + path, data=body, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode(errors="replace")


def _sample(path: str) -> str:
    return re.sub(r"{[^}]+}", "x", path)


def test_every_served_route_needs_authentication_unless_public(mesh_factory):
    """SPEC-003 §3.2, §5.1: the walk covers every route of the node's tables, on the process."""
    (node,) = mesh_factory("solo")
    specs = [s for t in _node_route_tables() for s in t]
    assert len(specs) >= 15
    for spec in specs:
        if (spec.method, spec.path) in PUBLIC:
            continue
        status, headers, _body = _call(node, spec.method, _sample(spec.path),
                                      b"{}" if spec.method in ("POST", "PATCH", "PUT") else None)
        assert status == 401, (spec.method, spec.path, status)
        assert headers.get("Content-Type", "").startswith("application/problem+json")
        assert "Bearer" in headers.get("WWW-Authenticate", "")
    assert {(s.method, s.path) for s in specs if s.public} == PUBLIC


def test_bad_requests_get_problem_json_and_the_node_keeps_serving(mesh_factory):
    """SPEC-003 §7.1, §8.1, §9.1: oversized body 413, malformed JSON 400, unknown route 404."""
    (node,) = mesh_factory("solo")
    token = node.token
    cases = [
        ("POST", "/v1/memory", b'{"text": "' + b"x" * (2 << 20) + b'"}', 413),
        ("POST", "/v1/memory", b'{"text": "unterminated', 400),
        ("POST", "/v1/memory", b'{"text": 5}', 400),
        ("GET", "/v1/no-such-route", None, 404),
        ("DELETE", "/v1/profile", None, 405),
    ]
    for method, path, body, expected in cases:
        status, headers, text = _call(node, method, path, body, token)
        assert status == expected, (method, path, status, text[:200])
        assert headers.get("Content-Type", "").startswith("application/problem+json")
        problem = json.loads(text)
        assert problem["status"] == expected and problem["title"]
        assert _call(node, "GET", "/health")[0] == 200
    assert node.request("GET", "/v1/status")["device_id"]
