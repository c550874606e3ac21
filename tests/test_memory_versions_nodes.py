"""Versions and concurrent edits on real node processes (SPEC-005 §10.7 to §10.10).

Two real ``maia up`` processes on loopback: one entry edited on both while they are not
peered, then peered; restore and undelete round-trips; every refusal a problem+json.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from tests.nodes import cli, cli_out, wait_for


def _problem(node, method: str, path: str, body=None) -> tuple[int, str, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(node.base + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {node.token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), json.loads(exc.read() or b"{}")


def _partition(a, b) -> None:
    """b forgets a as a static peer and restarts: two running processes, not peered."""
    b.request("DELETE", f"/v1/peers/127.0.0.1:{a.peer_port}")
    b.stop()
    b.start()
    wait_for(lambda: not a.connected() and not b.connected(), what="a and b apart")


def test_concurrent_edits_on_partitioned_nodes_keep_both_texts(mesh_factory):
    """SPEC-005 §10.3a, §10.8: one entry edited on two nodes that are not peered; after they
    are peered, both texts are reachable on every node (the entry's ``concurrent`` values and
    its history), the two nodes agree, and there is no conflict copy. An edit on one node then
    ends the concurrency everywhere."""
    a, b = mesh_factory("laptop", "desktop")
    e = a.add_memory("grocery list: milk", tags=["home"])
    b.add_peer(a)
    wait_for(lambda: b.entry(e["id"]) is not None, what="entry on desktop")
    _partition(a, b)

    a.request("PATCH", f"/v1/memory/{e['id']}", {"text": "grocery list: milk, bread (train)"})
    b.request("PATCH", f"/v1/memory/{e['id']}", {"text": "grocery list: milk, eggs (home)"})
    b.add_peer(a)

    texts = {"grocery list: milk, bread (train)", "grocery list: milk, eggs (home)"}

    def healed():
        ea, eb = a.entry(e["id"]), b.entry(e["id"])
        if ea != eb or len(ea.get("concurrent", [])) != 2:
            return None
        return ea
    shown = wait_for(healed, timeout=30, what="both nodes show the concurrent texts alike")
    assert {c["text"] for c in shown["concurrent"]} == texts
    assert {c["device_name"] for c in shown["concurrent"]} == {"laptop", "desktop"}
    assert shown["text"] in texts  # the deterministic winner (§10.3), the same on both
    for node in (a, b):
        hist = node.request("GET", f"/v1/memory/{e['id']}/history")["history"]
        assert texts <= {h["text"] for h in hist}
        assert all(h["verified"] for h in hist)
        assert [x["id"] for x in node.entries()] == [e["id"]]  # no conflict copy
    out = cli_out(b.data_dir, "memory", "show", e["id"])
    assert "at the same time" in out and "laptop" in out and "desktop" in out

    # Picking one (restore of the desktop's version) ends it on both nodes.
    desktop_v = next(c["version"] for c in shown["concurrent"] if c["device_name"] == "desktop")
    a.request("POST", f"/v1/memory/{e['id']}/restore", {"version": desktop_v[:12]})
    for node in (a, b):
        wait_for(lambda n=node: (x := n.entry(e["id"])) and "concurrent" not in x
                 and x["text"] == "grocery list: milk, eggs (home)",
                 timeout=30, what=f"{node.name} resolved")


def test_restore_undelete_and_history_round_trip_on_two_nodes(mesh_factory):
    """SPEC-005 §10.7, §10.9, §10.10: history lists each version's values, a restore and an
    undelete written on one node reach the other as new changes, and history survives
    deletion. The CLI commands act on the running node."""
    a, b = mesh_factory("a", "b")
    b.add_peer(a)
    wait_for(lambda: a.connected() and b.connected(), what="connected")
    e = a.add_memory("version one", tags=["t1"])
    a.request("PATCH", f"/v1/memory/{e['id']}", {"text": "version two", "add_tags": ["t2"]})
    wait_for(lambda: (x := b.entry(e["id"])) and x["text"] == "version two", what="on b")

    hist = b.request("GET", f"/v1/memory/{e['id']}/history")["history"]
    assert [(h["op"], h["text"], h["tags"]) for h in hist] == [
        ("create", "version one", ["t1"]), ("update text+tags", "version two", ["t1", "t2"])]
    first = hist[0]["version"]
    at = b.request("GET", f"/v1/memory/{e['id']}?at={first[:10]}")
    assert at["text"] == "version one" and at["n"] == 1 and at["tags"] == ["t1"]
    assert "version one" in cli_out(b.data_dir, "memory", "show", e["id"], "--at", first[:10])

    assert cli(b.data_dir, "memory", "restore", e["id"], first[:16]) == 0
    wait_for(lambda: a.entry(e["id"])["text"] == "version one", what="restore reached a")
    assert a.entry(e["id"])["tags"] == ["t1"]
    hist = a.request("GET", f"/v1/memory/{e['id']}/history")["history"]
    assert hist[-1]["op"] == "restore" and hist[-1]["from"] == first
    assert hist[-1]["device_id"] == b.device_id()

    a.request("DELETE", f"/v1/memory/{e['id']}")
    wait_for(lambda: b.entry(e["id"]) is None, what="deleted on b")
    kept = b.request("GET", f"/v1/memory/{e['id']}/history")["history"]
    assert len(kept) == 4 and kept[-1]["op"] == "delete" and kept[-1]["deleted"]
    listed = b.request("GET", "/v1/memory/deleted")["entries"]
    assert [x["id"] for x in listed] == [e["id"]]
    assert listed[0]["deleted_by"] == a.device_id()
    assert e["id"] in cli_out(b.data_dir, "memory", "deleted")

    assert cli(b.data_dir, "memory", "undelete", e["id"]) == 0
    wait_for(lambda: (x := a.entry(e["id"])) and x["text"] == "version one", what="back on a")
    assert b.request("GET", "/v1/memory/deleted")["entries"] == []
    out = cli_out(a.data_dir, "memory", "history", e["id"])
    assert "undelete" in out and "version two" in out


def test_version_refusals_are_problems(mesh_factory):
    """SPEC-005 §10.9 (attacker view) and SPEC-003 problem+json: an unknown version, another
    entry's version, a malformed version or id, and undelete of an entry that never existed or
    is not deleted are 4xx problems; nothing is written."""
    (a,) = mesh_factory("a")
    e = a.add_memory("mine")
    other = a.add_memory("another entry")
    other_v = a.request("GET", f"/v1/memory/{other['id']}/history")["history"][0]["version"]
    own_v = a.request("GET", f"/v1/memory/{e['id']}/history")["history"][0]["version"]
    never = "note-202612-AAAAAAAAAA"
    cases = [
        ("POST", f"/v1/memory/{e['id']}/restore", {"version": "0" * 64}, 404),
        ("POST", f"/v1/memory/{e['id']}/restore", {"version": other_v}, 404),
        ("POST", f"/v1/memory/{e['id']}/restore", {"version": "xyz"}, 400),
        ("POST", f"/v1/memory/{e['id']}/restore", {"version": own_v, "extra": 1}, 400),
        ("POST", f"/v1/memory/{never}/restore", {"version": own_v}, 404),
        ("POST", "/v1/memory/not-an-id/restore", {"version": own_v}, 404),
        ("GET", f"/v1/memory/{e['id']}?at={other_v}", None, 404),
        ("GET", f"/v1/memory/{e['id']}?at=ZZZZ", None, 400),
        ("GET", f"/v1/memory/{never}/history", None, 404),
        ("POST", f"/v1/memory/{never}/undelete", None, 404),
        ("POST", f"/v1/memory/{e['id']}/undelete", None, 409),
        ("GET", "/v1/memory/deleted?limit=0", None, 400),
    ]
    for method, path, body, want in cases:
        status, ctype, problem = _problem(a, method, path, body)
        assert status == want, (method, path, status, problem)
        assert ctype.startswith("application/problem+json"), (path, ctype)
        assert problem.get("title") and problem.get("status") == want
    hist = a.request("GET", f"/v1/memory/{e['id']}/history")["history"]
    assert len(hist) == 1  # nothing was written by any refused call
    assert a.request("GET", "/v1/memory/deleted")["entries"] == []
