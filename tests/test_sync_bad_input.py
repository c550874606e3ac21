"""Hostile input to a real node: every bad message is refused, nothing of it is stored, and the
mesh keeps working (SPEC-005).

One module-scoped mesh of two honest node processes ("a", the founder and the victim every
hostile client talks to, and "b", dialling a) is set up with the real CLI. Before they start,
the founder's key (read from a's data dir) endorses a "hostile member" key that the tests use
to relay crafted frames, and endorses then revokes a "stolen laptop" key with a per-document
cutoff. Each test opens its own hostile connection (tests/hostile.py: a real handshake, then
frames written by hand) and, after the bad input, checks in the same order:

1. the node answered with the defined reject/error code (or closed with the defined reason);
2. nothing of the bad message is in either node's store (read-only LMDB, while running), in
   its /v1/memory list, or in its loaded document (GET /v1/memory/{id}); after the module, with
   the processes stopped, both stores are opened with crdt.store.Store and checked again;
3. both nodes still serve /health (API and peer listener) and token-authenticated /v1/status;
4. the two honest nodes still converge: a write on each appears on the other.

Every check of 2-4 is SPEC-005 005.6.3 (a rejected message leaves nothing stored) and 005.11.2
(the node keeps serving). Reject and error frames are named "reject" and "error" here, as the
node sends them; SPEC-005 005.11.1 names both "err" (a difference reported, not changed).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSMsgType
from automerge.core import ROOT, Document, ObjType, ScalarType

from crdt.batches import SignedBatch
from crdt.chunks import (
    MAGIC,
    ChangeInfo,
    changes_message,
    parse_change,
    parse_sync_message,
    write_uleb,
)
from crdt.identity import open_repo, record_certs
from crdt.keys import DeviceKey
from crdt.roster import new_endorsement, new_tombstone
from crdt.store import Store
from tests.hostile import (
    NodeClosed,
    StoreView,
    chunks_of,
    entry_changes,
    handshake,
    hashes_of,
    hello_frame,
    hostile_peer,
    pack,
    raw_socket,
    sign,
    sync_frame,
)
from tests.nodes import NodeProc, cli_out, make_mesh, wait_for

pytestmark = pytest.mark.slow

# Limits as SPEC-005 states them (not read from the code under test, so a changed limit fails).
MAX_FRAME = 8 << 20  # 005.9.10: a plaintext frame is at most 8 MiB
HANDSHAKE_TIMEOUT = 5.0  # 005.9.6
FRAME_BURST = 2000  # 005.9.10: 500 frames/s with a burst of 2,000
REVOKED_DOC = "memory/note/2001-03/0"
CUTOFF = 2  # the stolen laptop's changes 1..CUTOFF in REVOKED_DOC predate its revocation


def doc_for(case: int, bucket: int = 0) -> str:
    """A document no honest write touches (January 2001), one per test case."""
    return f"memory/note/2001-{case:02d}/{bucket}"


def entry_for(case: int, bucket: int = 0) -> str:
    """An entry id that lives in doc_for(case, bucket) (SPEC-005 005.10.1: bucket = index of
    the first random character in the base32 alphabet, modulo 8)."""
    return f"note-2001{case:02d}-{'ABCDEFGH'[bucket]}AAAAAAAAA"


@dataclass
class Mesh:
    victim: NodeProc  # "a": founder; every hostile client connects here
    honest: NodeProc  # "b": an honest member connected to a
    victim_key: DeviceKey
    honest_key: DeviceKey
    mesh_id: bytes
    certs: list[bytes]  # every certificate of the mesh, as a member presents them
    member: DeviceKey  # endorsed member key the hostile client uses to relay
    revoked: DeviceKey  # endorsed, then revoked with its head CUTOFF in REVOKED_DOC
    rude: DeviceKey  # a member that gets itself disconnected (and refused for a while)
    flooder: DeviceKey  # likewise, by flooding
    dropper: DeviceKey  # fills documents nobody sees, dropped by the owner (and cut off)
    bad: list[tuple[str, list[bytes]]] = field(default_factory=list)  # never to be stored
    laptop_changes: list[ChangeInfo] = field(default_factory=list)  # the revoked laptop's

    @property
    def peer_port(self) -> int:
        """Where the victim accepts peers: its peer listener, if it has its own."""
        return getattr(self.victim, "peer_port", 0) or self.victim.port


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("bad-input")
    a, b = make_mesh(root, ["a", "b"])
    founder = DeviceKey.load(a.data_dir / "keys" / "device.key")
    b_key = DeviceKey.load(b.data_dir / "keys" / "device.key")
    member, revoked = DeviceKey.generate(), DeviceKey.generate()
    rude, flooder, dropper = DeviceKey.generate(), DeviceKey.generate(), DeviceKey.generate()
    # The stolen laptop's entry: two changes before its revocation, one after (case 3).
    laptop_changes = entry_changes(
        revoked, entry_for(3), ["written before revocation", "edited before revocation",
                                "HOSTILE written after revocation"],
    )
    store = Store(a.data_dir)
    try:
        repo = open_repo(store, founder)
        mesh_id = repo.mesh_id
        new = [
            new_endorsement(founder, mesh_id, member.public_key, "hostile-member"),
            new_endorsement(founder, mesh_id, revoked.public_key, "stolen-laptop"),
            new_endorsement(founder, mesh_id, rude.public_key, "rude-member"),
            new_endorsement(founder, mesh_id, flooder.public_key, "flooding-member"),
            new_endorsement(founder, mesh_id, dropper.public_key, "dropping-member"),
            new_tombstone(
                founder, mesh_id, revoked.public_key,
                {REVOKED_DOC: [(revoked.public_key, CUTOFF, laptop_changes[CUTOFF - 1].hash)]},
                reason="stolen",
            ),
        ]
        record_certs(repo, new)
        certs = [c.encode() for c in repo.roster.certs.values()]
        assert repo.roster.is_member(member.public_key)
        assert not repo.roster.is_member(revoked.public_key)
        cut = repo.roster.revoked[revoked.public_key][REVOKED_DOC][revoked.public_key]
        assert (cut.seq, cut.hash) == (CUTOFF, laptop_changes[CUTOFF - 1].hash)
    finally:
        store.close()
    store = Store(b.data_dir)  # b holds the same roster from its first start
    try:
        record_certs(open_repo(store, b_key), new)
    finally:
        store.close()
    m = Mesh(a, b, founder, b_key, mesh_id, certs, member, revoked, rude, flooder, dropper,
             laptop_changes=laptop_changes)
    try:
        a.start()
        b.start()
        b.add_peer(a)
        wait_for(lambda: a.connected() and b.connected(), what="a and b connected")
        yield m
    finally:
        a.stop()
        b.stop()
    # After the processes are gone, the real Store agrees: no bad change was ever stored.
    for node in (a, b):
        store = Store(node.data_dir)
        try:
            for doc_id, hashes in m.bad:
                assert not store.known_hashes(doc_id, hashes), (node.name, doc_id)
        finally:
            store.close()


# -- checks every test makes -------------------------------------------------------------------
def run(coro):
    return asyncio.run(coro)


def assert_not_stored(
    mesh: Mesh, doc_id: str, hashes: list[bytes], texts: list[str], *, new_doc: bool = True,
    entry_id: str | None = None,
) -> None:
    """Nothing of a bad message reached either store, either node's memory list, or (via
    GET /v1/memory/{id}, which reads the loaded document) either node's memory."""
    assert hashes
    mesh.bad.append((doc_id, hashes))
    for node in (mesh.victim, mesh.honest):
        view = StoreView(node.data_dir)
        assert view.known(doc_id, hashes) == set(), f"{node.name} stored a rejected change"
        if new_doc:
            assert doc_id not in view.doc_ids(), f"{node.name} created {doc_id}"
        listed = " | ".join(e["text"] for e in node.entries())
        for text in texts:
            assert text not in listed, f"{node.name} lists {text!r}"
        if entry_id is not None and new_doc:
            assert node.entry(entry_id) is None, f"{node.name} holds {entry_id} in memory"


def assert_mesh_still_works(mesh: Mesh, label: str) -> None:
    """Both nodes alive and answering; the honest pair still syncs both ways."""
    for node, key in ((mesh.victim, mesh.victim_key), (mesh.honest, mesh.honest_key)):
        assert node.proc is not None and node.proc.poll() is None, f"{node.name} died"
        assert node.request("GET", "/health", auth=False) == {"status": "ok"}
        peer_port = getattr(node, "peer_port", 0)
        if peer_port and peer_port != node.port:  # the peer listener answers /health too
            with urllib.request.urlopen(f"http://127.0.0.1:{peer_port}/health", timeout=10) as r:
                assert json.loads(r.read()) == {"status": "ok"}
        assert node.request("GET", "/v1/status")["device_id"] == key.device_id
    with pytest.raises(urllib.error.HTTPError) as unauthenticated:
        mesh.victim.request("GET", "/v1/status", auth=False)
    assert unauthenticated.value.code == 401  # /v1/status really is the authenticated route
    # One direction at a time: two nodes creating the same new shard concurrently lose one
    # side's entry from view (node/memory/entries.py creates ROOT["entries"] on both;
    # reported), which is not what these tests are about.
    from_b = mesh.honest.add_memory(f"honest write on b after {label}")["id"]
    wait_for(lambda: mesh.victim.entry(from_b) is not None, timeout=20,
             what=f"b's write reaches a after {label}")
    from_a = mesh.victim.add_memory(f"honest write on a after {label}")["id"]
    wait_for(lambda: mesh.honest.entry(from_a) is not None, timeout=20,
             what=f"a's write reaches b after {label}")


def peer_state(node: NodeProc, key: DeviceKey) -> dict:
    peers = node.request("GET", "/v1/peers")["peers"]
    return next(p for p in peers if p.get("device_id") == key.device_id)


def flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


def _document_chunk(key: DeviceKey, entry_id: str, text: str) -> bytes:
    """A whole saved document (chunk type 0), which is never a change."""
    doc = Document(actor_id=key.public_key)
    with doc.transaction() as tx:
        entries = tx.put_object(ROOT, "entries", ObjType.Map)
        tx.put(tx.put_object(entries, entry_id, ObjType.Map), "text", ScalarType.Str, text)
    saved = bytes(doc.save())
    assert saved[:4] == MAGIC and saved[8] == 0
    return saved


def is_reject(frame: dict, doc: str | None, code: str) -> bool:
    return frame.get("t") == "reject" and frame.get("doc") == doc and frame.get("code") == code


# -- 1. forged signatures ----------------------------------------------------------------------
def test_forged_batch_signature_is_rejected(mesh: Mesh) -> None:
    """SPEC-005 005.4.1, 005.4.4, 005.6.1 b/d, 005.6.3, 005.11.2: a batch whose signature bytes
    were altered is rejected "bad_signature"; so is a member's valid batch over a change another
    device authored (005.4.4: the signer must be the change's actor); a change with no batch is
    "unsigned". Nothing of them is stored, and the same session then still accepts a correctly
    signed change (the control that shows these frames fail only for their defect)."""
    doc = doc_for(1)
    changes = entry_changes(mesh.member, entry_for(1), ["HOSTILE forged signature"])
    good = sign(mesh.member, mesh.mesh_id, doc, changes)
    forged = replace(good, signature=flip(good.signature, 17))
    assert good.signature_valid() and not forged.signature_valid()
    someone = DeviceKey.generate()
    theirs = entry_changes(someone, entry_for(1), ["HOSTILE authored by someone else"])
    member_signs_theirs = sign(mesh.member, mesh.mesh_id, doc, theirs)
    control_doc = doc_for(1, 1)
    control = entry_changes(mesh.member, entry_for(1, 1), ["honest write by the member"])
    view = StoreView(mesh.victim.data_dir)

    async def scenario():
        async with hostile_peer(mesh.peer_port, mesh.member, mesh.mesh_id, mesh.certs) as p:
            await p.send(sync_frame(doc, chunks_of(changes), [forged]))
            forged_answer = await p.answer()
            await p.send(sync_frame(doc, chunks_of(theirs), [member_signs_theirs]))
            impersonation_answer = await p.answer()
            await p.send(sync_frame(doc, chunks_of(changes), []))
            unsigned_answer = await p.answer()
            batch = sign(mesh.member, mesh.mesh_id, control_doc, control)
            await p.send(sync_frame(control_doc, chunks_of(control), [batch]))
            async with asyncio.timeout(10):
                while not view.known(control_doc, hashes_of(control)):
                    await asyncio.sleep(0.05)
            return forged_answer, impersonation_answer, unsigned_answer

    forged_answer, impersonation_answer, unsigned_answer = run(scenario())
    assert is_reject(forged_answer, doc, "bad_signature"), forged_answer
    assert is_reject(impersonation_answer, doc, "bad_signature"), impersonation_answer
    assert "signed by another device" in impersonation_answer["detail"]
    assert is_reject(unsigned_answer, doc, "unsigned"), unsigned_answer
    state = peer_state(mesh.victim, mesh.member)
    assert state["messages_rejected"] >= 3 and state["changes_accepted"] >= 1
    assert_not_stored(
        mesh, doc, hashes_of(changes + theirs),
        ["HOSTILE forged signature", "HOSTILE authored by someone else"], entry_id=entry_for(1),
    )
    assert_mesh_still_works(mesh, "forged signatures")


# -- 2. signers outside the roster -------------------------------------------------------------
def test_outsider_key_is_refused_at_the_handshake(mesh: Mesh) -> None:
    """SPEC-005 005.9.2, 005.9.8, 005.9.11, 005.5.4: a device key outside the roster is
    refused: with another mesh id the handshake itself fails (close 1008 "wrong_mesh"); with the
    right mesh id it proves its key, then gets {"t": "error", "code": "not_member"} and close
    1008 "not_member". A sync frame it sends at once is never processed, and the
    self-endorsement it presents in AUTH (merged, as 005.9.8 says) does not make it a member."""
    outsider = DeviceKey.generate()
    doc = doc_for(2)
    changes = entry_changes(outsider, entry_for(2), ["HOSTILE outsider direct"])
    frame = sync_frame(doc, chunks_of(changes), [sign(outsider, mesh.mesh_id, doc, changes)])
    self_endorsed = new_endorsement(outsider, mesh.mesh_id, outsider.public_key, "let me in")
    members_before = mesh.victim.request("GET", "/v1/status")["members"]

    async def scenario():
        async with raw_socket(mesh.peer_port) as ws:
            try:
                await handshake(ws, outsider, os.urandom(32), mesh.certs)
            except NodeClosed as refused:
                wrong_mesh = (refused.code, refused.reason)
            else:
                wrong_mesh = None
        async with raw_socket(mesh.peer_port) as ws:
            presented = [*mesh.certs, self_endorsed.encode()]
            peer = await handshake(ws, outsider, mesh.mesh_id, presented)
            with contextlib.suppress(Exception):  # may already be closed: that is fine too
                await peer.send(frame)
            return wrong_mesh, await peer.closed()

    wrong_mesh, (code, reason, frames) = run(scenario())
    assert wrong_mesh == (1008, "wrong_mesh")
    assert [(f["t"], f["code"]) for f in frames] == [("error", "not_member")], frames
    assert (code, reason) == (1008, "not_member")
    assert outsider.device_id not in mesh.victim.connected()
    assert peer_state(mesh.victim, outsider)["last_error"] == "not_member"
    assert mesh.victim.request("GET", "/v1/status")["members"] == members_before
    assert outsider.device_id not in {m["device_id"] for m in members_before}
    assert_not_stored(mesh, doc, hashes_of(changes), ["HOSTILE outsider direct"],
                      entry_id=entry_for(2))
    assert_mesh_still_works(mesh, "outsider handshake")


def test_outsider_changes_relayed_by_a_member_are_rejected(mesh: Mesh) -> None:
    """SPEC-005 005.6.1 e, 005.4.6, 005.5.4: changes validly signed by a device that is not in
    the roster, relayed by an authenticated member, are rejected "unknown_signer": a relay
    cannot launder an outsider's writes."""
    outsider = DeviceKey.generate()
    doc = doc_for(2, 1)
    changes = entry_changes(outsider, entry_for(2, 1), ["HOSTILE outsider relayed"])
    batch = sign(outsider, mesh.mesh_id, doc, changes)
    assert batch.signature_valid()

    async def scenario():
        async with hostile_peer(mesh.peer_port, mesh.member, mesh.mesh_id, mesh.certs) as p:
            await p.send(sync_frame(doc, chunks_of(changes), [batch]))
            return await p.answer()

    answer = run(scenario())
    assert is_reject(answer, doc, "unknown_signer"), answer
    assert outsider.device_id in answer["detail"]
    assert_not_stored(mesh, doc, hashes_of(changes), ["HOSTILE outsider relayed"],
                      entry_id=entry_for(2, 1))
    assert_mesh_still_works(mesh, "relayed outsider changes")


# -- 3. revocation -----------------------------------------------------------------------------
def test_revoked_device_changes_after_the_cutoff_are_rejected(mesh: Mesh) -> None:
    """SPEC-005 005.5.3, 005.5.4, 005.6.1 e, 005.6.3, 005.9.8: a revoked device is refused at
    the door ("revoked", close 1008). Its changes relayed by a member are judged by the
    tombstone's cutoff: a message mixing pre-cutoff changes with change CUTOFF+1 is rejected whole
    ("revoked", nothing stored); the pre-cutoff changes alone are accepted (stored, listed,
    relayed to b); the post-cutoff change alone is rejected "revoked" and never stored."""
    doc, laptop = REVOKED_DOC, mesh.revoked
    changes = mesh.laptop_changes
    assert [c.seq for c in changes] == [1, 2, CUTOFF + 1]
    batches = [sign(laptop, mesh.mesh_id, doc, [c]) for c in changes]  # one per commit
    pre, post = changes[:CUTOFF], changes[CUTOFF:]
    view = StoreView(mesh.victim.data_dir)

    async def scenario():
        async with raw_socket(mesh.peer_port) as ws:
            door = await (await handshake(ws, laptop, mesh.mesh_id, mesh.certs)).closed()
        async with hostile_peer(mesh.peer_port, mesh.member, mesh.mesh_id, mesh.certs) as p:
            await p.send(sync_frame(doc, chunks_of(changes), batches))
            mixed = await p.answer()
            mixed_stored = view.known(doc, hashes_of(changes))
            await p.send(sync_frame(doc, chunks_of(pre), batches[:CUTOFF]))
            async with asyncio.timeout(10):
                while view.known(doc, hashes_of(pre)) != set(hashes_of(pre)):
                    await asyncio.sleep(0.05)
            await p.send(sync_frame(doc, chunks_of(post), batches[CUTOFF:]))
            late = await p.answer()
        return door, mixed, mixed_stored, late

    door, mixed, mixed_stored, late = run(scenario())
    code, reason, frames = door
    assert [(f["t"], f["code"]) for f in frames] == [("error", "revoked")], frames
    assert (code, reason) == (1008, "revoked")
    assert is_reject(mixed, doc, "revoked"), mixed
    assert f"change {CUTOFF + 1} " in mixed["detail"]
    assert mixed_stored == set(), "a rejected message was partly stored"
    assert is_reject(late, doc, "revoked"), late
    assert f"change {CUTOFF + 1} " in late["detail"]
    # The pre-revocation changes are kept, on a and (relayed with their batches) on b.
    entry = mesh.victim.entry(entry_for(3))
    assert entry is not None and entry["text"] == "edited before revocation"
    wait_for(lambda: (mesh.honest.entry(entry_for(3)) or {}).get("text")
             == "edited before revocation", what="b holds the pre-revocation entry")
    assert_not_stored(mesh, doc, hashes_of(post), ["HOSTILE written after revocation"],
                      new_doc=False)
    assert_mesh_still_works(mesh, "revoked device")


# -- 4. replayed signatures --------------------------------------------------------------------
def test_batch_replayed_from_another_document_or_mesh_is_rejected(mesh: Mesh) -> None:
    """SPEC-005 005.4.1, 005.4.7, 005.6.1 b: the signature covers mesh and document, so a
    batch signed for document X sent for Y, or signed for another mesh, is rejected
    "replayed_batch"; relabelling the batch record to Y while keeping X's signature breaks the
    signature ("bad_signature")."""
    doc_y, doc_x = doc_for(4, 0), doc_for(4, 1)
    changes = entry_changes(mesh.member, entry_for(4), ["HOSTILE replayed batch"])
    for_x = sign(mesh.member, mesh.mesh_id, doc_x, changes)
    other_mesh = sign(mesh.member, os.urandom(32), doc_y, changes)
    relabelled = SignedBatch(mesh.mesh_id, doc_y, mesh.member.public_key, for_x.hashes,
                             for_x.signature)
    assert for_x.signature_valid() and other_mesh.signature_valid()

    async def scenario():
        async with hostile_peer(mesh.peer_port, mesh.member, mesh.mesh_id, mesh.certs) as p:
            answers = []
            for batch in (for_x, other_mesh, relabelled):
                await p.send(sync_frame(doc_y, chunks_of(changes), [batch]))
                answers.append(await p.answer())
            return answers

    from_x, from_other_mesh, relabelled_answer = run(scenario())
    assert is_reject(from_x, doc_y, "replayed_batch"), from_x
    assert is_reject(from_other_mesh, doc_y, "replayed_batch"), from_other_mesh
    assert is_reject(relabelled_answer, doc_y, "bad_signature"), relabelled_answer
    assert_not_stored(mesh, doc_y, hashes_of(changes), ["HOSTILE replayed batch"],
                      entry_id=entry_for(4))
    assert_not_stored(mesh, doc_x, hashes_of(changes), [])
    assert_mesh_still_works(mesh, "replayed batches")


# -- 5. bytes that do not match their hash -----------------------------------------------------
def test_change_bytes_not_matching_the_signed_hash_are_rejected(mesh: Mesh) -> None:
    """SPEC-005 005.3.3, 005.3.4, 005.6.1 c/d: a change chunk with one flipped byte fails its
    checksum ("hash_mismatch"); the same tampering with the checksum recomputed is a different
    change whose hash no signed batch covers ("unsigned"); a whole document chunk offered as a
    change is "malformed". None of it is stored."""
    doc = doc_for(5)
    changes = entry_changes(mesh.member, entry_for(5), ["HOSTILE tampered text"])
    original = changes[0].chunk
    assert original[8] == 1, "expected an uncompressed change chunk (type 1)"
    batch = sign(mesh.member, mesh.mesh_id, doc, changes)
    flipped = flip(original, original.index(b"tampered"))
    body = flipped[8:]
    recomputed = MAGIC + hashlib.sha256(body).digest()[:4] + body
    tampered = parse_change(recomputed)  # well-formed, but not what was signed
    assert tampered.hash != changes[0].hash and tampered.actor == mesh.member.public_key
    whole_doc = _document_chunk(mesh.member, entry_for(5), "HOSTILE document chunk")

    async def scenario():
        async with hostile_peer(mesh.peer_port, mesh.member, mesh.mesh_id, mesh.certs) as p:
            await p.send(sync_frame(doc, [flipped], [batch]))
            flipped_answer = await p.answer()
            await p.send(sync_frame(doc, [recomputed], [batch]))
            recomputed_answer = await p.answer()
            await p.send(sync_frame(doc, [whole_doc], [batch]))
            return flipped_answer, recomputed_answer, await p.answer()

    flipped_answer, recomputed_answer, document_answer = run(scenario())
    assert is_reject(flipped_answer, doc, "hash_mismatch"), flipped_answer
    assert is_reject(recomputed_answer, doc, "unsigned"), recomputed_answer
    assert is_reject(document_answer, doc, "malformed"), document_answer
    assert_not_stored(
        mesh, doc, [changes[0].hash, tampered.hash, hashlib.sha256(body).digest()],
        ["HOSTILE tampered text", "HOSTILE uampered text", "HOSTILE document chunk"],
        entry_id=entry_for(5),
    )
    assert_mesh_still_works(mesh, "hash mismatch")


# -- 6. garbage --------------------------------------------------------------------------------
def test_garbage_and_truncated_frames_are_rejected_then_disconnected(mesh: Mesh) -> None:
    """SPEC-005 005.6.1 a, 005.8.4, 005.9.9, 005.11.2, 005.11.3: random bytes as "msg", a
    truncated sync message, a v2 message, a truncated batch record, fields of the wrong type,
    an invalid document id and a non-map frame are each rejected "malformed", an unknown frame
    type "unsupported", and the session goes on through 8 rejections; the 9th within 10 s
    ("more than 8") ends it with {"t": "error", "code": "too_many_rejections"} and close 1008
    "too_many_rejections"."""
    doc = doc_for(6)
    changes = entry_changes(mesh.rude, entry_for(6), ["HOSTILE garbage carrier"])
    batch = sign(mesh.rude, mesh.mesh_id, doc, changes)
    whole = changes_message(chunks_of(changes))
    noise = random.Random(6).randbytes(300)
    good = sync_frame(doc, chunks_of(changes), [batch])
    garbage: list[tuple[object, str | None, str]] = [
        ({**good, "msg": noise}, doc, "malformed"),
        ({**good, "msg": whole[: len(whole) // 2]}, doc, "malformed"),
        ({**good, "msg": b"\x43" + whole[1:]}, doc, "malformed"),  # v2 type byte
        ({**good, "batches": [batch.encode()[:-7]]}, doc, "malformed"),
        ({**good, "msg": "not bytes", "batches": "not a list"}, doc, "malformed"),
        ({**good, "doc": "../identity"}, "../identity", "malformed"),
        ([b"sync", doc, whole], None, "malformed"),
        ({"t": "gossip", "doc": doc}, None, "unsupported"),
    ]
    tolerated = 8  # 005.11.3: more than 8 rejected messages within 10 s disconnect
    assert len(garbage) == tolerated
    last = 42  # the 9th: a frame that is not even a container

    async def scenario():
        async with hostile_peer(mesh.peer_port, mesh.rude, mesh.mesh_id, mesh.certs) as p:
            answers = []
            for frame, _, _ in garbage:
                await p.send(frame)
                answers.append(await p.answer())
            await p.send(last)
            return answers, await p.closed()

    answers, (code, reason, frames) = run(scenario())
    for (frame, doc_named, expected), answer in zip(garbage, answers, strict=True):
        assert is_reject(answer, doc_named, expected), (frame, answer)
    assert [(f.get("t"), f.get("code")) for f in frames if f.get("t") in ("reject", "error")] == [
        ("reject", "malformed"), ("error", "too_many_rejections"),
    ], frames
    assert (code, reason) == (1008, "too_many_rejections")
    assert peer_state(mesh.victim, mesh.rude)["last_error"].startswith("too_many_rejections")
    assert_not_stored(mesh, doc, hashes_of(changes), ["HOSTILE garbage carrier"],
                      entry_id=entry_for(6))
    assert_mesh_still_works(mesh, "garbage frames")


def test_garbage_on_the_encrypted_channel_closes_it(mesh: Mesh) -> None:
    """SPEC-005 005.9.1, 005.9.7, 005.9.11: after the handshake only sealed binary frames
    count. A valid sync
    frame sent unsealed (does not decrypt) closes the channel 1008 "decrypt_failed"; a text
    frame, and a sealed frame whose plaintext is not msgpack, close it 1002 "malformed". The
    valid-looking content is never processed."""
    doc = doc_for(7)
    changes = entry_changes(mesh.member, entry_for(7), ["HOSTILE unsealed frame"])
    frame = sync_frame(doc, chunks_of(changes), [sign(mesh.member, mesh.mesh_id, doc, changes)])
    async def one(action: str):
        async with hostile_peer(mesh.peer_port, mesh.member, mesh.mesh_id, mesh.certs) as p:
            if action == "unsealed":
                await p.send_raw(pack(frame))
            elif action == "text":
                await p.send_raw("a text frame")
            else:
                await p.send_sealed(b"\xc1 this is not msgpack")
            code, reason, frames = await p.closed()
            return code, reason, [f.get("t") for f in frames]

    async def scenario():
        return [await one(a) for a in ("unsealed", "text", "not-msgpack")]

    unsealed, text, not_msgpack = run(scenario())
    assert unsealed[:2] == (1008, "decrypt_failed"), unsealed
    assert text[:2] == (1002, "malformed"), text
    assert not_msgpack[:2] == (1002, "malformed"), not_msgpack
    for _, _, kinds in (unsealed, text, not_msgpack):
        assert not {"reject", "error"} & set(kinds), kinds  # nothing was even parsed
    assert_not_stored(mesh, doc, hashes_of(changes), ["HOSTILE unsealed frame"],
                      entry_id=entry_for(7))
    assert_mesh_still_works(mesh, "channel garbage")


# -- 7. size limits ----------------------------------------------------------------------------
def _deflate_bomb(inflated: int) -> bytes:
    """A compressed (type 2) change chunk that would inflate to ``inflated`` zero bytes."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = packer.compress(b"\0" * inflated) + packer.flush()
    return MAGIC + b"\0\0\0\0" + bytes([2]) + write_uleb(len(data)) + data


def test_oversized_frame_and_inflation_bomb_are_refused(mesh: Mesh) -> None:
    """SPEC-005 005.9.10, 005.9.11, 005.3.2: a frame over the 8 MiB limit closes the channel
    1009 "too_large" before anything in it (here validly signed changes) is processed; a small
    frame whose change chunk inflates past the 64 MiB limit is rejected "malformed" and the
    session continues."""
    doc = doc_for(8)
    changes = entry_changes(mesh.member, entry_for(8), ["HOSTILE oversized frame"])
    batch = sign(mesh.member, mesh.mesh_id, doc, changes)
    oversized = {**sync_frame(doc, chunks_of(changes), [batch]), "pad": b"\0" * MAX_FRAME}
    bomb = _deflate_bomb(65 << 20)
    assert len(bomb) < 1 << 20

    async def scenario():
        async with hostile_peer(mesh.peer_port, mesh.member, mesh.mesh_id, mesh.certs) as p:
            await p.send(sync_frame(doc, [bomb], []))
            bomb_answer = await p.answer(timeout=15)
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                await p.send(oversized)  # the node may cut the connection mid-frame
            return bomb_answer, await p.closed(timeout=15)

    bomb_answer, (code, reason, frames) = run(scenario())
    assert is_reject(bomb_answer, doc, "malformed"), bomb_answer
    assert "size limit" in bomb_answer["detail"]
    assert code == 1009
    # 005.9.11 wants the reason "too_large"; over the WebSocket's own limit aiohttp closes the
    # socket itself (code only) before the transport can name it, so "" is tolerated here.
    assert reason in ("too_large", ""), reason
    assert not [f for f in frames if f.get("t") in ("reject", "error")], frames
    assert_not_stored(mesh, doc, hashes_of(changes), ["HOSTILE oversized frame"],
                      entry_id=entry_for(8))
    assert_mesh_still_works(mesh, "oversized frame")


# -- 8. a handshake that never ends ------------------------------------------------------------
def test_stalled_handshakes_are_closed_within_the_timeout(mesh: Mesh) -> None:
    """SPEC-005 005.9.6, 005.9.11: peers that open the WebSocket and then send nothing, or
    only a HELLO, are closed 1008 "handshake_timeout" within the handshake limit (5 s), while
    the node keeps answering HTTP meanwhile, and none of them becomes a peer."""
    docs_before = StoreView(mesh.victim.data_dir).doc_ids()
    peers_before = len(mesh.victim.request("GET", "/v1/peers")["peers"])

    async def stall(send_hello: bool):
        async with raw_socket(mesh.peer_port) as ws:
            started = time.monotonic()
            if send_hello:
                await ws.send_bytes(hello_frame(mesh.member.public_key, mesh.mesh_id))
            async with asyncio.timeout(HANDSHAKE_TIMEOUT + 3):
                while True:
                    msg = await ws.receive()
                    if msg.type is WSMsgType.CLOSE:
                        return msg.data, msg.extra, time.monotonic() - started
                    if msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR):
                        return ws.close_code, "", time.monotonic() - started

    async def scenario():
        stalls = [asyncio.create_task(stall(i % 2 == 0)) for i in range(10)]
        await asyncio.sleep(1.0)
        during = await asyncio.to_thread(mesh.victim.request, "GET", "/v1/status")
        return during, await asyncio.gather(*stalls)

    during, results = run(scenario())
    assert during["device_id"] == mesh.victim_key.device_id
    for code, reason, elapsed in results:
        assert (code, reason) == (1008, "handshake_timeout")
        assert HANDSHAKE_TIMEOUT - 0.5 <= elapsed <= HANDSHAKE_TIMEOUT + 2.5
    wait_for(lambda: mesh.member.device_id not in mesh.victim.connected(), timeout=5,
             what="the member's connection is gone")
    assert len(mesh.victim.request("GET", "/v1/peers")["peers"]) == peers_before
    assert StoreView(mesh.victim.data_dir).doc_ids() == docs_before
    assert_mesh_still_works(mesh, "stalled handshakes")


def test_connections_waiting_to_prove_membership_are_bounded(mesh: Mesh) -> None:
    """SPEC-005 005.9.10a, found by an attacker's read: aiohttp buffers a whole WebSocket
    message (up to the 8 MiB frame) before the handshake reads it, so a stranger's hundreds of
    connections each holding a 7 MiB "HELLO" held gigabytes. At most 16 connections are
    between upgrade and proven membership; the next is answered 503 before its upgrade, the
    node keeps answering, and a slot is free again once a stalled one times out."""
    from node.transport.gate import MAX_UNPROVEN

    async def scenario():
        held: list[aiohttp.ClientWebSocketResponse] = []
        refused: list[int] = []
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{mesh.peer_port}/v1/peer"
            for _ in range(MAX_UNPROVEN + 4):
                try:
                    held.append(await session.ws_connect(url, compress=0, autoping=False))
                except aiohttp.WSServerHandshakeError as exc:
                    refused.append(exc.status)
            during = await asyncio.to_thread(mesh.victim.request, "GET", "/v1/status")
            for ws in held:
                await ws.close()
            await asyncio.sleep(0.5)  # the node notices the closes and gives the slots back
            later = await session.ws_connect(url, compress=0, autoping=False)
            await later.close()
        return len(held), refused, during

    opened, refused, during = run(scenario())
    assert opened == MAX_UNPROVEN and refused == [503] * 4
    assert during["device_id"] == mesh.victim_key.device_id
    assert_mesh_still_works(mesh, "connections waiting to prove membership")


def test_a_device_signing_two_changes_with_one_number_is_shown_by_status(mesh: Mesh) -> None:
    """SPEC-005 §6.1 f: a second, different change with a number its author already used (a
    copied key, a forked data dir) is refused ``duplicate_seq``; the owner learned it only from
    the log. ``/v1/status`` and ``maia status`` name the device, the document and what to do."""
    doc = doc_for(11)
    first = entry_changes(mesh.member, entry_for(11), ["the member's first change"])
    fork = entry_changes(mesh.member, entry_for(11), ["the same number, other text"])
    assert first[0].seq == fork[0].seq == 1 and first[0].hash != fork[0].hash
    view = StoreView(mesh.victim.data_dir)

    async def scenario():
        async with hostile_peer(mesh.peer_port, mesh.member, mesh.mesh_id, mesh.certs) as p:
            await p.send(sync_frame(doc, chunks_of(first),
                                    [sign(mesh.member, mesh.mesh_id, doc, first)]))
            async with asyncio.timeout(10):
                while not view.known(doc, hashes_of(first)):
                    await asyncio.sleep(0.05)
            await p.send(sync_frame(doc, chunks_of(fork),
                                    [sign(mesh.member, mesh.mesh_id, doc, fork)]))
            return await p.answer()

    answer = run(scenario())
    assert is_reject(answer, doc, "duplicate_seq"), answer
    forked = mesh.victim.request("GET", "/v1/status")["equivocations"]
    (row,) = [r for r in forked if r["device_id"] == mesh.member.device_id]
    assert row["document"] == doc and row["roster"] == "member" and row["refusals"] >= 1
    out = cli_out(mesh.victim.data_dir, "status")
    assert "FORKED" in out and mesh.member.device_id[:15] in out and "revoke" in out
    assert_mesh_still_works(mesh, "a forked member")


# -- 9. flooding -------------------------------------------------------------------------------
def test_flooding_peer_is_disconnected(mesh: Mesh) -> None:
    """SPEC-005 005.9.10, 005.9.11: a member that sends frames faster than the per-connection
    budget (burst 2,000, refilled at 500 frames/s) is told {"t": "error", "code": "flooding"}
    and closed 1008 "flooding", although every frame is a harmless, valid summary."""
    docs_before = StoreView(mesh.victim.data_dir).doc_ids()

    async def scenario():
        async with hostile_peer(mesh.peer_port, mesh.flooder, mesh.mesh_id, mesh.certs) as p:
            summary = await p.next_frame(lambda f: f.get("t") == "summary")
            echo = {"t": "summary", "docs": summary["docs"]}  # "we are in sync": no work
            answer = asyncio.create_task(p.answer(timeout=20))
            sent, started = 0, time.monotonic()
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                while not answer.done() and sent < 50_000:
                    await p.send(echo)
                    sent += 1
                    if sent % 200 == 0:
                        await asyncio.sleep(0)
            error = await answer
            elapsed = time.monotonic() - started
            code, reason, _ = await p.closed()
            return error, sent, elapsed, (code, reason)

    error, sent, elapsed, closed = run(scenario())
    assert (error["t"], error["code"]) == ("error", "flooding"), error
    assert sent > FRAME_BURST  # not cut off for anything the first burst could explain
    assert elapsed < 15
    assert closed == (1008, "flooding")
    assert peer_state(mesh.victim, mesh.flooder)["last_error"].startswith("flooding")
    wait_for(lambda: mesh.flooder.device_id not in mesh.victim.connected(), timeout=5,
             what="the member's connection is gone")
    assert StoreView(mesh.victim.data_dir).doc_ids() == docs_before
    assert_mesh_still_works(mesh, "flood")

    async def comes_back():  # SPEC-005 §11.3: refused for a while after misbehaving
        async with hostile_peer(mesh.peer_port, mesh.flooder, mesh.mesh_id, mesh.certs) as p:
            return await p.answer(timeout=5)

    again = run(comes_back())
    assert (again["t"], again["code"]) == ("error", "backoff"), again


def test_store_view_sees_committed_changes(tmp_path: Path) -> None:
    """The read-only store view sees what crdt.store.Store writes (so "not stored" checks
    above can fail): a committed change is known, an uncommitted one is not."""
    key = DeviceKey.generate()
    store = Store(tmp_path)
    try:
        doc = doc_for(9)
        changes = entry_changes(key, entry_for(9), ["stored"])
        other = entry_changes(key, entry_for(9), ["not stored"])
        batch = sign(key, os.urandom(32), doc, changes)
        info: ChangeInfo = changes[0]
        store.commit_changes(doc, [info], [batch], [info.hash])
    finally:
        store.close()
    view = StoreView(tmp_path)
    assert view.known(doc, hashes_of(changes)) == {info.hash}
    assert view.known(doc, hashes_of(other)) == set()
    assert doc in view.doc_ids()


# -- the roster is shown only to members (SPEC-005 §9.5, §9.8) ------------------------------------
def test_a_stranger_with_the_mesh_id_learns_nothing_of_the_roster(mesh: Mesh) -> None:
    """SPEC-005 005.9.5, 005.9.8: a stranger who knows the mesh id completes the handshake with
    a fresh key and offers a self-made chain. Everything it gets after the HELLOs is the node's
    AUTH, with no certificate in it (it used to carry the whole roster: device and mesh names),
    then one refusal; none of its self-made certificates is stored."""
    stranger, friend = DeviceKey.generate(), DeviceKey.generate()
    fake_chain = [new_endorsement(stranger, mesh.mesh_id, friend.public_key, "friend").encode(),
                  new_endorsement(friend, mesh.mesh_id, stranger.public_key, "me").encode()]
    certs_before = StoreView(mesh.victim.data_dir).cert_ids()

    async def scenario():
        async with raw_socket(mesh.peer_port) as ws:
            peer = await handshake(ws, stranger, mesh.mesh_id, fake_chain)
            return peer.auth_certs, await peer.closed()

    auth_certs, (code, reason, frames) = run(scenario())
    assert auth_certs == []
    assert [(f["t"], f["code"]) for f in frames] == [("error", "not_member")], frames
    assert (code, reason) == (1008, "not_member")
    assert StoreView(mesh.victim.data_dir).cert_ids() == certs_before
    assert_mesh_still_works(mesh, "stranger")


def _cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process ``pid`` so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_certificate_floods_do_not_stall_the_node(mesh: Mesh) -> None:
    """SPEC-005 005.5.1, 005.9.8: eight strangers at once, each with 10,000 certificates in its
    AUTH and 10,000 in its chain frame. Nothing is verified before the peer is known, the chain
    frame is refused as malformed, and /health stays fast throughout (it used to take over
    500 ms while the node checked every signature on its event loop)."""
    junk = []
    for _ in range(10_000):
        k = DeviceKey.generate()
        junk.append(new_endorsement(k, mesh.mesh_id, k.public_key, "junk").encode())
    health = f"{mesh.victim.base}/health"

    def probe() -> float:
        started = time.perf_counter()
        urllib.request.urlopen(health, timeout=10).read()
        return time.perf_counter() - started

    async def flood() -> tuple[int | None, str, list]:
        async with raw_socket(mesh.peer_port) as ws:
            # hostile.handshake puts the certificates in AUTH and in the chain frame.
            peer = await handshake(ws, DeviceKey.generate(), mesh.mesh_id, junk)
            return await peer.closed(timeout=20)

    async def scenario():
        floods = [asyncio.ensure_future(flood()) for _ in range(8)]
        times = []
        while not all(f.done() for f in floods):
            times.append(await asyncio.to_thread(probe))
            await asyncio.sleep(0.01)
        return times, [f.result() for f in floods]

    assert mesh.victim.proc is not None
    pid = mesh.victim.proc.pid
    quiet = max(probe() for _ in range(10))  # this machine's own noise, same run
    cpu_before = _cpu_seconds(pid)
    times, closes = run(scenario())
    cpu = _cpu_seconds(pid) - cpu_before
    assert times, "no /health probe ran during the floods"
    # The node's own CPU for the floods, not wall time: other work on the machine (the other
    # test worker, a benchmark) stretched /health past a wall-clock bound (429 ms once in a
    # full run) though the node did nothing wrong. Checking the 160,000 signatures of the
    # floods costs about 8 s of CPU; receiving and refusing them, a fraction of a second.
    print(f"victim CPU during the floods: {cpu:.2f} s; /health max "
          f"{max(times) * 1000:.0f} ms ({quiet * 1000:.0f} ms quiet)")
    assert cpu < 2.0, f"the victim spent {cpu:.2f} s of CPU on the floods"
    assert max(times) < 2.0 + 3 * quiet, (
        f"/health took up to {max(times) * 1000:.0f} ms during the floods")
    for code, reason, frames in closes:
        assert (code, reason) == (1008, "malformed"), (code, reason, frames)
    assert_mesh_still_works(mesh, "certificate flood")


# -- a Bloom-filter miss is asked for again at once (SPEC-005 §8.6) -----------------------------
def test_a_missing_dependency_is_asked_for_without_waiting_for_another_change(mesh: Mesh) -> None:
    """SPEC-005 005.8.6: a message whose change depends on one the node lacks (an honest
    peer's Bloom filter took it for held) is refused ``missing_dependency``, and the node's
    next message for that document, sent at once, asks for the missing change in ``need``.
    Before the fix the ask waited for some later change of the document: two nodes that
    wrote the same shard at once could stay apart until the next write (a CI failure)."""
    doc, entry = doc_for(12), entry_for(12)
    changes = entry_changes(mesh.member, entry, ["first, as the filter took for held", "second"])
    first, second = changes

    async def scenario():
        async with hostile_peer(mesh.peer_port, mesh.member, mesh.mesh_id, mesh.certs) as p:
            await p.send(sync_frame(doc, [second.chunk], [sign(mesh.member, mesh.mesh_id, doc,
                                                               [second])]))
            refused = await p.answer()
            ask = await p.next_frame(lambda f: isinstance(f, dict) and f.get("t") == "sync"
                                     and f.get("doc") == doc)
            need = parse_sync_message(ask["msg"])[0].need
            # answering the ask, the way an honest peer does, completes the exchange
            await p.send(sync_frame(doc, chunks_of(changes),
                                    [sign(mesh.member, mesh.mesh_id, doc, changes)]))
            return refused, need

    refused, need = run(scenario())
    assert is_reject(refused, doc, "missing_dependency"), refused
    assert first.hash in need
    wait_for(lambda: (mesh.victim.entry(entry) or {}).get("text") == "second", timeout=30,
             what="the entry stored once the missing change came")


def test_a_members_unseen_documents_are_shown_then_dropped_on_one_node(mesh: Mesh) -> None:
    """SPEC-005 §6.6, §6.7 (issue 18.5): documents a member fills with what no reader lists are
    shown as that device's storage, the owner drops them on one node (the API and `maia device
    storage`), the member's copies are then refused `dropped`, a summary that lists them is
    not answered with an ask, the other node keeps its copies, and a member that keeps
    sending its dropped documents is cut off like any misbehaving peer (§11.3)."""
    docs = [doc_for(10, bucket) for bucket in range(3)]
    fresh = doc_for(11, 5)
    dropper = mesh.dropper
    sent = {d: [parse_change(bytes(c.bytes)) for c in _hidden_doc(dropper, d).get_changes([])]
            for d in [*docs, fresh]}

    def frame(d: str) -> dict:
        return sync_frame(d, chunks_of(sent[d]), [sign(dropper, mesh.mesh_id, d, sent[d])])

    async def flood():
        async with hostile_peer(mesh.peer_port, dropper, mesh.mesh_id, mesh.certs) as p:
            for d in docs:
                await p.send(frame(d))

    run(flood())
    for node in (mesh.victim, mesh.honest):
        wait_for(lambda n=node: set(docs) <= set(StoreView(n.data_dir).doc_ids()), timeout=30,
                 what=f"the member's documents stored on {node.name}")

    def dropper_row() -> dict:
        rows = mesh.victim.request("GET", "/v1/devices/storage")["devices"]
        return next(r for r in rows if r["device_id"] == dropper.device_id)

    before = dropper_row()
    assert before["unseen_documents"] == 3 and before["name"] == "dropping-member"
    listed = cli_out(mesh.victim.data_dir, "device", "storage")
    assert dropper.device_id in listed and "3 document(s) nobody sees" in listed

    with pytest.raises(urllib.error.HTTPError) as refused:  # SPEC-003 §6.5: named twice
        mesh.victim.request("POST", f"/v1/devices/{dropper.device_id}/drop-unseen", {})
    assert refused.value.code == 400 and dropper_row()["unseen_documents"] == 3
    dropped = mesh.victim.request("POST", f"/v1/devices/{dropper.device_id}/drop-unseen",
                                   {"confirm": dropper.device_id})
    assert dropped["documents"] == 3 and dropped["bytes"] > 0
    assert not set(docs) & set(StoreView(mesh.victim.data_dir).doc_ids())
    assert set(docs) <= set(StoreView(mesh.honest.data_dir).doc_ids())  # dropping is local
    assert (dropper_row()["unseen_documents"], dropper_row()["bytes"]) == (0, 0)
    assert "Dropped    3 document(s)" in cli_out(mesh.victim.data_dir, "status")

    async def resend():
        async with hostile_peer(mesh.peer_port, dropper, mesh.mesh_id, mesh.certs) as p:
            codes = []
            for d in docs:
                await p.send(frame(d))
                codes.append((await p.answer())["code"])
            await p.send({"t": "summary", "docs": {d: [sent[d][0].hash] for d in [*docs, fresh]}})
            ask = await p.next_frame(lambda f: isinstance(f, dict) and f.get("t") == "sync")
            await p.send({"t": "ping"})
            after = await p.next_frame(lambda f: isinstance(f, dict) and f.get("t") in (
                "pong", "sync", "error"))
            for _ in range(3):  # 9 refusals in all: more than the 8 allowed in 10 s
                for d in docs:
                    await p.send(frame(d))
            _code, reason, frames = await p.closed()
            return codes, ask, after, reason, frames

    codes, ask, after, reason, frames = run(resend())
    assert codes == ["dropped"] * 3
    assert ask["doc"] == fresh  # the one it never held is asked for, the dropped ones are not
    assert after["t"] == "pong"  # nothing more was asked
    assert reason == "too_many_rejections", (reason, frames[-3:])
    assert not set(docs) & set(StoreView(mesh.victim.data_dir).doc_ids())
    assert_mesh_still_works(mesh, "dropping a member's unseen documents")


def _hidden_doc(key: DeviceKey, doc_id: str) -> Document:
    """A valid document of ``key`` that holds no memory entry: no reader lists it."""
    doc = Document(actor_id=key.public_key)
    with doc.transaction() as tx:
        tx.put(ROOT, "x", ScalarType.Str, f"filler for {doc_id}")
    return doc


def test_a_pairing_socket_with_no_window_is_refused_before_its_upgrade(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """SPEC-005 005.9.10a, found by a review: /v1/pair answers on the public pairing mesh, so
    any stranger completes its handshake; with no pairing window ever opened it is now refused
    before the upgrade (nothing of it is read), and a pairing connection keeps its slot of the
    gate while it lasts."""
    (solo,) = make_mesh(tmp_path_factory.mktemp("no-window"), ["solo"])
    solo.start()
    try:
        async def scenario() -> int:
            async with aiohttp.ClientSession() as session:
                try:
                    ws = await session.ws_connect(
                        f"http://127.0.0.1:{getattr(solo, 'peer_port', 0) or solo.port}/v1/pair")
                except aiohttp.WSServerHandshakeError as exc:
                    return exc.status
                await ws.close()
                return 101

        assert run(scenario()) == 409
        assert solo.request("GET", "/v1/status")["device_id"]
    finally:
        solo.stop()
