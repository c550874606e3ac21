"""HTTP routes of consolidation, pins and skills (SPEC-006 §12.4.3, §12.5.2, §12.6).

Running consolidation, reviewing its facts and pinning are the owner's acts: local principal
only. Skills are read by agents too (session tokens with ``memory:read``); writing a skill
needs ``memory:write`` and records the session like any memory write.
"""

from __future__ import annotations

from aiohttp import web

from ..api.middleware import BODY_KEY
from ..api.problem import Problem
from ..api.routes import RouteTable
from ..api.scopes import MEMORY_READ, require_scope
from ..memory import ENTRY_ID_RE, EntryNotFound
from ..memory.routes import MEMORY_KEY, _writer
from .fields import set_pin
from .job import Busy, Consolidator
from .skills import NAME_RE, SKILL_SCHEMA, add_skill, get_skill, list_skills

consolidation_routes = RouteTable("consolidation", errors={
    EntryNotFound: (404, "No such memory entry"),
})
CONSOLIDATOR_KEY: web.AppKey[Consolidator] = web.AppKey("maia_consolidator", Consolidator)
BOTH = ("local", "session")

RUN_SCHEMA = {"type": "object", "additionalProperties": False,
              "properties": {"dry_run": {"type": "boolean"}}}
REVIEW_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["action"],
    "properties": {"action": {"enum": ["accept", "edit", "reject"]},
                   "text": {"type": "string", "minLength": 1, "maxLength": 262144}},
}


def _entry_id(request: web.Request) -> str:
    entry_id = request.match_info["entry_id"]
    if not ENTRY_ID_RE.match(entry_id):
        raise EntryNotFound(entry_id[:64])
    return entry_id


def _consolidator(request: web.Request) -> Consolidator:
    job = request.app[CONSOLIDATOR_KEY]
    if not job.config.enabled:
        raise Problem(409, "Consolidation is off",
                      "set [consolidation] cortex = \"<name or cortex/kind>\" in config.toml "
                      "and restart the node (SPEC-006 §12.1)",
                      type="https://maia-node.dev/problems/consolidation-off")
    return job


@consolidation_routes.post("/v1/consolidation/run", body_schema=RUN_SCHEMA)
async def run_consolidation(request: web.Request) -> web.Response:
    """Consolidate new entries into facts now (or show what it would write, with dry_run)."""
    job = _consolidator(request)
    try:
        report = await job.run(dry_run=bool(request[BODY_KEY].get("dry_run")))
    except Busy as exc:
        raise Problem(409, "Consolidation is running", str(exc),
                      type="https://maia-node.dev/problems/consolidation-busy") from None
    return web.json_response(report.as_dict())


@consolidation_routes.get("/v1/consolidation/review")
async def review_list(request: web.Request) -> web.Response:
    """Facts consolidation proposed that nobody reviewed yet, each with its sources' texts."""
    facts, count = request.app[CONSOLIDATOR_KEY].review_page()
    return web.json_response({"facts": facts, "count": count})


@consolidation_routes.post("/v1/consolidation/review/{entry_id}", body_schema=REVIEW_SCHEMA)
async def review_one(request: web.Request) -> web.Response:
    """Accept, edit or reject a proposed fact (a rejection is not proposed again)."""
    entry_id = _entry_id(request)
    body = request[BODY_KEY]
    try:
        out = request.app[CONSOLIDATOR_KEY].review(entry_id, body["action"], body.get("text"))
    except ValueError as exc:
        raise Problem(400, "Not reviewable", str(exc)) from None
    return web.json_response(out)


async def _pin(request: web.Request, pinned: bool) -> web.Response:
    return web.json_response(set_pin(request.app[MEMORY_KEY], _entry_id(request), pinned))


@consolidation_routes.post("/v1/memory/{entry_id}/pin")
async def pin_entry(request: web.Request) -> web.Response:
    """Pin an entry: it ranks first in retrieval and context, on every device."""
    return await _pin(request, True)


@consolidation_routes.delete("/v1/memory/{entry_id}/pin")
async def unpin_entry(request: web.Request) -> web.Response:
    """Unpin an entry."""
    return await _pin(request, False)


def _skill_view(row: dict, full: bool) -> dict:
    out = {"id": row["id"], "name": row["name"], "when_to_use": row.get("when_to_use", ""),
           "tags": row.get("tags", []), "author": row.get("author"),
           "created_at": row.get("created_at")}
    if full:
        out["steps"] = list(row.get("steps") or [])
        out["supersedes"] = row.get("supersedes")
    return out


@consolidation_routes.get("/v1/skills", principal_kinds=BOTH)
async def skills_index(request: web.Request) -> web.Response:
    """Skills: how the owner does things, with when to use each."""
    require_scope(request, MEMORY_READ)
    rows = list_skills(request.app[MEMORY_KEY])
    return web.json_response({"skills": [_skill_view(r, False) for r in rows],
                              "count": len(rows)})


@consolidation_routes.get("/v1/skills/{name}", principal_kinds=BOTH)
async def skill_show(request: web.Request) -> web.Response:
    """One skill by name, with its steps."""
    require_scope(request, MEMORY_READ)
    name = request.match_info["name"]
    row = get_skill(request.app[MEMORY_KEY], name) if NAME_RE.match(name) else None
    if row is None:
        raise Problem(404, "No such skill", f"no skill is named {name[:64]!r}")
    return web.json_response(_skill_view(row, True))


@consolidation_routes.post("/v1/skills", body_schema=SKILL_SCHEMA, principal_kinds=BOTH)
async def skill_add(request: web.Request) -> web.Response:
    """Add a skill (name, when to use it, steps); a skill of the same name is superseded."""
    by = _writer(request)
    body = request[BODY_KEY]
    try:
        row = add_skill(request.app[MEMORY_KEY], body["name"], body["when_to_use"],
                        body["steps"], body.get("tags"), by=by)
    except ValueError as exc:
        raise Problem(400, "Not a skill", str(exc)) from None
    return web.json_response(_skill_view(row, True), status=201)
