"""In-process devices for trust tests: real LMDB stores, real repositories, the real sync protocol.

Each ``Device`` is what a node holds (store, repo, roster) without the HTTP and socket layers;
``pump`` moves the real ``crdt.sync.PeerSync`` frames between two devices until both are quiet,
handling rejections the way ``node/peers.py`` does (reset and go on). The node's reaction to an
Identity change (merge certificates, re-check the store) is ``Device.after_identity``, the same
calls ``node/node.py`` makes. Fast enough for property-based tests with many interleavings.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from automerge.core import ROOT, Document, ObjType, ScalarType

from crdt.batches import SignedBatch
from crdt.chunks import ChangeInfo, parse_change
from crdt.documents import Repo
from crdt.identity import (
    IDENTITY_DOC,
    accept_invitation,
    create_mesh,
    enrol_device,
    import_roster_from_doc,
    open_repo,
)
from crdt.keys import DeviceKey
from crdt.store import Store
from crdt.sync import PeerSync
from crdt.verify import Rejected

NOTE_DOC = "memory/note/2026-12/0"


@dataclass
class Device:
    name: str
    path: Path
    key: DeviceKey
    store: Store
    repo: Repo
    rejects: list[str] = field(default_factory=list)
    _busy: bool = False
    modified: bool = False  # a hostile, modified client: writes even once it counts revoked

    def modify(self) -> Device:
        self.modified = True
        self.repo.refuse_when_revoked = False
        return self

    def __post_init__(self) -> None:
        self._watch()

    def _watch(self) -> None:
        """Like node/node.py: any Identity change, local or not, re-derives and re-checks."""

        def on_change(doc_id: str, local: bool) -> None:
            if doc_id == IDENTITY_DOC and not self._busy:
                self.after_identity()

        self.repo.subscribe(on_change)

    @classmethod
    def found(cls, root: Path, name: str) -> Device:
        key = DeviceKey.generate()
        store = Store(root / name)
        return cls(name, root / name, key, store, create_mesh(store, key, "home", name))

    def admit(self, root: Path, name: str, key: DeviceKey | None = None) -> Device:
        """A new device endorsed by this one (the manual enrolment path, SPEC-005 §12.8)."""
        key = key or DeviceKey.generate()
        invitation = enrol_device(self.repo, key.public_key, name)
        store = Store(root / name)
        return Device(name, root / name, key, store, accept_invitation(store, key, invitation))

    def reopen(self) -> None:
        """Stop and start: a fresh process (a new incarnation) on the same data dir."""
        self.store.close()
        self.store = Store(self.path)
        self.repo = open_repo(self.store, self.key)
        self.repo.refuse_when_revoked = not self.modified
        self._watch()
        self.after_identity()  # the node re-checks at start too

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.store.close()

    def write(self, entry: str, text: str, doc_id: str = NOTE_DOC) -> None:
        def edit(tx):
            got = tx.get(ROOT, entry)
            obj = got[1] if got is not None else tx.put_object(ROOT, entry, ObjType.Map)
            tx.put(obj, "text", ScalarType.Str, text)

        self.repo.change(doc_id, edit)

    def read(self, entry: str, doc_id: str = NOTE_DOC) -> str | None:
        if doc_id not in self.store.doc_ids():
            return None
        doc = self.repo.open(doc_id).doc
        got = doc.get(ROOT, entry)
        if got is None:
            return None
        text = doc.get(got[1], "text")
        return text[0][1] if text else None

    def after_identity(self) -> dict[str, int]:
        """What the node does after an Identity change: merge certificates, re-check."""
        self._busy = True
        try:
            import_roster_from_doc(self.repo)
            return self.repo.recheck()
        finally:
            self._busy = False

    def heads(self) -> dict[str, tuple[bytes, ...]]:
        """Heads of every document that holds anything (an emptied one counts as absent)."""
        out = {d: tuple(sorted(self.repo.heads(d))) for d in sorted(self.store.doc_ids())}
        return {d: h for d, h in out.items() if h}


def _deliver(src: PeerSync, dst: PeerSync, dev: Device, doc_id: str) -> int:
    moved = 0
    for frame in src.generate(doc_id):
        moved += 1
        try:
            dst.receive(frame)
        except Rejected as exc:  # as node/peers.py: the sender resets, the receiver answers
            dev.rejects.append(exc.code)
            src.reset(doc_id)
            return moved
    return moved


def pump(a: Device, b: Device, rounds: int = 50) -> None:
    """Sync every document between ``a`` and ``b`` (only members talk: the caller decides)."""
    # Members first hand each other every certificate (node/peers.py certs frames).
    for src, dst in ((a, b), (b, a)):
        if dst.repo.add_certs([c.encode() for c in src.repo.roster.certs.values()]):
            dst.after_identity()
    sa, sb = PeerSync(a.repo, b.key.public_key), PeerSync(b.repo, a.key.public_key)
    for _ in range(rounds):
        docs = sorted(set(a.store.doc_ids()) | set(b.store.doc_ids()),
                      key=lambda d: (d != IDENTITY_DOC, d))
        moved = 0
        for doc_id in docs:
            moved += _deliver(sa, sb, b, doc_id) + _deliver(sb, sa, a, doc_id)
        if not moved:
            return


def one_change(actor: bytes, text: str, field: str = "note") -> list[ChangeInfo]:
    """A first change by ``actor`` in a new document (``field`` = ``text`` at its root): what
    a key can sign whenever it likes."""
    branch = Document(actor_id=actor)
    with branch.transaction() as tx:
        tx.put(ROOT, field, ScalarType.Str, text)
    return [parse_change(bytes(c.bytes)) for c in branch.get_changes([])]


def receive_signed(dev: Device, doc_id: str, key: DeviceKey, changes: list[ChangeInfo]) -> None:
    """``changes`` signed by ``key`` in one batch, verified and applied by ``dev`` as a peer's."""
    batch = SignedBatch.sign(key, dev.repo.mesh_id, doc_id, [c.hash for c in changes])
    verified = dev.repo.verify(doc_id, [c.chunk for c in changes], [batch.encode()])
    dev.repo.apply_verified(doc_id, verified, None, None)
