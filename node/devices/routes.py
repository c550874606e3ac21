"""Device routes: the mesh's members, enrolling a new device by its join request, revoking."""

from __future__ import annotations

from aiohttp import web

from crdt import DeviceIdError, Repo

from ..api.middleware import BODY_KEY
from ..api.routes import RouteTable
from ..memory.routes import MEMORY_KEY
from . import members
from .members import CannotEnrol, CannotRevoke, NoSuchDevice, list_devices
from .storage import CannotDrop, drop_unseen, storage_by_device


class NotConfirmed(ValueError):
    """The body's ``confirm`` does not name the device of the path (SPEC-003 §6.5)."""


def _confirmed(request: web.Request) -> str:
    device = request.match_info["device_id"]
    if request[BODY_KEY].get("confirm") != device:
        raise NotConfirmed(f"'confirm' must repeat the device id of the path ({device[:64]}): "
                           "this cannot be undone")
    return device


device_routes = RouteTable("devices", errors={
    DeviceIdError: (400, "Bad device id"),
    NoSuchDevice: (404, "No such device"),
    CannotEnrol: (400, "Cannot enrol this device"),
    CannotRevoke: (409, "Cannot revoke this device"),
    CannotDrop: (409, "Cannot drop these documents"),
    NotConfirmed: (400, "Not confirmed"),
})
REPO_KEY: web.AppKey[Repo] = web.AppKey("maia_repo", Repo)
PEERS_STATE_KEY: web.AppKey[object] = web.AppKey("maia_peer_states", object)

ENROL_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["request", "name"],
    "properties": {
        "request": {"type": "string", "minLength": 10, "maxLength": 200},
        "name": {"type": "string", "minLength": 1, "maxLength": 64},
    },
}
#: SPEC-003 §6.5: a flow that cannot be undone names its object twice, in the path and here.
CONFIRM = {"type": "string", "minLength": 1, "maxLength": 64,
           "description": "the device id of the path, again: the flow cannot be undone"}
REVOKE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["confirm"],
    "properties": {
        "confirm": CONFIRM,
        "keep": {"type": "array", "items": {"type": "string", "minLength": 6, "maxLength": 64},
                 "maxItems": 100},
        "keep_all": {"type": "boolean"},
        "reason": {"type": "string", "maxLength": 200},
    },
}
DROP_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["confirm"],
    "properties": {"confirm": CONFIRM},
}


@device_routes.get("/v1/devices")
async def devices(request: web.Request) -> web.Response:
    """Members of the mesh and revoked devices."""
    peers = request.app.get(PEERS_STATE_KEY)
    seen = {k: p.last_seen for k, p in peers.peers.items()} if peers is not None else {}
    return web.json_response({"devices": list_devices(request.app[REPO_KEY], seen)})


@device_routes.post("/v1/devices", body_schema=ENROL_SCHEMA)
async def enrol(request: web.Request) -> web.Response:
    """Admit a device by its join request; answers with the invitation it needs."""
    body = request[BODY_KEY]
    return web.json_response(members.enrol(request.app[REPO_KEY], body["request"], body["name"]),
                             status=201)


@device_routes.post("/v1/devices/{device_id}/revoke", body_schema=REVOKE_SCHEMA)
async def revoke(request: web.Request) -> web.Response:
    """Revoke a device: a signed tombstone; it is cut off now and can never come back."""
    body = request[BODY_KEY]
    return web.json_response(members.revoke(
        request.app[REPO_KEY], _confirmed(request), keep=body.get("keep"),
        keep_all=body.get("keep_all", False), reason=body.get("reason", "")))


@device_routes.get("/v1/devices/storage")
async def storage(request: web.Request) -> web.Response:
    """Bytes each device made this node store, and its documents that nobody sees."""
    return web.json_response({"devices": storage_by_device(request.app[REPO_KEY],
                                                           request.app[MEMORY_KEY])})


@device_routes.post("/v1/devices/{device_id}/drop-unseen", body_schema=DROP_SCHEMA)
async def drop(request: web.Request) -> web.Response:
    """Drop, on this node only, the Memory documents that only this device wrote and that list
    no entry (SPEC-005 §6.7)."""
    return web.json_response(drop_unseen(request.app[REPO_KEY], request.app[MEMORY_KEY],
                                         _confirmed(request)))
