"""Three real node processes on loopback converge: online, offline and concurrent (SPEC-005)."""

from __future__ import annotations

import time

from tests.nodes import wait_for


def _ids(node) -> set[str]:
    return {e["id"] for e in node.entries()}


def test_three_nodes_converge_while_online(mesh_factory):
    """SPEC-005 §sync: writes on each of three online nodes reach every node (live push)."""
    a, b, c = mesh_factory("a", "b", "c")
    b.add_peer(a)
    c.add_peer(b)  # a chain: c learns a's writes through b (relay of signed batches)
    wait_for(lambda: len(b.connected()) == 2, what="b connected to a and c")
    written = {a.add_memory("from a")["id"], b.add_memory("from b")["id"],
               c.add_memory("from c")["id"]}
    for n in (a, b, c):
        wait_for(lambda n=n: _ids(n) >= written, what=f"{n.name} has every entry")
    # The relayed entry keeps its true author: c sees a's entry signed by a, not by b.
    a_entry = next(e for e in c.entries() if e["text"] == "from a")
    assert a_entry["author"] == a.device_id()
    hist = c.request("GET", f"/v1/memory/{a_entry['id']}/history")["history"]
    assert hist[0]["device_id"] == a.device_id() and hist[0]["verified"]


def test_offline_writes_converge_after_return(mesh_factory):
    """SPEC-005 §sync: a node offline while others write catches up when it returns."""
    a, b, c = mesh_factory("a", "b", "c")
    b.add_peer(a)
    c.add_peer(a)
    wait_for(lambda: len(a.connected()) == 2, what="a connected to b and c")
    c.stop()
    online = [a.add_memory(f"while c away {i}")["id"] for i in range(20)]
    online.append(b.add_memory("b while c away")["id"])
    c.start()
    wait_for(lambda: _ids(c) >= set(online), what="c caught up")
    # and c's own offline writes reach the others
    c.stop()
    cid = None
    from tests.nodes import cli
    assert cli(c.data_dir, "memory", "add", "written by c offline") == 0
    c.start()
    cid = next(e["id"] for e in c.entries() if e["text"] == "written by c offline")
    wait_for(lambda: cid in _ids(a) and cid in _ids(b), what="c's offline write reached a, b")


def test_concurrent_edits_merge_without_conflict_copy(mesh_factory):
    """SPEC-005 §memory: concurrent edits of one entry merge; no conflict copy is created."""
    a, b = mesh_factory("a", "b")
    b.add_peer(a)
    wait_for(lambda: a.connected(), what="connected")
    e = a.add_memory("shared entry", tags=["start"])
    wait_for(lambda: b.entry(e["id"]) is not None, what="entry on b")
    b.stop()
    a.request("PATCH", f"/v1/memory/{e['id']}", {"add_tags": ["from-a"]})
    from tests.nodes import cli
    assert cli(b.data_dir, "memory", "edit", e["id"], "--text", "edited on b",
               "--add-tag", "from-b") == 0
    b.start()

    def merged():
        ea, eb = a.entry(e["id"]), b.entry(e["id"])
        return ea == eb and {"from-a", "from-b", "start"} <= set(ea["tags"]) and ea
    final = wait_for(merged, what="both edits merged identically")
    assert final["text"] == "edited on b"
    assert len(a.entries()) == 1 and len(b.entries()) == 1  # no conflict copies
    time.sleep(0)


def test_kill9_mid_catch_up_then_converge(mesh_factory, tmp_path):
    """SPEC-005 §durability: a node killed while receiving a large catch-up restarts consistent,
    keeps what it had accepted, resumes and converges."""
    from tests.nodes import cli

    a, b = mesh_factory("a", "b", start=False)
    notes = tmp_path / "notes.txt"
    notes.write_text("".join(f"catch-up note {i} with some words in it\n" for i in range(40000)))
    assert cli(a.data_dir, "memory", "import", str(notes)) == 0
    a.start()
    b.start()
    b.add_peer(a)

    def accepted() -> int:
        return sum(p.get("changes_accepted", 0) for p in b.request("GET", "/v1/peers")["peers"])

    wait_for(lambda: accepted() > 0, timeout=30, interval=0.01, what="catch-up under way")
    b.kill9()
    b.start()  # the store opens after kill -9
    partial = len(b.entries())
    wait_for(lambda: b.request("GET", "/v1/status")["memory_entries"] == 40000, timeout=60,
             what="b converged after restart")
    assert partial <= 40000
    assert {e["id"] for e in a.entries()} == {e["id"] for e in b.entries()}


def test_dialer_reconnects_with_backoff_when_peer_returns(mesh_factory):
    """SPEC-005 §transport: a static peer that goes away is redialled with backoff."""
    a, b = mesh_factory("a", "b")
    b.add_peer(a)
    wait_for(lambda: a.connected(), what="first connection")
    a.stop()
    time.sleep(1.0)  # b's dial loop fails a few times meanwhile
    a.start()
    wait_for(lambda: a.connected(), timeout=20, what="b redialled a")
    e = b.add_memory("after reconnect")
    wait_for(lambda: a.entry(e["id"]) is not None, what="sync after reconnect")


def test_two_devices_creating_the_same_shard_both_keep_their_entries(mesh_factory):
    """SPEC-005 §10.2: entries written concurrently on two devices into one new shard both
    survive the merge (no container created twice, so no entry is hidden)."""
    from tests.nodes import cli

    a, b = mesh_factory("a", "b", start=False)
    # Both write while apart, each creating the same month's note shards for the first time.
    for node, tag in ((a, "from-a"), (b, "from-b")):
        for i in range(12):
            assert cli(node.data_dir, "memory", "add", f"{tag} {i}", "--tag", tag) == 0
    a.start()
    b.start()
    b.add_peer(a)
    wait_for(lambda: len(a.entries()) == 24 and len(b.entries()) == 24, timeout=30,
             what="all 24 entries visible on both devices")
    assert _ids(a) == _ids(b)


def test_deleted_entry_disappears_everywhere_with_its_history(mesh_factory):
    """SPEC-005 §10.5: deleting hides the entry on every device; nothing else is lost."""
    a, b = mesh_factory("a", "b")
    b.add_peer(a)
    wait_for(lambda: a.connected(), what="connected")
    keep, gone = a.add_memory("keep me")["id"], a.add_memory("forget me")["id"]
    wait_for(lambda: {keep, gone} <= _ids(b), what="both on b")
    b.request("DELETE", f"/v1/memory/{gone}")
    wait_for(lambda: gone not in _ids(a), what="deletion reached a")
    assert a.entry(gone) is None and keep in _ids(a) and keep in _ids(b)


def test_maia_sync_watch_follows_an_initial_catch_up(mesh_factory, tmp_path):
    """A fresh node's initial sync shown with progress and a summary (`maia sync --watch`)."""
    import subprocess
    import sys

    from tests.nodes import cli

    a, b = mesh_factory("a", "b", start=False)
    notes = tmp_path / "notes.txt"
    notes.write_text("".join(f"catch-up note {i}\n" for i in range(3000)))
    assert cli(a.data_dir, "memory", "import", str(notes)) == 0
    a.start()
    b.start()
    b.add_peer(a)
    res = subprocess.run([sys.executable, "-m", "node.cli", "--data-dir", str(b.data_dir),
                          "sync", "--watch", "--timeout", "60"],
                         capture_output=True, text=True, timeout=90)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "In step with 1 peer(s)" in res.stdout
    assert "changes received" in res.stderr or "In step" in res.stdout
    assert b.request("GET", "/v1/status")["memory_entries"] == 3000
