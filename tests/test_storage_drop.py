"""A member's documents that nobody sees: shown per device, dropped by the owner on one node,
kept dropped while only that device writes to them, and taken back as soon as anyone else's
work needs them (SPEC-005 §6.6, §6.7; issue 18.5). Real stores and the real sync protocol, in
process (tests/trust_helpers.py); the flooder holds a member key and signs what it likes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from automerge.core import ROOT, Document, ScalarType

from crdt.batches import SignedBatch
from crdt.chunks import ChangeInfo, parse_change
from crdt.identity import accept_invitation, enrol_device, revoke_device
from crdt.keys import DeviceKey
from crdt.store import Store
from crdt.sync import MAX_PART_BYTES, PeerSync
from crdt.verify import Rejected
from node.devices.storage import CannotDrop, drop_unseen, storage_by_device
from node.memory.entries import Memory
from node.memory.ids import EntryNotFound, shard_of
from tests.trust_helpers import Device, one_change, pump, receive_signed

JUNK = [f"memory/note/2026-0{m}/3" for m in range(1, 4)]


@pytest.fixture
def mesh(tmp_path: Path):
    founder = Device.found(tmp_path, "founder")
    flooder = founder.admit(tmp_path, "flooder")
    honest = founder.admit(tmp_path, "honest")
    pump(founder, flooder)
    pump(founder, honest)
    yield founder, flooder, honest
    for d in (founder, flooder, honest):
        d.close()


def _junk(actor: bytes, text: str) -> list[ChangeInfo]:
    """A first change in a new document that holds no memory entry: seen by no reader."""
    return one_change(actor, text, field="x")


def _receive(dev: Device, doc_id: str, author: Device, changes: list[ChangeInfo]) -> None:
    receive_signed(dev, doc_id, author.key, changes)


def _flood(founder: Device, flooder: Device) -> dict[str, list[ChangeInfo]]:
    sent = {doc_id: _junk(flooder.repo.actor, f"junk {doc_id}") for doc_id in JUNK}
    for doc_id, changes in sent.items():
        _receive(founder, doc_id, flooder, changes)
    return sent


def _row(rows: list[dict], dev: Device) -> dict:
    return next(r for r in rows if r["device_id"] == dev.key.device_id)


def test_unseen_documents_are_shown_and_dropped_while_seen_ones_stay(mesh):
    founder, flooder, _ = mesh
    seen = Memory(flooder.repo).add("a note the flooder wrote, which everyone lists")
    pump(founder, flooder)
    _flood(founder, flooder)
    memory = Memory(founder.repo)
    before = _row(storage_by_device(founder.repo, memory), flooder)
    assert (before["unseen_documents"], before["documents_alone"]) == (3, 4)
    assert before["roster"] == "member" and before["name"] == "flooder"

    result = drop_unseen(founder.repo, memory, flooder.key.device_id)

    assert result["documents"] == 3 and result["bytes"] > 0
    held = set(founder.store.doc_ids())
    assert not held & set(JUNK)
    assert memory.get(seen["id"])["text"].startswith("a note the flooder wrote")
    after = _row(storage_by_device(founder.repo, memory), flooder)
    assert after["unseen_documents"] == 0 and after["bytes"] == before["bytes"] - result["bytes"]
    assert founder.store.quarantine_counts() == {"changes": 0, "documents": 0,
                                                 "dropped_documents": 3}  # for maia status
    for doc_id in JUNK:  # every row of the document went, its tombstone stayed
        assert founder.store.doc_meta(doc_id) is None
        assert founder.store.load_doc(doc_id) == (b"", [])
        assert founder.store.doc_actors(doc_id) == {}
        assert founder.store.dropped_keys(doc_id) == {flooder.key.public_key}


def test_a_dropped_document_is_refused_from_its_author_and_not_asked_for(mesh):
    founder, flooder, _ = mesh
    sent = _flood(founder, flooder)
    drop_unseen(founder.repo, Memory(founder.repo), flooder.key.device_id)

    with pytest.raises(Rejected) as caught:  # the same changes again, or new ones by its author
        _receive(founder, JUNK[0], flooder, sent[JUNK[0]])
    assert caught.value.code == "dropped"
    with pytest.raises(Rejected):
        _receive(founder, JUNK[1], flooder, _junk(flooder.repo.actor, "more"))
    assert not set(founder.store.doc_ids()) & set(JUNK)
    # a peer's summary that lists them does not make this node ask for them
    fresh = "memory/note/2026-05/3"
    summary = {"t": "summary", "docs": {JUNK[0]: [sent[JUNK[0]][0].hash], fresh: [b"\x01" * 32]}}
    asked = PeerSync(founder.repo, flooder.key.public_key).docs_to_sync(summary)
    assert fresh in asked and not set(asked) & set(JUNK)


def test_anothers_change_makes_a_dropped_document_shared_work_again(mesh):
    """The drop must never keep this node apart from the mesh: when an honest member writes
    into a dropped document (on top of the flooder's changes), the node takes it whole."""
    founder, flooder, honest = mesh
    sent = _flood(founder, flooder)
    for doc_id, changes in sent.items():
        _receive(honest, doc_id, flooder, changes)
    drop_unseen(founder.repo, Memory(founder.repo), flooder.key.device_id)
    honest.write("note-202601-DAAAAAAAAA", "honest work", JUNK[0])

    pump(founder, honest)

    assert founder.read("note-202601-DAAAAAAAAA", JUNK[0]) == "honest work"
    assert founder.repo.open(JUNK[0]).doc.get(ROOT, "x")[0][1] == f"junk {JUNK[0]}"
    assert not founder.store.dropped_keys(JUNK[0])
    assert "dropped" in founder.rejects  # the flooder-only documents stayed dropped
    assert not set(founder.store.doc_ids()) & set(JUNK[1:])


def test_the_owner_cannot_drop_its_own_documents(mesh):
    founder, _, _ = mesh
    with pytest.raises(CannotDrop):
        drop_unseen(founder.repo, Memory(founder.repo), founder.key.device_id)
    with pytest.raises(ValueError, match="own"):
        founder.repo.drop_documents(["memory/note/2026-01/3"], [founder.key.public_key])


def test_a_document_with_another_authors_changes_is_never_dropped(mesh):
    founder, flooder, honest = mesh
    _flood(founder, flooder)
    _receive(founder, JUNK[0], honest, _junk(honest.repo.actor, "honest junk"))
    with pytest.raises(ValueError, match="other devices"):
        founder.repo.drop_documents([JUNK[0]], [flooder.key.public_key])
    # the rule the owner's command follows leaves the shared one alone
    assert drop_unseen(founder.repo, Memory(founder.repo),
                       flooder.key.device_id)["documents"] == 2
    assert JUNK[0] in founder.store.doc_ids()


# -- found by an attacker's review of the first version (each failed then) --------------------
def _bulk(actor: bytes, n: int, size: int) -> list[ChangeInfo]:
    """``n`` changes of ``size`` random bytes each in one new document, no memory entry."""
    doc = Document(actor_id=actor)
    for i in range(n):
        with doc.transaction() as tx:
            tx.put(ROOT, f"x{i}", ScalarType.Bytes, os.urandom(size))
    return [parse_change(bytes(c.bytes)) for c in doc.get_changes([])]


def _like_peers(a: Device, b: Device, doc_id: str, steps: int = 30,
                syncs: dict | None = None) -> int:
    """Two PeerSyncs moving frames the way node/mesh/peers.py does: every frame of a
    generate() goes out (parts of a split message included); a refused message is answered
    with a reject (the sender resets); ``missing_dependency`` and an accepted final message
    make the receiver answer. ``a`` starts with a change to announce. Returns bytes sent."""
    if syncs is None:
        syncs = {}
    syncs.setdefault(a.name, PeerSync(a.repo, b.key.public_key))
    syncs.setdefault(b.name, PeerSync(b.repo, a.key.public_key))
    other = {a.name: b, b.name: a}
    dirty = {a.name: True, b.name: False}
    inbox: dict[str, list[dict]] = {a.name: [], b.name: []}
    sent = 0
    for _ in range(steps):
        for dev in (a, b):
            if dirty[dev.name]:
                dirty[dev.name] = False
                for frame in syncs[dev.name].generate(doc_id):
                    inbox[other[dev.name].name].append(frame)
                    sent += len(frame["msg"])
        for dev in (a, b):
            while inbox[dev.name]:
                frame = inbox[dev.name].pop(0)
                if frame["t"] == "reject":
                    syncs[dev.name].reset(doc_id)
                    continue
                try:
                    syncs[dev.name].receive(frame)
                except Rejected as exc:
                    dev.rejects.append(exc.code)
                    inbox[other[dev.name].name].append({"t": "reject", "code": exc.code})
                    if exc.code == "missing_dependency":
                        dirty[dev.name] = True
                    continue
                if frame.get("final", True):
                    dirty[dev.name] = True
        if not any(dirty.values()) and not any(inbox.values()):
            break
    return sent


@pytest.mark.parametrize("megabytes", [3, 6])
def test_honest_work_on_a_dropped_document_split_in_parts_arrives(mesh, megabytes):
    """A dropped document larger than one sync part (4 MiB) arrives split: its first part
    holds only the dropped author's changes and is refused; the part with the honest change
    lifts the drop though its dependencies are missing, and the peer's next message is taken
    whole. Before, that part was refused `missing_dependency` for ever, and the honest nodes
    resent the document at each other in a loop."""
    founder, flooder, honest = mesh
    junk = _bulk(flooder.repo.actor, megabytes, 1 << 20)
    assert (sum(len(c.chunk) for c in junk) > MAX_PART_BYTES) == (megabytes > 4)
    for dev in (founder, honest):
        _receive(dev, JUNK[0], flooder, junk)
    drop_unseen(founder.repo, Memory(founder.repo), flooder.key.device_id)
    honest.write("note-202601-DAAAAAAAAA", "honest work", JUNK[0])

    sent = _like_peers(honest, founder, JUNK[0])

    assert founder.read("note-202601-DAAAAAAAAA", JUNK[0]) == "honest work", founder.rejects
    assert sent < 3 * megabytes * 2**20, f"{sent / 2**20:.0f} MiB sent: a sync loop"


def test_a_devices_shard_of_deleted_notes_is_not_unseen(mesh):
    """A deleted entry can be undeleted: a shard holding only deleted notes is seen (the
    index keeps no row of deleted entries, so it was counted unseen, dropped, and the
    device's later notes in that shard were refused here for the rest of the month)."""
    founder, phone, _ = mesh
    mem = Memory(phone.repo)
    first = mem.add("a note, then deleted")
    shard = shard_of(first["id"])
    mem.delete(first["id"])
    pump(founder, phone)
    fmem = Memory(founder.repo)
    row = next(r for r in storage_by_device(founder.repo, fmem)
               if r["device_id"] == phone.key.device_id)
    assert row["unseen_documents"] == 0
    assert drop_unseen(founder.repo, fmem, phone.key.device_id)["documents"] == 0
    later = next(e for e in (mem.add(f"visible note {i}") for i in range(200))
                 if shard_of(e["id"]) == shard)
    pump(founder, phone)
    try:
        assert fmem.get(later["id"])["text"] == later["text"]
    except EntryNotFound:
        pytest.fail(f"the device's later note never arrived: {founder.rejects}")


def test_a_key_the_flooder_admitted_cannot_make_its_documents_undroppable(tmp_path: Path):
    """A member may admit devices (SPEC-005 §5). A change by a key the flooder admitted lifts
    a drop (it is another author: an honest phone the laptop paired must not be refused),
    but the owner's next drop takes the document again, since a device's unseen documents
    are those it and the devices it admitted alone wrote; each lift costs the flooder a new
    key in the roster, which revocation ends."""
    founder = Device.found(tmp_path, "founder")
    flooder = founder.admit(tmp_path, "flooder")
    pump(founder, flooder)
    sk = DeviceKey.generate()
    invitation = enrol_device(flooder.repo, sk.public_key, "sidekick")
    side_store = Store(tmp_path / "sidekick")
    sidekick = Device("sidekick", tmp_path / "sidekick", sk, side_store,
                      accept_invitation(side_store, sk, invitation))
    try:
        pump(flooder, sidekick)
        pump(founder, flooder)
        junk = _bulk(flooder.repo.actor, 1, 10_000)
        for dev in (founder, sidekick):
            _receive(dev, JUNK[0], flooder, junk)
        drop_unseen(founder.repo, Memory(founder.repo), flooder.key.device_id)
        sidekick.write("x", "lift", JUNK[0])  # one tiny change on top of the junk
        pump(founder, sidekick)
        assert JUNK[0] in founder.store.doc_ids()  # lifted: it is another author's work

        again = drop_unseen(founder.repo, Memory(founder.repo), flooder.key.device_id)

        assert again["documents"] == 1 and JUNK[0] not in founder.store.doc_ids()
        assert founder.store.dropped_keys(JUNK[0]) == {flooder.key.public_key,
                                                       sidekick.key.public_key}
        sidekick.write("y", "again", JUNK[0])
        pump(founder, sidekick)  # a key that wrote there can no longer lift it
        assert JUNK[0] not in founder.store.doc_ids()
    finally:
        for d in (founder, flooder, sidekick):
            d.close()


def test_a_local_write_into_a_dropped_document_makes_it_live_again(mesh):
    founder, flooder, _ = mesh
    _receive(founder, JUNK[0], flooder, _bulk(flooder.repo.actor, 1, 1000))
    drop_unseen(founder.repo, Memory(founder.repo), flooder.key.device_id)
    founder.write("note-202601-DAAAAAAAAA", "mine", JUNK[0])
    assert JUNK[0] in founder.store.doc_ids()
    assert founder.store.quarantine_counts()["dropped_documents"] == 0
    assert not founder.store.dropped_keys(JUNK[0])


def test_a_dropped_document_is_refused_before_any_signature_is_checked(mesh, monkeypatch):
    """Refusing costs a parse, not thousands of Ed25519 checks (a 5,000-change message was
    verified in full before its refusal: 0.67 s of the event loop)."""
    founder, flooder, _ = mesh
    _receive(founder, JUNK[0], flooder, _bulk(flooder.repo.actor, 1, 100))
    drop_unseen(founder.repo, Memory(founder.repo), flooder.key.device_id)
    more = _bulk(flooder.repo.actor, 200, 10)
    batches = [SignedBatch.sign(flooder.key, founder.repo.mesh_id, JUNK[0], [c.hash]).encode()
               for c in more]
    checked = []
    real = SignedBatch.signature_valid
    monkeypatch.setattr(SignedBatch, "signature_valid",
                        lambda self: checked.append(self) or real(self))
    with pytest.raises(Rejected) as caught:
        founder.repo.verify(JUNK[0], [c.chunk for c in more], batches)
    assert caught.value.code == "dropped" and checked == []
    assert caught.value.authors == {flooder.key.public_key}


def test_a_revoked_key_cannot_lift_a_drop(mesh):
    """Only a member's signed change makes a dropped document shared work again: a revoked
    key (a stolen laptop) writing into it changes nothing, and its change is refused."""
    founder, flooder, honest = mesh
    sent = _flood(founder, flooder)
    drop_unseen(founder.repo, Memory(founder.repo), flooder.key.device_id)
    revoke_device(founder.repo, honest.key.public_key, keep=[])
    founder.after_identity()
    with pytest.raises(Rejected) as caught:
        _receive(founder, JUNK[0], honest, [*sent[JUNK[0]], *_junk(honest.repo.actor, "lift")])
    assert caught.value.code != "dropped"  # verified, and refused for its author
    assert founder.store.dropped_keys(JUNK[0]) == {flooder.key.public_key}
    assert JUNK[0] not in founder.store.doc_ids()
