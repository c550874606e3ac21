"""The two listeners of a real node (SPEC-003 §2): the LAN side serves only the peer channel."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest


def _get(port: int, path: str, token: str | None = None) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize("path", ["/v1/status", "/v1/profile", "/v1/memory", "/v1/peers",
                                  "/v1/devices"])
def test_peer_listener_serves_only_peer_and_health(mesh_factory, path):
    """SPEC-003 §2.1: on the peer listener, every local-API route is absent even with the
    token; on the local listener it is there."""
    (node,) = mesh_factory("solo")
    assert _get(node.peer_port, "/health") == 200
    assert _get(node.peer_port, path, node.token) == 404
    assert _get(node.port, path, node.token) == 200
    status = node.request("GET", "/v1/status")
    assert status["peer_listener"].endswith(f":{node.peer_port}")
