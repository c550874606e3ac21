"""Pairing routes: the owner opens and confirms a window; the new device's socket arrives."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ...api.middleware import BODY_KEY
from ...api.problem import Problem
from ...api.routes import RouteTable
from .member import PairingError

if TYPE_CHECKING:
    from .member import Pairing

pairing_routes = RouteTable("pairing", errors={PairingError: (409, "Nothing to confirm")})
# The peer listener's table (SPEC-003 §2.1): the new device's socket arrives there.
pairing_listener_routes = RouteTable("peer-listener")
PAIRING_KEY: web.AppKey[Pairing] = web.AppKey("maia_pairing", object)  # type: ignore[arg-type]

PAIR_REASON = (
    "pairing channel for a device that has no roster entry yet: it authenticates by the "
    "device-key handshake, a SPAKE2 proof of a one-time expiring code (the member proves "
    "first), and both users' comparison of a short authentication string (SPEC-005 §12)"
)
OPEN_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"ttl": {"type": "number", "minimum": 1, "maximum": 1800}},
}
CONFIRM_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["accept"],
    "properties": {"accept": {"type": "boolean"}},
}


def _pairing(request: web.Request) -> Pairing:
    return request.app[PAIRING_KEY]


@pairing_routes.get("/v1/pair", public=PAIR_REASON, streaming=True)
@pairing_listener_routes.get("/v1/pair", public=PAIR_REASON, streaming=True)
async def pair_socket(request: web.Request) -> web.StreamResponse:
    """WebSocket for a new device proving it knows the pairing code (SPEC-005 §12.5)."""
    return await _pairing(request).handle_socket(request)


@pairing_routes.post("/v1/pairing", body_schema=OPEN_SCHEMA)
async def open_window(request: web.Request) -> web.Response:
    """Open a pairing window: a one-time code that expires (default 5 minutes)."""
    ttl = request[BODY_KEY].get("ttl", 300)
    return web.json_response(await _pairing(request).open(ttl), status=201)


@pairing_routes.get("/v1/pairing")
async def window_state(request: web.Request) -> web.Response:
    """The pairing window: open, waiting for confirmation (with the SAS), approved by the
    owner and waiting for the new device's user, or decided (``refused_by`` says who)."""
    window = _pairing(request).window
    if window is None:
        raise Problem(404, "No pairing window", "open one with POST /v1/pairing")
    return web.json_response(window.as_dict())


@pairing_routes.post("/v1/pairing/confirm", body_schema=CONFIRM_SCHEMA)
async def confirm(request: web.Request) -> web.Response:
    """The owner's decision after comparing the short authentication strings. The device is
    enrolled only when its own user confirmed too (SPEC-005 §12.7)."""
    return web.json_response(await _pairing(request).decide(request[BODY_KEY]["accept"]))


@pairing_routes.delete("/v1/pairing")
async def cancel(request: web.Request) -> web.Response:
    """Close the pairing window now."""
    await _pairing(request).cancel()
    return web.json_response({"closed": True})
