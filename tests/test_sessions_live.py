"""SPEC-004 §4, §7, §8, §14 across devices: three real nodes in a line (a – b – c) exchange
live state over the peer channel, and a hostile member sends crafted live frames to b."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import msgpack
import pytest

from crdt.identity import open_repo, record_certs
from crdt.keys import DeviceKey, device_id
from crdt.roster import new_endorsement, new_tombstone
from crdt.store import Store
from node.sessions.clock import iso, now_ns
from node.sessions.mesh import LIVE_DOMAIN
from tests.hostile import hostile_peer
from tests.nodes import NodeProc, cli_out, make_mesh, wait_for
from tests.sessions_helpers import (
    api,
    cached_session,
    claude,
    claude_tool,
    codex,
    codex_patch,
    configure,
    edit,
    gemini,
    hook_call,
    make_repo,
    register,
    run_hook,
)

ORIGIN = "git@github.com:acme/mesh.git"
REPO_ID = "github.com/acme/mesh"


@dataclass
class Line:
    a: NodeProc
    b: NodeProc
    c: NodeProc
    mesh_id: bytes
    certs: list[bytes]
    member: DeviceKey
    revoked: DeviceKey


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Line]:
    root = tmp_path_factory.mktemp("live")
    a, b, c = make_mesh(root, ["a", "b", "c"])
    member, revoked = DeviceKey.generate(), DeviceKey.generate()
    founder = DeviceKey.load(a.data_dir / "keys" / "device.key")
    store = Store(a.data_dir)
    try:
        repo = open_repo(store, founder)
        mesh_id = repo.mesh_id
        new = [new_endorsement(founder, mesh_id, member.public_key, "hostile-member"),
               new_endorsement(founder, mesh_id, revoked.public_key, "stolen"),
               new_tombstone(founder, mesh_id, revoked.public_key, {}, reason="stolen")]
        record_certs(repo, new)
        certs = [x.encode() for x in repo.roster.certs.values()]
    finally:
        store.close()
    for n in (a, b, c):
        configure(n, heartbeat_s=0.5, live_stale_s=3)
    for n in (a, b, c):
        n.start()
    try:
        b.add_peer(a)
        c.add_peer(b)
        wait_for(lambda: len(b.connected()) == 2 and c.connected() and a.connected(),
                 timeout=20, what="a - b - c connected")
        yield Line(a, b, c, mesh_id, certs, member, revoked)
    finally:
        for n in (a, b, c):
            n.stop()


def _session_on(node: NodeProc, sid: str) -> dict | None:
    status, body, _ = api(node, "GET", f"/v1/sessions/{sid}")
    return body if status == 200 else None


def test_sessions_travel_along_the_line_with_their_device(line, tmp_path) -> None:
    """SPEC-004 §4.1 to §4.4: a session on a is seen on c (relayed by b, which is not a's
    direct peer for c) with a's device id and name, its tags, and local=false."""
    repo = make_repo(tmp_path / "r", ORIGIN)
    sa = register(line.a, repo, task="alpha")
    sc = register(line.c, repo, agent="codex", task="gamma")
    seen = wait_for(lambda: _session_on(line.c, sa["session_id"]), what="a's session on c")
    assert seen["local"] is False and seen["device"] == line.a.device_id()
    assert seen["device_name"] == "a" and seen["task"] == "alpha"
    assert f"repo:{REPO_ID}" in seen["tags"]
    assert wait_for(lambda: _session_on(line.a, sc["session_id"]), what="c's session on a")
    assert _session_on(line.b, sa["session_id"]) and _session_on(line.b, sc["session_id"])
    overlaps = line.c.request("GET", f"/v1/sessions/{sc['session_id']}/overlaps")["overlaps"]
    assert {o["session"]: o["tier"] for o in overlaps}[sa["session_id"]] == "detail"
    for node, s in ((line.a, sa), (line.c, sc)):
        api(node, "DELETE", f"/v1/sessions/{s['session_id']}")
    wait_for(lambda: _session_on(line.c, sa["session_id"]) is None, what="end seen on c")


def test_same_file_on_two_devices_alerts_both_sessions(line, tmp_path) -> None:
    """SPEC-004 §7.1: a session on a and one on c modify the same file of the same repository
    (two clones): c's session is alerted in the answer to its hook call, naming a's session
    and device; a's session is alerted at its next hook call, naming c; both nodes log it."""
    repo_a = make_repo(tmp_path / "on-a", ORIGIN)
    repo_c = make_repo(tmp_path / "on-c", ORIGIN)
    sa = register(line.a, repo_a, task="fix totals")
    hook_call(line.a, sa, edit(repo_a, repo_a / "src/totals.py"))
    wait_for(lambda: (_session_on(line.c, sa["session_id"]) or {}).get("modified"),
             what="a's modification known on c")
    dd = line.c.data_dir
    run_hook(dd, "claude", "SessionStart", claude("SessionStart", "c-1", str(repo_c)))
    hit = run_hook(dd, "claude", "PostToolUse", claude_tool(
        "PostToolUse", "c-1", str(repo_c), "Edit", file_path=str(repo_c / "src/totals.py"),
        old_string="1", new_string="2"))
    assert "CONFLICT: you (claude on c) and claude on a" in hit.context
    assert line.a.device_id() in hit.context and sa["session_id"] in hit.context
    sc_id = cached_session(dd, "claude", "c-1")["session_id"]

    def alerted_a() -> str:
        wait_for(lambda: {o["session"]: o["tier"] for o in line.a.request(
            "GET", f"/v1/sessions/{sa['session_id']}/overlaps")["overlaps"]}.get(sc_id)
            == "conflict", what="c's edit known on a")
        return hook_call(line.a, sa, {"event": "post_tool", "action": "read", "tool": "Read",
                                      "cwd": str(repo_a), "paths": [str(repo_a / "README")]}
                         ).get("context", "")

    context = alerted_a()
    assert "CONFLICT: you (claude on a) and claude on c" in context
    assert line.c.device_id() in context
    pairs = ((line.a, sa["session_id"], sc_id), (line.c, sc_id, sa["session_id"]))
    for node, mine, other in pairs:
        events = node.request("GET", f"/v1/events?kind=conflict&session={mine}")["events"]
        assert any(e["data"]["with"] == other for e in events)
    api(line.a, "DELETE", f"/v1/sessions/{sa['session_id']}")
    api(line.c, "DELETE", f"/v1/sessions/{sc_id}")


def test_a_lease_on_one_device_denies_the_edit_on_another_until_released(line, tmp_path):
    """SPEC-004 §8.2, §8.4, §8.5, §9.1: `maia claim` on a; c knows the lease live: codex's
    apply_patch on a covered file is denied naming the holder's agent, task, device name and
    id; an overlapping acquire on c is a 409 lease-conflict naming the holder; after
    `maia release` on a, the edit on c is allowed."""
    repo_a = make_repo(tmp_path / "on-a", ORIGIN)
    repo_c = make_repo(tmp_path / "on-c", ORIGIN)
    sa = register(line.a, repo_a, task="migrate the core")
    out = cli_out(line.a.data_dir, "claim", "src/core/**", "--session", sa["session_id"][:10],
                  "--note", "schema change", "--ttl", "30m")
    lease_id = out.strip().rsplit(" ", 1)[1]
    wait_for(lambda: lease_id in json.dumps(line.c.request("GET", "/v1/leases")),
             what="lease known on c")
    dd = line.c.data_dir
    patch = codex_patch("*** Update File: src/core/db.py", "@@", "-a", "+b")
    pre = codex("PreToolUse", "c-lease", str(repo_c), tool_name="apply_patch",
                tool_input={"command": patch})
    run_hook(dd, "codex", "SessionStart", codex("SessionStart", "c-lease", str(repo_c)))
    denied = run_hook(dd, "codex", "PreToolUse", pre).json["hookSpecificOutput"]
    assert denied["permissionDecision"] == "deny"
    reason = denied["permissionDecisionReason"]
    for needed in ("claude", "migrate the core", " on a ", line.a.device_id(), "schema change"):
        assert needed in reason, (needed, reason)
    sc = register(line.c, repo_c, agent="gemini")
    status, body, _ = api(line.c, "POST", "/v1/leases", {"pattern": "src/core/db.py"},
                          token=sc["token"])
    assert status == 409 and body["type"] == "urn:maia-node:problem:lease-conflict"
    assert body["holder"]["device_name"] == "a" and body["holder"]["session"] == sa["session_id"]
    assert body["holder"]["device"] == line.a.device_id()
    assert "released" in cli_out(line.a.data_dir, "release", "src/core/**", "--session",
                                 sa["session_id"]).lower()
    wait_for(lambda: lease_id not in json.dumps(line.c.request("GET", "/v1/leases")),
             what="release known on c")
    allowed = run_hook(dd, "codex", "PreToolUse", pre)
    assert allowed.code == 0 and "deny" not in allowed.stdout
    api(line.a, "DELETE", f"/v1/sessions/{sa['session_id']}")
    api(line.c, "DELETE", f"/v1/sessions/{sc['session_id']}")


def test_messages_cross_devices(line, tmp_path) -> None:
    """SPEC-004 §14.1 to §14.3: `maia send` on c reaches a session on a; a session's message
    to the owner is kept by every node (maia inbox on c)."""
    repo = make_repo(tmp_path / "r", ORIGIN)
    sa = register(line.a, repo)
    wait_for(lambda: _session_on(line.c, sa["session_id"]), what="a's session on c")
    assert "Sent message" in cli_out(line.c.data_dir, "send", sa["session_id"], "rebase",
                                     "onto", "main", "first")

    def delivered() -> str:
        ctx = hook_call(line.a, sa, {"event": "prompt", "prompt": "go", "cwd": str(repo)})
        return ctx.get("context", "")

    got = wait_for(lambda: "rebase onto main first" in (text := delivered()) and text,
                   what="message delivered on a")
    assert "message from owner on c" in got
    status, _, _ = api(line.a, "POST", "/v1/messages", {"to": "owner", "text": "done on a"},
                       token=sa["token"])
    assert status == 202
    wait_for(lambda: "done on a" in cli_out(line.c.data_dir, "inbox"), what="inbox on c")
    api(line.a, "DELETE", f"/v1/sessions/{sa['session_id']}")


def _live_frame(key: DeviceKey, mesh_id: bytes, seq: int, sessions: list, leases: list = (),
                sign_with: DeviceKey | None = None) -> dict:
    body = msgpack.packb({"v": 1, "origin": key.public_key, "seq": seq, "sessions": sessions,
                          "leases": list(leases)}, use_bin_type=True)
    sig = (sign_with or key).sign(LIVE_DOMAIN + mesh_id + body)
    return {"t": "live", "body": body, "sig": sig}


def _record(key: DeviceKey, sid: str, task: str) -> dict:
    t = iso(now_ns())
    return {"id": sid, "agent": "claude", "device": key.device_id, "device_name": "intruder",
            "pid": 1, "repository": REPO_ID, "branch": "main", "cwd": "/w", "task": task,
            "started_at": t, "last_seen": t, "status": "active", "tags": [f"repo:{REPO_ID}"],
            "modified": [], "recent_action": ""}


def test_live_frames_are_verified_relayed_and_ordered(line) -> None:
    """SPEC-004 §4.1, §4.3, §4.6: a member's signed frame is applied and relayed unchanged to
    the other nodes; a replay or an older seq is dropped; a bad signature, a session or lease
    that is not the origin's, or a lease pattern escaping the repository is rejected; the
    state of a revoked device is dropped even when a member relays it. §4.8: the session is
    shown under the roster's name of its origin, whatever name the record claims."""
    m, mesh_id = line.member, line.mesh_id

    async def scenario() -> list[dict]:
        answers = []
        async with hostile_peer(line.b.peer_port, m, mesh_id, line.certs) as p:
            seq = now_ns()
            await p.send(_live_frame(m, mesh_id, seq, [_record(m, "m" * 26, "first")]))
            await asyncio.sleep(0.3)
            await p.send(_live_frame(m, mesh_id, seq, [_record(m, "m" * 26, "replayed")]))
            await p.send(_live_frame(m, mesh_id, seq - 5, [_record(m, "m" * 26, "older")]))
            await p.send(_live_frame(m, mesh_id, seq + 1, [_record(m, "n" * 26, "forged")],
                                     sign_with=DeviceKey.generate()))
            answers.append(await p.answer())
            foreign = _record(m, "o" * 26, "not mine")
            foreign["device"] = line.a.device_id()
            await p.send(_live_frame(m, mesh_id, seq + 2, [foreign]))
            answers.append(await p.answer())
            t = iso(now_ns())
            lease = {"id": "f" * 32, "repository": REPO_ID, "pattern": "../../etc",
                     "mode": "exclusive", "session": "m" * 26,
                     "device": device_id(m.public_key), "granted_at": t, "expires_at": t,
                     "note": ""}
            await p.send(_live_frame(m, mesh_id, seq + 3, [], [lease]))
            answers.append(await p.answer())
            r = line.revoked
            await p.send(_live_frame(r, mesh_id, now_ns(), [_record(r, "r" * 26, "stolen")]))
            await asyncio.sleep(0.5)
        return answers

    answers = asyncio.run(scenario())
    assert [a["code"] for a in answers] == ["bad_signature", "malformed", "malformed"]
    for node in (line.b, line.a, line.c):  # applied on b, relayed unchanged to a and c
        got = wait_for(lambda n=node: _session_on(n, "m" * 26),
                       what=f"member session on {node.name}")
        # shown under the roster's name of its device, not the one it claims (004.4.8)
        assert got["task"] == "first" and got["device_name"] == "hostile-member"
    for node in (line.a, line.b, line.c):
        assert _session_on(node, "n" * 26) is None and _session_on(node, "o" * 26) is None
        assert _session_on(node, "r" * 26) is None
    assert "../../etc" not in json.dumps(line.b.request("GET", "/v1/leases"))


def test_a_stale_origin_loses_its_sessions_but_not_its_leases(line, tmp_path) -> None:
    """SPEC-004 §4.5, §9.2: when a stops, c treats a's sessions as gone after live_stale_s,
    but a's lease stays in force (an unreachable device never shortens it); when a returns
    with fresh, empty state, the lease is gone."""
    repo_a = make_repo(tmp_path / "on-a", ORIGIN)
    repo_c = make_repo(tmp_path / "on-c", ORIGIN)
    sa = register(line.a, repo_a, task="docs pass")
    status, lease, _ = api(line.a, "POST", "/v1/leases", {"pattern": "docs", "ttl_s": 600},
                           token=sa["token"])
    assert status == 201
    wait_for(lambda: lease["id"] in json.dumps(line.c.request("GET", "/v1/leases")),
             what="lease on c")
    sc = register(line.c, repo_c)
    pre = edit(repo_c, repo_c / "docs/guide.md", event="pre_tool")
    # a's last frame leaves no earlier than one heartbeat (0.5 s) before its stop begins; a
    # stop that takes long on a loaded machine must not count (t0 after it failed that way)
    t0 = time.monotonic()
    line.a.stop()
    wait_for(lambda: _session_on(line.c, sa["session_id"]) is None, timeout=15,
             what="a's session gone on c")
    # not at the disconnect, but live_stale_s (3 s) after a's last frame: 1.5 s leaves room
    # for a heartbeat delayed on a busy loop
    assert time.monotonic() - t0 >= 1.5
    assert hook_call(line.c, sc, pre)["decision"] == "deny"
    assert lease["id"] in json.dumps(line.c.request("GET", "/v1/leases"))
    line.a.start()
    wait_for(lambda: hook_call(line.c, sc, pre)["decision"] == "allow", timeout=30,
             what="a's fresh state replaced the remembered lease")
    api(line.c, "DELETE", f"/v1/sessions/{sc['session_id']}")


def test_a_journal_entry_from_one_device_is_injected_on_another(line, tmp_path) -> None:
    """SPEC-004 §10.1, §10.3: journal entries are Memory entries, synced like the rest: a
    decision recorded on a reaches c (through b) and a session starting there gets it."""
    repo = make_repo(tmp_path / "r", "git@github.com:acme/journal-mesh.git")
    project = "github.com/acme/journal-mesh"
    assert "Added" in cli_out(line.a.data_dir, "journal", "add", "decision", "Use", "tabs",
                              "--project", project)
    wait_for(lambda: line.c.request("GET", f"/v1/journal?project={project}")["entries"],
             what="journal entry synced to c")
    start = run_hook(line.c.data_dir, "gemini", "SessionStart",
                     gemini("SessionStart", "j-c", str(repo)))
    assert "- [decision] Use tabs" in start.context
    sid = cached_session(line.c.data_dir, "gemini", "j-c")["session_id"]
    api(line.c, "DELETE", f"/v1/sessions/{sid}")
