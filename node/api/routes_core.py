"""Core routes: liveness, node status and the owner's profile."""

from __future__ import annotations

from aiohttp import web

from .middleware import BODY_KEY
from .routes import RouteTable
from .services import SERVICES_KEY

core_routes = RouteTable("core")

# The profile is the owner's own data; the bounds keep one field from
# swallowing the identity document and the patterns keep timezone/locale
# usable as identifiers.  Unknown fields are refused rather than stored
# (OWASP API3, object-property-level authorisation).
PROFILE_PATCH_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "minProperties": 1,
    "additionalProperties": False,
    "properties": {
        "display_name": {"type": "string", "minLength": 1, "maxLength": 100},
        "email": {"type": "string", "maxLength": 254, "format": "email"},
        "timezone": {"type": "string", "maxLength": 64, "pattern": r"^[A-Za-z0-9_+\-/]*$"},
        "locale": {
            "type": "string",
            "maxLength": 35,
            "pattern": r"^([A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*)?$",
        },
        "bio": {"type": "string", "maxLength": 2000},
    },
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
    from .scopes import MEMORY_READ, require_scope

    require_scope(request, MEMORY_READ)
    return web.json_response(await request.app[SERVICES_KEY].get_profile())


@core_routes.patch("/v1/profile", body_schema=PROFILE_PATCH_SCHEMA)
async def update_profile(request: web.Request) -> web.Response:
    """Change some profile fields; answers with the whole new profile."""
    return web.json_response(await request.app[SERVICES_KEY].update_profile(request[BODY_KEY]))


@core_routes.get("/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of this listener's routes (SPEC-003 §3.8)."""
    from .openapi import openapi_document  # imported late: `python -m node.api.openapi`

    return web.json_response(openapi_document(request.app))
