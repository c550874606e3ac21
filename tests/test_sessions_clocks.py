"""SPEC-004 §1, §4.1, §8.2, §8.6, §8.9, §9.4, §9.5 on real nodes whose wall clocks lie.

A node process gets a wrong wall clock from ``tests/clockskew/sitecustomize.py`` (on its
``PYTHONPATH``): a fixed offset, or a file the test rewrites to step the clock of a running
node. Monotonic time is never touched, as on a real machine. A wrong clock may cost its own
device something; it must never block files, drop frames or break "one winner" for the mesh.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import urllib.error
from pathlib import Path

from node.sessions.clock import NS, parse_iso
from tests.nodes import NodeProc, make_mesh, wait_for
from tests.sessions_helpers import api, configure, edit, hook_call, make_repo, register

ORIGIN = "git@github.com:acme/clocks.git"
SKEW_DIR = str(Path(__file__).parent / "clockskew")
YEAR = 365 * 86_400
DAY = 86_400


def _skewed(node: NodeProc, clock_file: Path, offset_s: float) -> None:
    clock_file.write_text(str(offset_s))
    path = os.environ.get("PYTHONPATH", "")
    node.env.update({"PYTHONPATH": SKEW_DIR + (os.pathsep + path if path else ""),
                     "MAIA_TEST_CLOCK_FILE": str(clock_file)})


def _connect(a: NodeProc, b: NodeProc) -> None:
    with contextlib.suppress(urllib.error.HTTPError):  # already a static peer: it redials
        b.add_peer(a)
    wait_for(lambda: a.device_id() in b.connected() and b.device_id() in a.connected(),
             what="a and b connected")


def _restart(node: NodeProc) -> None:
    node.stop()
    node.start()


def _lease(node: NodeProc, session: dict, pattern: str, **kw) -> tuple[int, dict]:
    status, body, _ = api(node, "POST", "/v1/leases", {"pattern": pattern, **kw},
                          token=session["token"])
    return status, body


def _leases(node: NodeProc) -> dict[str, dict]:
    return {x["id"]: x for x in node.request("GET", "/v1/leases")["leases"]}


def _session_ids(node: NodeProc) -> set[str]:
    return {s["id"] for s in node.request("GET", "/v1/sessions")["sessions"]}


def _pre_edit(node: NodeProc, session: dict, path: Path) -> dict:
    return hook_call(node, session, edit(path.parent, path, event="pre_tool"))


def _start_pair(tmp_path: Path, b_offset: float) -> tuple[NodeProc, NodeProc, Path]:
    a, b = make_mesh(tmp_path, ["a", "b"])
    for n in (a, b):
        configure(n, heartbeat_s=0.5)
    clock = tmp_path / "b-clock"
    _skewed(b, clock, b_offset)
    a.start()
    b.start()
    _connect(a, b)
    return a, b, clock


def test_a_clock_ahead_blocks_nothing_once_corrected(tmp_path: Path) -> None:
    """SPEC-004 §4.1, §8.2, §8.9. b's clock is a year ahead; its agent takes a 60 s exclusive
    lease on src/**. On a the lease runs 60 s from arrival (not "until next year"). b's clock
    is corrected and b restarts: a takes b's new frames (new sessions, releases) at once. The
    owner's force-release on a drops a remote lease there, and only there."""
    a, b, clock = _start_pair(tmp_path, YEAR)
    try:
        repo = make_repo(tmp_path / "repo", ORIGIN)
        target = repo / "src" / "x.py"
        sb = register(b, repo, task="ahead")
        status, lease = _lease(b, sb, "src/**", ttl_s=60)
        assert status == 201, lease
        wait_for(lambda: lease["id"] in _leases(a), what="b's lease known on a")
        seen = _leases(a)[lease["id"]]
        left = (parse_iso(seen["expires_at"]) - time.time_ns()) / NS
        assert 0 < left <= 61, f"a counts b's 60 s lease as {left:.0f} s ({seen['expires_at']})"
        sa = register(a, repo, task="local work")
        denied = _pre_edit(a, sa, target)
        assert denied["decision"] == "deny"
        assert str(time.gmtime().tm_year + 1) not in denied["reason"], denied["reason"]

        clock.write_text("0")  # the clock is corrected, the node restarts
        _restart(b)
        _connect(a, b)
        sb2 = register(b, repo, task="after the fix")
        wait_for(lambda: sb2["session_id"] in _session_ids(a),
                 what="a to take b's frames after b's clock went back a year")
        wait_for(lambda: lease["id"] not in _leases(a), what="b's old lease gone on a")
        assert _pre_edit(a, sa, target)["decision"] == "allow"

        status, again = _lease(b, sb2, "src/**", ttl_s=600)
        assert status == 201, again
        wait_for(lambda: again["id"] in _leases(a), what="b's new lease known on a")
        assert _pre_edit(a, sa, target)["decision"] == "deny"
        status, body, _ = api(a, "DELETE", f"/v1/leases/{again['id']}?force=true")
        assert status == 200 and body == {"id": again["id"], "released": True}, body
        assert again["id"] not in _leases(a)
        assert _pre_edit(a, sa, target)["decision"] == "allow"
        time.sleep(1.2)  # b's next frames announce it again: a keeps it dropped
        assert again["id"] not in _leases(a)
        assert again["id"] in _leases(b)  # the origin's own lease is untouched
        status, _, _ = api(a, "DELETE", f"/v1/leases/{again['id']}?force=true")
        assert status == 404
    finally:
        a.stop()
        b.stop()


def test_a_clock_behind_still_gives_one_winner(tmp_path: Path) -> None:
    """SPEC-004 §4.1, §8.9, §9.4, §9.5. b restarts with its clock a day behind: a still takes
    its frames. b's one-hour exclusive lease is in force on a (it does not arrive expired), so a
    refuses the same pattern to its own session. Both nodes estimate the offset from round
    trips (and warn); b's grant is flagged with the skew."""
    a, b, clock = _start_pair(tmp_path, 0)
    try:
        repo = make_repo(tmp_path / "repo", ORIGIN)
        first = register(b, repo, task="before")
        wait_for(lambda: first["session_id"] in _session_ids(a), what="b's session on a")
        clock.write_text(str(-DAY))
        _restart(b)
        _connect(a, b)
        sb = register(b, repo, task="behind")
        wait_for(lambda: sb["session_id"] in _session_ids(a),
                 what="a to take b's frames after b's clock stepped back a day")
        b_id, a_id = b.device_id(), a.device_id()

        def offset(node: NodeProc, peer: str) -> float | None:
            return node.request("GET", "/v1/status")["sessions"]["clock_offsets_s"].get(peer)

        wait_for(lambda: offset(a, b_id) is not None and offset(b, a_id) is not None,
                 what="clock offsets estimated")
        assert abs(offset(a, b_id) + DAY) < 5 and abs(offset(b, a_id) - DAY) < 5
        status, lease = _lease(b, sb, "src/**", ttl_s=3600)
        assert status == 201, lease
        assert [x["device"] for x in lease["clock_skew"]] == [a_id]
        assert abs(lease["clock_skew"][0]["offset_s"] - DAY) < 5
        wait_for(lambda: lease["id"] in _leases(a), what="b's one-hour lease in force on a")
        left = (parse_iso(_leases(a)[lease["id"]]["expires_at"]) - time.time_ns()) / NS
        assert 3590 < left <= 3601
        sa = register(a, repo, task="same files")
        status, body = _lease(a, sa, "src/**", ttl_s=600)
        assert status == 409, body
        assert body["holder"]["lease"] == lease["id"]
        assert _pre_edit(a, sa, repo / "src" / "x.py")["decision"] == "deny"
        assert re.search(rf"clock of {b_id} differs from ours by about -86\d\d\d\.\d s", a.log())
    finally:
        a.stop()
        b.stop()


def test_a_relayed_frame_is_not_read_as_clock_skew(tmp_path: Path) -> None:
    """SPEC-004 §9.4: skew comes from round trips, never from a frame's age. In a line
    a–b–c with equal clocks, c's state reaches a late (forwarded at a's connection): no
    "clock differs" warning anywhere."""
    a, b, c = make_mesh(tmp_path, ["a", "b", "c"])
    for n in (a, b, c):
        configure(n, heartbeat_s=30)
    try:
        for n in (a, b, c):
            n.start()
        c.add_peer(b)
        wait_for(lambda: c.device_id() in b.connected(), what="c connected to b")
        repo = make_repo(tmp_path / "repo", ORIGIN)
        sc = register(c, repo, task="old news")
        wait_for(lambda: sc["session_id"] in _session_ids(b), what="c's session on b")
        time.sleep(6.5)  # c's latest frame, held by b, is now older than the 5 s limit
        a.add_peer(b)
        wait_for(lambda: sc["session_id"] in _session_ids(a), what="c's session on a")
        time.sleep(0.5)
        for n in (a, b, c):
            assert "differs from ours" not in n.log(), n.name
    finally:
        for n in (a, b, c):
            n.stop()


def test_wall_clock_jumps_neither_expire_nor_prolong(tmp_path: Path) -> None:
    """SPEC-004 §1, §2.6, §8.6: a running node's wall clock steps a day forward, then a day
    back. Forward: no session expires, no lease is released. Back: a silent session still
    expires after expires_after_s and a short lease still runs out on time."""
    (a,) = make_mesh(tmp_path, ["a"])
    configure(a, heartbeat_s=0.5, expires_after_s=3, lease_sweep_s=0.5)
    clock = tmp_path / "a-clock"
    _skewed(a, clock, 0)
    a.start()
    try:
        repo = make_repo(tmp_path / "repo", ORIGIN)
        s1 = register(a, repo, task="long run")
        status, lease = _lease(a, s1, "src/**", ttl_s=900)
        assert status == 201
        clock.write_text(str(DAY))
        time.sleep(1.0)
        assert api(a, "GET", f"/v1/sessions/{s1['session_id']}")[0] == 200
        assert lease["id"] in _leases(a), "a forward jump released a 900 s lease"

        s2 = register(a, repo, task="goes silent")
        status, short = _lease(a, s2, "docs/**", ttl_s=1)
        assert status == 201
        clock.write_text(str(-DAY))
        wait_for(lambda: short["id"] not in _leases(a), timeout=3,
                 what="a 1 s lease to run out after the clock stepped back")
        wait_for(lambda: api(a, "GET", f"/v1/sessions/{s2['session_id']}")[0] == 404,
                 timeout=6, what="a silent session to expire after the clock stepped back")
    finally:
        a.stop()
