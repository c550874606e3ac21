"""A member's documents that nobody sees: shown per device, dropped by the owner on one node,
kept dropped while only that device writes to them, and taken back as soon as anyone else's
work needs them (SPEC-005 §6.6, §6.7; issue 18.5). Real stores and the real sync protocol, in
process (tests/trust_helpers.py); the flooder holds a member key and signs what it likes."""

from __future__ import annotations

from pathlib import Path

import pytest
from automerge.core import ROOT, Document, ScalarType

from crdt.batches import SignedBatch
from crdt.chunks import ChangeInfo, parse_change
from crdt.sync import PeerSync
from crdt.verify import Rejected
from node.devices.storage import CannotDrop, drop_unseen, storage_by_device
from node.memory.entries import Memory
from tests.trust_helpers import Device, pump

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
    doc = Document(actor_id=actor)
    with doc.transaction() as tx:
        tx.put(ROOT, "x", ScalarType.Str, text)
    return [parse_change(bytes(c.bytes)) for c in doc.get_changes([])]


def _receive(dev: Device, doc_id: str, author: Device, changes: list[ChangeInfo]) -> None:
    batch = SignedBatch.sign(author.key, dev.repo.mesh_id, doc_id, [c.hash for c in changes])
    verified = dev.repo.verify(doc_id, [c.chunk for c in changes], [batch.encode()])
    dev.repo.apply_verified(doc_id, verified, None, None)


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
        assert founder.store.dropped_key(doc_id) == flooder.key.public_key


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
    assert founder.store.dropped_key(JUNK[0]) is None
    assert "dropped" in founder.rejects  # the flooder-only documents stayed dropped
    assert not set(founder.store.doc_ids()) & set(JUNK[1:])


def test_the_owner_cannot_drop_its_own_documents(mesh):
    founder, _, _ = mesh
    with pytest.raises(CannotDrop):
        drop_unseen(founder.repo, Memory(founder.repo), founder.key.device_id)
    with pytest.raises(ValueError, match="own"):
        founder.repo.drop_documents(["memory/note/2026-01/3"], founder.key.public_key)


def test_a_document_with_another_authors_changes_is_never_dropped(mesh):
    founder, flooder, honest = mesh
    _flood(founder, flooder)
    _receive(founder, JUNK[0], honest, _junk(honest.repo.actor, "honest junk"))
    with pytest.raises(ValueError, match="other devices"):
        founder.repo.drop_documents([JUNK[0]], flooder.key.public_key)
    # the rule the owner's command follows leaves the shared one alone
    assert drop_unseen(founder.repo, Memory(founder.repo),
                       flooder.key.device_id)["documents"] == 2
    assert JUNK[0] in founder.store.doc_ids()
