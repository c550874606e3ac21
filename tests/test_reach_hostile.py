"""Address records between real nodes, with a hostile member (SPEC-005 §12.9-12.11, §9.14).

Two real node processes a and b; a third key is an enrolled member that a test drives from the
wire contract (tests/hostile.py): it publishes records an attacker inside the mesh would, and
the nodes must keep only what §12.10 allows, and pass on only what they kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

import msgpack
import pytest

from crdt.identity import open_repo, record_certs
from crdt.keys import DeviceKey, device_id
from crdt.roster import new_endorsement, new_tombstone
from crdt.store import Store
from node.mesh.addresses import DOMAIN
from tests.hostile import hostile_peer
from tests.nodes import NodeProc, cli_out, make_mesh, wait_for

pytestmark = pytest.mark.slow


@dataclass
class Mesh:
    a: NodeProc
    b: NodeProc
    a_key: DeviceKey
    b_key: DeviceKey
    mesh_id: bytes
    certs: list[bytes]
    member: DeviceKey
    revoked: DeviceKey


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("reach")
    a, b = make_mesh(root, ["a", "b"])
    founder = DeviceKey.load(a.data_dir / "keys" / "device.key")
    b_key = DeviceKey.load(b.data_dir / "keys" / "device.key")
    member, revoked = DeviceKey.generate(), DeviceKey.generate()
    store = Store(a.data_dir)
    try:
        repo = open_repo(store, founder)
        mesh_id = repo.mesh_id
        new = [
            new_endorsement(founder, mesh_id, member.public_key, "hostile-member"),
            new_endorsement(founder, mesh_id, revoked.public_key, "stolen-laptop"),
            new_tombstone(founder, mesh_id, revoked.public_key, {}, reason="stolen"),
        ]
        record_certs(repo, new)
        certs = [c.encode() for c in repo.roster.certs.values()]
    finally:
        store.close()
    store = Store(b.data_dir)
    try:
        record_certs(open_repo(store, b_key), new)
    finally:
        store.close()
    try:
        a.start()
        b.start()
        b.add_peer(a)
        wait_for(lambda: a.connected() and b.connected(), what="a and b connected")
        yield Mesh(a, b, founder, b_key, mesh_id, certs, member, revoked)
    finally:
        a.stop()
        b.stop()


def _record(key: DeviceKey, mesh_id: bytes, addrs: list, *, seq: int, signer: DeviceKey | None
            = None, ttl: int = 3600, on_behalf: bytes | None = None) -> dict[str, bytes]:
    body = msgpack.packb({"v": 1, "mesh": mesh_id, "key": on_behalf or key.public_key,
                          "seq": seq, "exp": int(time.time() + ttl), "addrs": addrs},
                         use_bin_type=True)
    return {"body": body, "sig": (signer or key).sign(DOMAIN + body)}


def _book(node: NodeProc) -> dict[str, list[str]]:
    members = node.request("GET", "/v1/peers")["addresses"]["members"]
    return {m["device_id"]: [a["address"] for a in m["addresses"]] for m in members}


def test_a_hostile_members_records_keep_only_dialable_addresses_and_are_relayed(mesh):
    """005.12.10, 005.12.11: of a member's record only unicast IP literals survive; a record
    claiming another member, one of a revoked key, and an expired one are dropped on a, and b
    (which only hears of them through a) holds exactly what a kept."""
    member_id = device_id(mesh.member.public_key)
    b_id = device_id(mesh.b_key.public_key)
    junk = [["127.0.0.1:7412", "lan"], ["169.254.169.254:80", "lan"], ["224.0.0.251:5353", "lan"],
            ["255.255.255.255:7412", "lan"], ["metadata.internal:80", "address"],
            ["[::1]:7412", "lan"], ["[fe80::1]:7412", "lan"], ["0.0.0.0:7412", "lan"],
            ["10.231.250.9:7412", "tunnel"]]
    b_before = _book(mesh.a).get(b_id)

    async def scenario() -> None:
        async with hostile_peer(mesh.a.peer_port, mesh.member, mesh.mesh_id, mesh.certs) as p:
            await p.send({"t": "addrs", "records": [
                _record(mesh.member, mesh.mesh_id, junk, seq=10),
                # b's name, the hostile key's signature: forged
                _record(mesh.member, mesh.mesh_id, [["10.231.250.66:7412", "lan"]], seq=2**40,
                        on_behalf=mesh.b_key.public_key),
                _record(mesh.revoked, mesh.mesh_id, [["10.231.250.7:7412", "lan"]], seq=5),
                _record(mesh.member, mesh.mesh_id, [["10.231.250.8:7412", "lan"]], seq=11,
                        ttl=-10),
            ]})
            wait = asyncio.to_thread(wait_for, lambda: member_id in _book(mesh.b), 20,
                                     what="b learned the member's record through a")
            await wait

    asyncio.run(scenario())
    assert _book(mesh.a)[member_id] == ["10.231.250.9:7412"]
    assert _book(mesh.b)[member_id] == ["10.231.250.9:7412"]
    revoked_id = device_id(mesh.revoked.public_key)
    assert revoked_id not in _book(mesh.a) and revoked_id not in _book(mesh.b)
    assert _book(mesh.a).get(b_id) == b_before  # nobody can speak for b


def test_an_addrs_frame_above_its_bounds_is_malformed(mesh):
    """005.12.11: more than 512 records is `malformed` (a reject), and the session goes on."""
    async def scenario() -> dict:
        async with hostile_peer(mesh.a.peer_port, mesh.member, mesh.mesh_id, mesh.certs) as p:
            one = _record(mesh.member, mesh.mesh_id, [], seq=1)
            await p.send({"t": "addrs", "records": [one] * 513})
            return await p.answer()

    answer = asyncio.run(scenario())
    assert answer["t"] == "reject" and answer["code"] == "malformed"
    assert mesh.a.request("GET", "/health", auth=False)


def test_an_addrs_frame_of_copies_or_forgeries_is_refused_and_costs_little(mesh):
    """005.12.11: 512 copies of one valid record (each a signature check before) are
    `malformed`; a record with a bad signature is `bad_signature` (both count toward §11.3);
    /health stays fast."""
    async def scenario() -> tuple[dict, dict, float]:
        async with hostile_peer(mesh.a.peer_port, mesh.member, mesh.mesh_id, mesh.certs) as p:
            one = _record(mesh.member, mesh.mesh_id, [], seq=2**41)
            await p.send({"t": "addrs", "records": [one] * 512})
            copies = await p.answer()
            forged = dict(_record(mesh.member, mesh.mesh_id, [], seq=2**42), sig=bytes(64))
            await p.send({"t": "addrs", "records": [forged]})
            bad = await p.answer()
            t0 = time.monotonic()
            await asyncio.to_thread(mesh.a.request, "GET", "/health", auth=False)
            return copies, bad, time.monotonic() - t0

    copies, bad, health = asyncio.run(scenario())
    assert copies["t"] == "reject" and copies["code"] == "malformed"
    assert "two records" in copies["detail"]
    assert bad["t"] == "reject" and bad["code"] == "bad_signature"
    assert health < 1.0


def test_a_silent_peer_is_pinged_then_dropped(mesh):
    """005.9.14: an idle connection is pinged; one that answers nothing for 8 s is closed."""
    async def scenario() -> tuple[bool, float]:
        async with hostile_peer(mesh.a.peer_port, mesh.member, mesh.mesh_id, mesh.certs) as p:
            t0 = time.monotonic()
            pinged = False
            while True:
                try:
                    frame = await p.recv(timeout=30)
                except Exception:
                    return pinged, time.monotonic() - t0
                pinged = pinged or (isinstance(frame, dict) and frame.get("t") == "ping")

    pinged, after = asyncio.run(scenario())
    assert pinged
    assert after < 30  # closed by liveness, not by the test's own 30 s wait


def test_maia_peers_shows_path_and_last_traffic(mesh):
    """Issue 15.5: `maia peers` shows each connection's path and when traffic last arrived;
    the API gives the same with the next retry of a peer that is not connected."""
    out = cli_out(mesh.b.data_dir, "peers")
    line = next(x for x in out.splitlines() if device_id(mesh.a_key.public_key) in x)
    assert "connected via static" in line and "last traffic" in line
    rows = {p["device_id"]: p for p in mesh.a.request("GET", "/v1/peers")["peers"]}
    row = rows[device_id(mesh.b_key.public_key)]
    assert row["path"] == "incoming" and row["last_traffic"] and row["next_retry"] is None
