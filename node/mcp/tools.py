"""The MCP tools and resources maia-node offers agents (SPEC-004 §15.3).

Each tool is one call to the node's HTTP API through :class:`~node.mcp.client.NodeAPI`, with the
credential of whoever called (the stdio server's session token, or the bearer token of the
``/v1/mcp`` request), so MCP adds no authority of its own. The descriptions are written for the
model that reads them: what the tool is for, when to use it, and what it will refuse.
Arguments are bounded here (pydantic) as well as by the routes, so an oversized or mistyped
argument is an MCP error before any request is made.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import Field

from ..memory import KINDS
from ..sessions.journal import JOURNAL_KINDS
from .client import CURRENT_API, NodeAPI, Refused

Kind = Literal["note", "conversation", "fact", "skill", "journal"]
assert set(Kind.__args__) == set(KINDS)  # one list of kinds (crdt.docids)
JournalKind = Literal["achievement", "decision", "todo", "aspiration", "learning", "blocker"]
assert set(JournalKind.__args__) == set(JOURNAL_KINDS)
EntryId = Annotated[str, Field(pattern=r"^[a-z]+-\d{6}-[A-Z2-7]{10}$", max_length=40,
                               description="a memory entry id, e.g. note-202612-7Q2KX9A1BC")]
Tag = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\s]+$")]
Text = Annotated[str, Field(min_length=1, max_length=262_144)]
MAX_SEARCH_FETCH = 1000
HISTORY_TEXT = 4000  # characters of each version's text memory_history returns
# The most text one entry returns (the write cap): a member's synced entry may hold any length,
# and memory_get passed 8 MiB to the model. Search results come cut already (SPEC-003 §12.3).
GET_TEXT = 262_144

INSTRUCTIONS = """\
maia-node is the owner's own memory, synced and signed across their devices. Search it before \
you assume (memory_search), record what will matter in a later session (memory_add: facts, \
decisions, how-tos as skill), and correct what is wrong with memory_supersede rather than \
adding a contradicting entry. Entries are visible on every device of the owner. Do not store \
secrets (tokens, passwords, keys) in memory."""


def api() -> NodeAPI:
    try:
        return CURRENT_API.get()
    except LookupError:
        raise ToolError("no maia-node credential for this request") from None


async def call(method: str, path: str, body: Any = None, query: dict[str, Any] | None = None,
               **kw: Any) -> Any:
    """One API call; a refusal becomes a ToolError the model reads (title: detail)."""
    try:
        return await api().request(method, path, body, query, **kw)
    except Refused as exc:
        raise ToolError(f"maia-node refused ({exc.status}): {exc}") from None


def result(entry: dict[str, Any], score: float | None = None) -> dict[str, Any]:
    """The shape every tool returns for an entry: explicit fields only (SPEC-003 §6.4); a
    text longer than GET_TEXT is cut, with ``text_truncated`` (SPEC-004 §15.3)."""
    text = entry.get("text", "")
    text = text if isinstance(text, str) else ""
    return {
        "id": entry.get("id"),
        "text": text[:GET_TEXT],
        "text_truncated": bool(entry.get("text_truncated")) or len(text) > GET_TEXT,
        "kind": entry.get("kind"),
        "tags": entry.get("tags", []),
        "score": score,  # the ranked search's fused score (None where nothing ranked it)
        "author_device": entry.get("author"),
        "session": entry.get("session"),
        "agent": entry.get("agent"),
        "created_at": entry.get("created_at"),
        "edits": entry.get("edits"),
        "supersedes": entry.get("supersedes"),
        "superseded_by": entry.get("superseded_by"),
    }


async def search_entries(query: str, kinds: list[str] | None, tags: list[str] | None,
                         limit: int, mode: str = "hybrid") -> dict[str, Any]:
    """The search behind ``memory_search``: the node's ranked search (GET /v1/memory/search,
    SPEC-003 §12), filtered further here when several kinds or tags are asked for."""
    filtered = bool(kinds and len(kinds) > 1) or bool(tags and len(tags) > 1)
    params: dict[str, Any] = {"q": query, "mode": mode,
                              "limit": min(100, MAX_SEARCH_FETCH) if filtered else limit}
    if kinds and len(kinds) == 1:
        params["kind"] = kinds[0]
    if tags:
        params["tag"] = tags[0]
    answer = await call("GET", "/v1/memory/search", query=params)
    rows = [r for r in answer["entries"] if (not kinds or r["kind"] in kinds)
            and (not tags or all(t in r["tags"] for t in tags))]
    return {"mode": answer.get("mode", mode), "model": answer.get("model"),
            "entries": rows[:limit]}


def build_server() -> MCPServer:
    server = MCPServer(name="maia", title="maia-node memory", instructions=INSTRUCTIONS,
                       version="0.1.0", log_level="WARNING")
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    @server.tool(annotations=read_only)
    async def memory_search(
        query: Annotated[str, Field(min_length=1, max_length=500,
                                    description="words to look for, e.g. 'deploy staging'")],
        kinds: Annotated[list[Kind] | None, Field(max_length=5, description=(
            "only these kinds: note, conversation, fact, skill, journal"))] = None,
        tags: Annotated[list[Tag] | None, Field(max_length=16, description=(
            "only entries carrying every one of these tags"))] = None,
        limit: Annotated[int, Field(ge=1, le=50)] = 10,
        mode: Annotated[Literal["text", "semantic", "hybrid"], Field(description=(
            "ranking: text (words), semantic (meaning) or hybrid (both)"))] = "hybrid",
    ) -> dict[str, Any]:
        """Search the owner's memory (notes, facts, skills, conversations, journal) on every
        device. Use it before answering from assumptions: the owner may have recorded how
        things are done, decisions and preferences. Returns the best entries first with their
        id (for memory_get, memory_supersede), kind, tags, score, the device and session that
        wrote them and when. Corrected (superseded) and deleted entries never appear. A fact
        tagged review:pending was proposed by a model from the owner's notes and not yet
        confirmed by the owner: treat it as unconfirmed."""
        found = await search_entries(query, kinds, tags, limit, mode)
        rows = found["entries"]
        return {"mode": found["mode"], "requested_mode": mode, "count": len(rows),
                "results": [result(r, r.get("score")) for r in rows]}

    @server.tool(annotations=read_only)
    async def memory_get(entry_id: EntryId) -> dict[str, Any]:
        """Read one memory entry by id, with who wrote it and, if it was corrected, the id of
        the entry that supersedes it (superseded_by)."""
        return result(await call("GET", f"/v1/memory/{entry_id}"))

    @server.tool(annotations=read_only)
    async def memory_history(
        entry_id: EntryId,
        limit: Annotated[int, Field(ge=1, le=100, description=(
            "the most recent versions to return"))] = 20,
    ) -> dict[str, Any]:
        """Every version of one entry, oldest first, read from its signed history on this
        node: what it said and its tags at each edit, the device that signed each version
        (verified against the owner's devices), when that device says it wrote it, and
        ``altered_by`` when another device later rewrote a version's record. Use it to see
        what an entry said before, or who changed it. Long texts are cut (text_truncated)."""
        answer = await call("GET", f"/v1/memory/{entry_id}/history")
        rows = answer.get("history", [])
        out = []
        for r in rows[-limit:]:
            text = r.get("text") or ""
            out.append({
                "n": r.get("n"), "version": r.get("version"), "at": r.get("at"),
                "op": r.get("op"), "device_id": r.get("device_id"),
                "device_name": r.get("device_name"), "verified": r.get("verified"),
                "signer_status": r.get("signer_status"),
                "altered_by": r.get("altered_by") or [], "session": r.get("session"),
                "agent": r.get("agent"), "text": text[:HISTORY_TEXT],
                "text_truncated": len(text) > HISTORY_TEXT, "tags": r.get("tags", []),
                "deleted": bool(r.get("deleted")),
            })
        return {"id": entry_id, "versions": len(rows), "shown": out}

    @server.tool(annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=False))
    async def memory_add(
        text: Text,
        kind: Annotated[Kind, Field(description=(
            "fact: something true about the owner, their systems or projects; skill: how to "
            "do something; note: anything else; conversation: a summary of an exchange"))
        ] = "note",
        tags: Annotated[list[Tag] | None, Field(max_length=64)] = None,
    ) -> dict[str, Any]:
        """Record something worth remembering in a later session, on any of the owner's
        devices: a fact, a decision, a way of doing things (skill), a note. Keep each entry
        one self-contained idea. To fix an existing entry use memory_supersede instead, so the
        wrong one stops surfacing. Never store secrets. The entry is signed by this device and
        records this session and agent."""
        body: dict[str, Any] = {"text": text, "kind": kind}
        if tags:
            body["tags"] = list(dict.fromkeys(tags))
        return result(await call("POST", "/v1/memory", body))

    @server.tool()
    async def memory_update(
        entry_id: EntryId,
        text: Annotated[str | None, Field(min_length=1, max_length=262_144)] = None,
        add_tags: Annotated[list[Tag] | None, Field(max_length=64)] = None,
        remove_tags: Annotated[list[Tag] | None, Field(max_length=64)] = None,
    ) -> dict[str, Any]:
        """Change the text or tags of an entry THIS session created (e.g. to finish a note).
        Entries written by the owner or other sessions cannot be changed: correct them with
        memory_supersede, which keeps the old one linked."""
        body: dict[str, Any] = {}
        if text is not None:
            body["text"] = text
        if add_tags:
            body["add_tags"] = add_tags
        if remove_tags:
            body["remove_tags"] = remove_tags
        if not body:
            raise ToolError("give text, add_tags or remove_tags")
        return result(await call("PATCH", f"/v1/memory/{entry_id}", body))

    @server.tool(annotations=ToolAnnotations(destructive_hint=False))
    async def memory_supersede(
        entry_id: EntryId,
        text: Text,
        kind: Kind | None = None,
        tags: Annotated[list[Tag] | None, Field(max_length=64)] = None,
    ) -> dict[str, Any]:
        """Correct an entry that is wrong or out of date: writes a new entry with the right
        text that links the old one (supersedes), and the old one stops appearing in search
        and in context. Use this, not memory_add, whenever new information contradicts an
        entry. The old text stays readable by id. Kind and tags default to the old entry's."""
        body: dict[str, Any] = {"text": text}
        if kind:
            body["kind"] = kind
        if tags is not None:
            body["tags"] = list(dict.fromkeys(tags))
        return result(await call("POST", f"/v1/memory/{entry_id}/supersede", body))

    @server.tool(annotations=ToolAnnotations(destructive_hint=True))
    async def memory_delete(entry_id: EntryId) -> dict[str, Any]:
        """Delete an entry THIS session created by mistake, on every device. Entries written by
        the owner or by other sessions cannot be deleted with a session token; to correct one,
        use memory_supersede."""
        return await call("DELETE", f"/v1/memory/{entry_id}")

    @server.tool()
    async def journal_add(
        kind: Annotated[JournalKind, Field(description=(
            "achievement (done), decision (and why), todo, blocker, learning, aspiration"))],
        text: Annotated[str, Field(min_length=1, max_length=4000)],
        status: Literal["open", "done"] | None = None,
    ) -> dict[str, Any]:
        """Add to the work journal of this session's project (repository): what was achieved,
        decided and why, what is left to do, what blocks. Later sessions on any device see a
        digest of it when they start. todo and blocker entries have a status (open or done)."""
        body: dict[str, Any] = {"kind": kind, "text": text}
        if status:
            body["status"] = status
        return await call("POST", "/v1/journal", body)

    @server.tool(annotations=read_only)
    async def sessions_list(limit: Annotated[int, Field(ge=1, le=100)] = 50) -> dict[str, Any]:
        """Other agent sessions live now on the owner's devices (Claude Code, Codex, Gemini
        CLI, ...): their repository, branch, task, recent action and the files they touch, and
        how they overlap with this one. Check it before large changes to shared files."""
        answer = await call("GET", "/v1/sessions", query={"limit": limit})
        return {"sessions": answer.get("sessions", [])}

    @server.tool()
    async def lease_claim(
        pattern: Annotated[str, Field(min_length=1, max_length=1024, description=(
            "a path or glob relative to the repository, e.g. src/api/** or README.md"))],
        mode: Literal["exclusive", "shared"] = "exclusive",
        ttl_s: Annotated[int, Field(ge=1, le=86_400)] = 900,
        note: Annotated[str, Field(max_length=200)] = "",
    ) -> dict[str, Any]:
        """Claim an advisory lease on files of this repository before editing them, so other
        agent sessions (on any device) are warned or stopped from editing the same files. A
        conflict names who holds them and until when. Release it when done."""
        body: dict[str, Any] = {"pattern": pattern, "mode": mode, "ttl_s": ttl_s}
        if note:
            body["note"] = note
        return await call("POST", "/v1/leases", body)

    @server.tool()
    async def lease_release(
        lease_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")],
    ) -> dict[str, Any]:
        """Release a lease this session holds (the id lease_claim returned)."""
        return await call("DELETE", f"/v1/leases/{lease_id}")

    @server.tool(annotations=read_only)
    async def skills_list() -> dict[str, Any]:
        """The owner's skills: named ways of doing things (deploys, releases, reviews...),
        each with when to use it. Check it before a multi-step task; fetch the steps of one
        with skill_get."""
        return await call("GET", "/v1/skills")

    @server.tool(annotations=read_only)
    async def skill_get(
        name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$",
                                   description="the skill's name, from skills_list")],
    ) -> dict[str, Any]:
        """One skill by name: when to use it and its steps, in order."""
        return await call("GET", f"/v1/skills/{name}")

    @server.tool(annotations=ToolAnnotations(open_world_hint=True))
    async def ask(
        prompt: Annotated[str, Field(min_length=1, max_length=100_000)],
        cortex: Annotated[str, Field(min_length=1, max_length=200, description=(
            "a model name, cortex/<kind> (e.g. cortex/reasoning, cortex/chat), or auto"))
        ] = "auto",
        system: Annotated[str | None, Field(max_length=20_000)] = None,
    ) -> dict[str, Any]:
        """Ask another model (a cortex) of the owner's mesh through maia-node's router: a
        model on one of the owner's devices for private or cheap work, or the one configured
        for a kind of task (reasoning, chat, creative, vision, ...). Returns its answer and
        which model answered."""
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}]
        answer = await call("POST", "/v1/chat/completions",
                            {"model": cortex, "messages": messages, "stream": False},
                            timeout=600.0)
        try:
            text = answer["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise ToolError("the cortex gave an answer without text") from None
        return {"answer": text, "model": answer.get("model")}

    @server.resource("maia://profile", name="profile", mime_type="application/json",
                     description="The operator's profile: who the owner of this memory is.")
    async def profile() -> str:
        return json.dumps(await call("GET", "/v1/profile"), ensure_ascii=False)

    @server.resource("maia://journal/recent", name="recent-journal",
                     mime_type="application/json",
                     description="The 20 newest work-journal entries of this session's project.")
    async def recent_journal() -> str:
        answer = await call("GET", "/v1/journal", query={"limit": 20})
        return json.dumps(answer.get("entries", []), ensure_ascii=False)

    return server
