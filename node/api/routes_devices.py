"""Device routes: the mesh's members, and enrolling a new device by its join request."""

from __future__ import annotations

from aiohttp import web

from crdt.documents import Repo
from crdt.identity import enrol_device, parse_join_request
from crdt.keys import device_id

from .middleware import BODY_KEY
from .problem import Problem
from .routes import RouteTable

device_routes = RouteTable("devices")
REPO_KEY: web.AppKey[Repo] = web.AppKey("maia_repo", Repo)

ENROL_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["request", "name"],
    "properties": {
        "request": {"type": "string", "minLength": 10, "maxLength": 200},
        "name": {"type": "string", "minLength": 1, "maxLength": 64},
    },
}


def list_devices(repo: Repo) -> list[dict]:
    roster = repo.roster
    out = [
        {"device_id": device_id(k), "name": n, "status": "member", "this_device":
         k == repo.key.public_key}
        for k, n in roster.members.items()
    ]
    out += [
        {"device_id": device_id(k), "name": "", "status": "revoked", "this_device": False}
        for k in roster.revoked
    ]
    return out


@device_routes.get("/v1/devices")
async def devices(request: web.Request) -> web.Response:
    """Members of the mesh and revoked devices."""
    return web.json_response({"devices": list_devices(request.app[REPO_KEY])})


@device_routes.post("/v1/devices", body_schema=ENROL_SCHEMA)
async def enrol(request: web.Request) -> web.Response:
    """Admit a device by its join request; answers with the invitation it needs."""
    body = request[BODY_KEY]
    try:
        subject = parse_join_request(body["request"])
        invitation = enrol_device(request.app[REPO_KEY], subject, body["name"])
    except ValueError as exc:
        raise Problem(400, "Cannot enrol this device", str(exc)) from None
    return web.json_response(
        {"device_id": device_id(subject), "invitation": invitation}, status=201
    )
