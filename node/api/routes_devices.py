"""Device routes: the mesh's members, and enrolling a new device by its join request."""

from __future__ import annotations

from aiohttp import web

from crdt.documents import Repo
from crdt.identity import enrol_device, parse_join_request, revoke_device
from crdt.keys import DeviceIdError, device_id, normalize_device_id

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


REVOKE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "keep": {"type": "array", "items": {"type": "string", "minLength": 6, "maxLength": 64},
                 "maxItems": 100},
        "keep_all": {"type": "boolean"},
        "reason": {"type": "string", "maxLength": 200},
    },
}
PEERS_STATE_KEY: web.AppKey[object] = web.AppKey("maia_peer_states", object)


def list_devices(repo: Repo, last_seen: dict[bytes, float | None] | None = None) -> list[dict]:
    roster = repo.roster
    seen = last_seen or {}
    names = {c.body["subject"]: c.body["name"] for c in roster.certs.values()
             if c.kind == "endorse"}
    out = [
        {"device_id": device_id(k), "name": n, "status": "member",
         "this_device": k == repo.key.public_key, "last_seen": seen.get(k)}
        for k, n in roster.members.items()
    ]
    out += [
        {"device_id": device_id(k), "name": names.get(k, ""), "status": "revoked",
         "this_device": False, "last_seen": seen.get(k),
         "revoked_at": roster.revoked_info[k].body["at"] if k in roster.revoked_info else None}
        for k in roster.revoked
    ]
    return out


def key_of(repo: Repo, text: str) -> bytes:
    try:
        wanted = normalize_device_id(text)
    except DeviceIdError as exc:
        raise Problem(400, "Bad device id", str(exc)) from None
    # ever: a founder that a thief revoked first sees nobody as a member until it revokes the
    # thief, and must still be able to name it (SPEC-005 §5.4)
    for key in [*repo.roster.members, *repo.roster.revoked, *repo.roster.ever]:
        if device_id(key) == wanted:
            return key
    raise Problem(404, "No such device", f"{wanted} is not in this mesh")


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
    try:
        subject = parse_join_request(body["request"])
        invitation = enrol_device(request.app[REPO_KEY], subject, body["name"])
    except ValueError as exc:
        raise Problem(400, "Cannot enrol this device", str(exc)) from None
    return web.json_response(
        {"device_id": device_id(subject), "invitation": invitation}, status=201
    )


@device_routes.post("/v1/devices/{device_id}/revoke", body_schema=REVOKE_SCHEMA)
async def revoke(request: web.Request) -> web.Response:
    """Revoke a device: a signed tombstone; it is cut off now and can never come back."""
    repo = request.app[REPO_KEY]
    subject = key_of(repo, request.match_info["device_id"])
    body = request[BODY_KEY]
    try:
        cert = revoke_device(repo, subject, keep=body.get("keep"),
                             keep_all=body.get("keep_all", False), reason=body.get("reason", ""))
    except ValueError as exc:
        raise Problem(409, "Cannot revoke this device", str(exc)) from None
    return web.json_response({"device_id": device_id(subject), "revoked": True,
                              "cutoff": cert.cutoff_summary(), "kept": cert.body["kept"]})
