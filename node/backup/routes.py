"""Backup routes: the node's backup status, and recording a verification made by the CLI
(SPEC-002 §7.2, §7.4). Taking, verifying and restoring backups happen in the CLI or the
scheduled worker, never in a request handler."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..api.middleware import BODY_KEY
from ..api.problem import Problem
from ..api.routes import RouteTable

BACKUP_KEY: web.AppKey[Any] = web.AppKey("maia_backup", object)
backup_routes = RouteTable("backup", requires=[BACKUP_KEY])

VERIFIED_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["manifest", "verified_at"],
    "properties": {
        "manifest": {"type": "string", "pattern": "^[0-9a-f]{64}$", "maxLength": 64},
        "verified_at": {
            "type": "string",
            "maxLength": 40,
            "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|\+00:00)$",
        },
    },
}


@backup_routes.get("/v1/backup")
async def backup_status(request: web.Request) -> web.Response:
    """Backup schedule, last run, last verified backup and any warning."""
    return web.json_response(request.app[BACKUP_KEY].status())


@backup_routes.post("/v1/backup/verified", body_schema=VERIFIED_SCHEMA)
async def backup_verified(request: web.Request) -> web.Response:
    """Record that ``maia backup verify`` verified a backup (the record itself is in the
    repository; this only updates the node's status)."""
    body = request[BODY_KEY]
    try:
        status = request.app[BACKUP_KEY].record_verified(body["manifest"], body["verified_at"])
    except ValueError as exc:  # a time ahead of this clock (SPEC-002 §7.4)
        raise Problem(400, "Invalid request", str(exc)) from None
    return web.json_response(status)
