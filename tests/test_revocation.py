"""Revocation on real nodes (SPEC-005 §5): cut off now, refused forever, nothing re-introduces."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.nodes import cli, wait_for


def _ids(node) -> set[str]:
    return {e["id"] for e in node.entries()}


def test_revoked_device_is_cut_off_and_its_new_writes_never_spread(mesh_factory):
    """SPEC-005 §5.4-5.9: after 'maia device revoke', the revoked node is disconnected, its
    later writes reach nobody (also not through a third peer), and it cannot reconnect."""
    a, b, c = mesh_factory("a", "b", "c")
    b.add_peer(a)
    c.add_peer(a)
    c.add_peer(b)
    wait_for(lambda: len(a.connected()) == 2 and len(b.connected()) == 2, what="full mesh")
    before = c.add_memory("c before revocation")["id"]
    wait_for(lambda: before in _ids(a) and before in _ids(b), what="c's early write spread")
    c_id = c.device_id()

    # SPEC-003 §6.5: revoking cannot be undone, so the body names the device again
    for body in ({"reason": "stolen"}, {"reason": "stolen", "confirm": b.device_id()}):
        code, problem = _problem(a, "POST", f"/v1/devices/{c_id}/revoke", body)
        assert code == 400 and problem["status"] == 400, problem
    assert c_id in a.connected()
    res = a.request("POST", f"/v1/devices/{c_id}/revoke", {"reason": "stolen", "confirm": c_id})
    assert res["revoked"]
    wait_for(lambda: c_id not in a.connected() and c_id not in b.connected(),
             what="c disconnected by a and (after the tombstone synced) by b")
    # c was told (with the signed tombstone) and refuses to write at all; a modified client
    # writing anyway is refused by every member (tests/test_sync_bad_input.py, revocation)
    code, problem = _problem(c, "POST", "/v1/memory", {"text": "c after revocation"})
    assert code == 403 and problem["type"] == "urn:maia-node:problem:device-revoked"
    time.sleep(2.0)  # c keeps redialling a and b meanwhile
    assert before in _ids(a) and before in _ids(b)  # pre-revocation work stays
    assert c_id not in a.connected() and c_id not in b.connected()
    devices = {d["device_id"]: d for d in b.request("GET", "/v1/devices")["devices"]}
    assert devices[c_id]["status"] == "revoked"
    peers = {p["device_id"]: p for p in a.request("GET", "/v1/peers")["peers"]}
    assert peers[c_id]["last_error"] in ("revoked", "revoked: removed from mesh")


def test_revoked_device_cannot_be_reintroduced(mesh_factory):
    """SPEC-005 §5.5: a member endorsing the revoked key again does not readmit it."""
    a, c = mesh_factory("a", "c")
    c.add_peer(a)
    wait_for(lambda: a.connected(), what="connected")
    c_id = c.device_id()
    a.request("POST", f"/v1/devices/{c_id}/revoke", {"confirm": c_id})
    wait_for(lambda: not a.connected(), what="c cut off")
    # a second revocation is refused (SPEC-005 §5.7)
    import urllib.error
    try:
        a.request("POST", f"/v1/devices/{c_id}/revoke", {"confirm": c_id})
        raise AssertionError("a second tombstone was issued")
    except urllib.error.HTTPError as exc:
        assert exc.code == 409
    # re-enrolling the same key through a join request is refused too
    from tests.nodes import cli_out
    request = cli_out(c.data_dir.parent / "c", "device", "request") if False else None
    del request
    from crdt.identity import join_request
    from crdt.keys import DeviceKey
    key = DeviceKey.load(c.data_dir / "keys" / "device.key")
    try:
        a.request("POST", "/v1/devices", {"request": join_request(key), "name": "again"})
        raise AssertionError("a revoked key was enrolled again")
    except urllib.error.HTTPError as exc:
        assert exc.code == 400
    time.sleep(1.0)
    assert not a.connected()


def test_changes_accepted_before_the_tombstone_arrived_are_quarantined(mesh_factory):
    """SPEC-005 §5.10: b accepted c's write while partitioned from a; when a's tombstone
    (cutoff before that write) reaches b, b drops the write, and a and b converge."""
    a, b, c = mesh_factory("a", "b", "c")
    c.add_peer(b)
    b.add_peer(a)
    wait_for(lambda: len(b.connected()) == 2, what="b connected to a and c")
    first = c.add_memory("c first")["id"]
    wait_for(lambda: first in _ids(a), what="c's first write reached a via b")
    b.stop()  # partition: a cannot tell b
    c_id = c.device_id()
    a.request("POST", f"/v1/devices/{c_id}/revoke", {"confirm": c_id})
    c.stop()
    assert cli(c.data_dir, "memory", "add", "c sneaks one in") == 0
    sneaky = None
    # b meets c first (a is unreachable for b because b dials a only after start; keep a away)
    a.stop()
    b.start()
    c.start()
    sneaky = next(e["id"] for e in c.entries() if e["text"] == "c sneaks one in")
    wait_for(lambda: sneaky in _ids(b), what="b accepted c's write (no tombstone known yet)")
    a.start()
    wait_for(lambda: c_id not in b.connected(), timeout=20, what="b learnt the tombstone")
    wait_for(lambda: sneaky not in _ids(b), timeout=20, what="b quarantined the late write")
    wait_for(lambda: _ids(a) == _ids(b), what="a and b converge")
    assert first in _ids(b)
    st = b.request("GET", "/v1/status")
    assert st["device_id"]


def _problem(node, method: str, path: str, body=None) -> tuple[int, dict]:
    import json
    import urllib.error

    try:
        node.request(method, path, body)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    raise AssertionError(f"{method} {path} succeeded on a revoked device")


@pytest.mark.parametrize("online", [True, False], ids=["connected", "offline-then-dials"])
def test_a_revoked_device_is_told_and_refuses_to_write(mesh_factory, online):
    """Issue 15.6, SPEC-005 §9.8: whether it was connected when revoked or dials in later,
    the revoked device receives the signed tombstone, verifies it, and then says on every
    command and in its status who revoked it and when, and refuses new writes with that
    sentence (403 device-revoked; the CLI exits 1 with it)."""
    a, c = mesh_factory("a", "c")
    c.add_peer(a)
    wait_for(lambda: a.connected(), what="connected")
    a_id, c_id = a.device_id(), c.device_id()
    if not online:
        c.stop()
    a.request("POST", f"/v1/devices/{c_id}/revoke", {"reason": "left on a train", "confirm": c_id})
    if not online:
        c.start()
    status = wait_for(lambda: c.request("GET", "/v1/status").get("revoked"), timeout=20,
                      what="c to learn it was revoked")
    assert status["by"] == a_id and status["by_name"] == "a"
    assert status["reason"] == "left on a train" and status["at"]
    code, problem = _problem(c, "POST", "/v1/memory", {"text": "after the revocation"})
    assert code == 403 and problem["type"] == "urn:maia-node:problem:device-revoked"
    assert "this device was revoked by a" in problem["detail"]
    out = subprocess.run(
        [sys.executable, "-m", "node.cli", "--data-dir", str(c.data_dir), "memory", "add", "x"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "this device was revoked by a" in out.stderr, out
    listed = subprocess.run(
        [sys.executable, "-m", "node.cli", "--data-dir", str(c.data_dir), "status"],
        capture_output=True, text=True, timeout=60)
    assert "REVOKED" in listed.stdout and "revoked by a" in listed.stderr, listed


def test_a_stranger_s_tombstone_does_not_make_a_device_believe_it_is_revoked(tmp_path):
    """Issue 15.6: the proof a refusal carries is verified like any certificate, so a
    tombstone signed by a key outside the mesh changes nothing and the device still writes."""
    from automerge.core import ROOT, ScalarType

    from crdt.keys import DeviceKey
    from crdt.roster import new_tombstone
    from tests.trust_helpers import NOTE_DOC, Device

    device = Device.found(tmp_path, "laptop")
    stranger = DeviceKey.generate()
    forged = new_tombstone(stranger, device.repo.mesh_id, device.key.public_key, {},
                           reason="you are out")
    device.repo.add_certs([forged.encode()])
    assert device.repo.roster.revocation(device.key.public_key) is None
    device.repo.change(NOTE_DOC, lambda tx: tx.put(ROOT, "still", ScalarType.Str, "writes"))
    device.close()


async def test_a_member_s_control_characters_in_a_tombstone_do_not_take_the_api_down(tmp_path):
    """SPEC-003 003.10.4, found by an attacker's read: a revoked device says who revoked it on
    every answer (``X-Maia-Device-Revoked``), from the tombstone's signed ``at`` and the
    issuer's name; a thief that revoked the owner's device first with ``at = "...\\r\\n..."``
    made the HTTP server refuse every response, ``/health`` included. The value is
    percent-encoded, the answer goes out, and the CLI reads the words back."""
    from types import SimpleNamespace
    from urllib.parse import unquote

    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from crdt.roster import _issue, now_iso
    from node.node import Node
    from tests.trust_helpers import Device

    home = Device.found(tmp_path, "home")
    thief = home.admit(tmp_path, "thief")
    try:
        body = {"t": "revoke", "v": 2, "mesh": home.repo.mesh_id,
                "subject": home.key.public_key, "issuer": thief.key.public_key,
                "at": now_iso() + "\r\nX-Injected: 1", "cutoff": {}, "kept": [], "reason": ""}
        home.repo.add_certs([_issue(thief.key, body).encode()])
        assert home.repo.roster.revocation(home.key.public_key) is not None
        node = SimpleNamespace(repo=home.repo, key=home.key)

        async def health(_request: web.Request) -> web.Response:
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_get("/health", health)
        app.on_response_prepare.append(
            lambda request, response: Node._say_if_revoked(node, request, response))
        async with TestClient(TestServer(app)) as client:
            resp = await client.get("/health")
            assert resp.status == 200 and (await resp.json()) == {"ok": True}
            said = resp.headers["X-Maia-Device-Revoked"]
            assert "X-Injected" not in resp.headers
            assert "\r" not in said and "\n" not in said
            assert unquote(said).endswith("\r\nX-Injected: 1") and "by " in unquote(said)
    finally:
        home.close()
        thief.close()
