"""Core routes: liveness, node status and the owner's profile."""

from __future__ import annotations

from aiohttp import web

from crdt import PROFILE_FIELDS, ProfileError

from .middleware import BODY_KEY
from .routes import RouteTable
from .scopes import MEMORY_READ, require_scope
from .services import SERVICES_KEY

core_routes = RouteTable("core", errors={ProfileError: (400, "Invalid profile")})

# Shapes only: the profile's rules (bounds, patterns) live in crdt.identity.PROFILE_RULES, the
# same for the API and the offline CLI; null clears a field. Unknown fields are refused rather
# than stored (OWASP API3, object-property-level authorisation).
PROFILE_PATCH_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "minProperties": 1,
    "additionalProperties": False,
    "properties": {name: {"type": ["string", "null"]} for name in PROFILE_FIELDS},
}


@core_routes.get("/health", public="liveness probe; answers a constant and reveals nothing")
async def health(request: web.Request) -> web.Response:
    """Liveness: the HTTP stack is up and answering."""
    return web.json_response({"status": "ok"})


@core_routes.get("/v1/status")
async def status(request: web.Request) -> web.Response:
    """The node's state summary."""
    return web.json_response(await request.app[SERVICES_KEY].status())


@core_routes.get("/v1/profile", principal_kinds=("local", "session"))
async def get_profile(request: web.Request) -> web.Response:
    """The owner's profile (a session reads it with memory:read; only the owner changes it)."""
    require_scope(request, MEMORY_READ)
    return web.json_response(await request.app[SERVICES_KEY].get_profile())


@core_routes.patch("/v1/profile", body_schema=PROFILE_PATCH_SCHEMA)
async def update_profile(request: web.Request) -> web.Response:
    """Change some profile fields; answers with the whole new profile."""
    return web.json_response(await request.app[SERVICES_KEY].update_profile(request[BODY_KEY]))


# The peer listener's own table (SPEC-003 §2.1): liveness only; features add their sockets.
listener_routes = RouteTable("peer-listener")
listener_routes.get("/health", public="liveness probe; answers a constant")(health)
