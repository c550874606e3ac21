"""A member key on a stolen device, against the trust core: property-based, many interleavings.

Four devices (founder, two honest, one thief, all real LMDB stores, real repositories and the
real sync protocol; tests/trust_helpers.py) and a thief that acts at random between honest
writes, syncs between any two devices that accept each other, restarts and the owner's
revocation of the thief. The thief's catalogue: forks of its own chain (two changes with one
(actor, seq)), old batches re-sent, fresh low-numbered branches and new incarnations after its
revocation, certificates with mistyped or oversized fields carried in its Identity changes,
revocations of the founder, of an honest device, of itself and of unknown keys, endorsements of
accomplices, and writes by those accomplices.

After every run (SPEC-005 §5.4, §5.10, §6): every honest device restarts and loads every
document; honest devices converge to identical heads; every change an honest device holds is
authorised by the final roster; the thief is a member nowhere; no honest device's members drop
below the owner's intended set. The default profile is short and deterministic; set
``MAIA_ADVERSARY=long`` for the long one. The number of actions tried is printed.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import msgpack
import pytest
from automerge.core import ROOT, Document, ObjType, ScalarType
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from crdt.batches import SignedBatch
from crdt.chunks import parse_change
from crdt.documents import DeviceRevoked
from crdt.identity import IDENTITY_DOC, record_certs, revoke_device
from crdt.keys import DeviceKey
from crdt.roster import _CERT_DOMAIN, actor_key, new_endorsement, new_tombstone
from crdt.verify import Rejected
from tests.trust_helpers import NOTE_DOC, Device, pump

LONG = os.environ.get("MAIA_ADVERSARY") == "long"
ACTIONS: collections.Counter[str] = collections.Counter()
RUNS = [0]
DOCS = [NOTE_DOC, "memory/note/2026-12/1", IDENTITY_DOC]


def _junk_cert(thief: DeviceKey, mesh: bytes, subject: bytes, field: str, value) -> bytes:
    body = {"t": "revoke", "v": 2, "mesh": mesh, "subject": subject, "issuer": thief.public_key,
            "at": "2026-12-01T00:00:00Z", "cutoff": {}, "kept": [], "reason": ""}
    body[field] = value
    raw = msgpack.packb(body, use_bin_type=True)
    return msgpack.packb([raw, thief.sign(_CERT_DOMAIN + raw)], use_bin_type=True)


def _write_raw_cert(dev: Device, name: str, raw: bytes) -> None:
    """A signed Identity change carrying any bytes as a roster certificate."""

    def edit(tx):
        got = tx.get(ROOT, "roster")
        obj = got[1] if got is not None else tx.put_object(ROOT, "roster", ObjType.Map)
        tx.put(obj, name, ScalarType.Bytes, raw)

    # a roster change: written even when the thief's own roster already counts it revoked
    dev.repo.change(IDENTITY_DOC, edit, roster_change=True)


class HostileMember(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="maia-adversary-"))
        self.revoked = False
        self.accomplices: list[Device] = []
        self.sent: list[tuple[str, list, bytes]] = []  # (doc, chunks, batch) the thief sent

    @initialize()
    def found_the_mesh(self) -> None:
        RUNS[0] += 1
        self.founder = Device.found(self.root, "founder")
        self.desktop = self.founder.admit(self.root, "desktop")
        self.phone = self.founder.admit(self.root, "phone")
        self.thief = self.founder.admit(self.root, "thief").modify()
        self.honest = [self.founder, self.desktop, self.phone]
        self.intended = {d.key.public_key for d in self.honest}
        for d in (self.desktop, self.phone, self.thief):
            pump(self.founder, d)

    # -- honest life ---------------------------------------------------------------------------
    @rule(who=st.integers(0, 2), entry=st.sampled_from(["a", "b", "c"]), text=st.text(max_size=8),
          doc=st.sampled_from(DOCS[:2]))
    def honest_write(self, who, entry, text, doc) -> None:
        device = self.honest[who]
        try:
            device.write(entry, text or "-", doc)
        except DeviceRevoked:
            # a device the roster it holds says is revoked (by the thief, until the owner's
            # more senior revocation of the thief reaches it) refuses to write, in words
            # (SPEC-005 §5.10); it must really be revoked there, never refused by mistake
            assert not device.repo.roster.is_member(device.key.public_key)
            ACTIONS["honest write refused: the device holds its own revocation"] += 1
            return
        ACTIONS["honest write"] += 1

    @rule(a=st.integers(0, 3), b=st.integers(0, 3))
    def sync(self, a, b) -> None:
        devices = [*self.honest, self.thief]
        x, y = devices[a], devices[b]
        if x is y:
            return
        ACTIONS["sync"] += 1
        _sync_if_members(x, y)

    @rule(a=st.integers(0, 2), b=st.integers(0, 2))
    def sync_honest(self, a, b) -> None:
        if a != b:
            ACTIONS["sync"] += 1
            pump(self.honest[a], self.honest[b])

    @rule(who=st.integers(0, 2))
    def restart(self, who) -> None:
        ACTIONS["restart"] += 1
        self.honest[who].reopen()

    @precondition(lambda self: not self.revoked)
    @rule()
    def owner_revokes_the_thief(self) -> None:
        ACTIONS["owner revokes the thief"] += 1
        try:
            revoke_device(self.founder.repo, self.thief.key.public_key, keep=[])
        except ValueError:  # the thief revoked the founder first and won nothing: see SPEC
            revoke_device(self.desktop.repo, self.thief.key.public_key, keep=[])
        self.revoked = True

    # -- the thief's catalogue -----------------------------------------------------------------
    @rule(doc=st.sampled_from(DOCS[:2]), text=st.text(max_size=8))
    def thief_writes(self, doc, text) -> None:
        ACTIONS["thief writes"] += 1
        self.thief.write("t", text or "-", doc)

    @rule(victim=st.integers(0, 2), doc=st.sampled_from(DOCS))
    def thief_forks_its_chain(self, victim, doc) -> None:
        """Two different changes with one (actor, seq), each to another honest device."""
        ACTIONS["fork of one actor's chain"] += 1
        base = self.thief.repo.open(doc).doc.save()
        forks = []
        for text in (f"fork one {os.urandom(4).hex()}", f"fork two {os.urandom(4).hex()}"):
            d = Document.load(base) if base else Document()
            d.set_actor(self.thief.repo.actor)
            heads = d.get_heads()
            with d.transaction() as tx:
                tx.put(ROOT, "forked", ScalarType.Str, text)
            forks.append(parse_change(bytes(d.get_changes(heads)[0].bytes)))
        self._deliver(self.honest[victim], doc, forks[:1])
        self._deliver(self.honest[(victim + 1) % 3], doc, forks[1:])

    @rule(victim=st.integers(0, 2))
    def thief_resends_old_batches(self, victim) -> None:
        ACTIONS["old batch re-sent"] += 1
        for doc, chunks, batch in self.sent[-3:]:
            _try(lambda d=doc, c=chunks, b=batch: _receive(self.honest[victim], d, c, b))

    @rule(victim=st.integers(0, 2), incarnation=st.booleans(), doc=st.sampled_from(DOCS[:2]))
    def thief_mints_a_low_numbered_branch(self, victim, incarnation, doc) -> None:
        ACTIONS["low-numbered branch"] += 1
        actor = self.thief.key.public_key + (os.urandom(8) if incarnation else b"")
        branch = Document(actor_id=actor)
        with branch.transaction() as tx:
            tx.put(ROOT, "branch", ScalarType.Str, "minted")
        self._deliver(self.honest[victim], doc,
                      [parse_change(bytes(c.bytes)) for c in branch.get_changes([])])

    @rule(field=st.sampled_from(["kept", "cutoff", "subject", "reason", "at", "mesh"]),
          value=st.sampled_from([5, "x" * 600, {"memory/x": 1}, b"\x00" * 31, None, [1, 2]]))
    def thief_signs_a_mistyped_certificate(self, field, value) -> None:
        ACTIONS["mistyped certificate"] += 1
        raw = _junk_cert(self.thief.key, self.thief.repo.mesh_id, self.founder.key.public_key,
                         field, value)
        _write_raw_cert(self.thief, f"junk-{ACTIONS['mistyped certificate']}", raw)

    @rule(whom=st.sampled_from(["founder", "desktop", "self", "unknown"]))
    def thief_revokes(self, whom) -> None:
        ACTIONS[f"thief revokes {whom}"] += 1
        key = {"founder": self.founder.key.public_key, "desktop": self.desktop.key.public_key,
               "self": self.thief.key.public_key,
               "unknown": DeviceKey.generate().public_key}[whom]
        tomb = new_tombstone(self.thief.key, self.thief.repo.mesh_id, key, {})
        _write_raw_cert(self.thief, tomb.cert_id, tomb.encode())
        self.thief.repo.add_certs([tomb.encode()])

    @precondition(lambda self: len(self.accomplices) < 2)
    @rule()
    def thief_admits_an_accomplice(self) -> None:
        ACTIONS["accomplice admitted"] += 1
        if not self.thief.repo.roster.is_member(self.thief.key.public_key):
            key = DeviceKey.generate()  # its own roster already says no: sign it anyway
            cert = new_endorsement(self.thief.key, self.thief.repo.mesh_id, key.public_key, "a")
            record_certs(self.thief.repo, [cert])
            return
        accomplice = self.thief.admit(self.root, f"accomplice{len(self.accomplices)}")
        pump(self.thief, accomplice)
        accomplice.write("acc", "accomplice was here")
        pump(accomplice, self.thief)
        self.accomplices.append(accomplice)

    def _deliver(self, dev: Device, doc: str, changes) -> None:
        batch = SignedBatch.sign(self.thief.key, dev.repo.mesh_id, doc, [c.hash for c in changes])
        chunks = [c.chunk for c in changes]
        self.sent.append((doc, chunks, batch.encode()))
        _try(lambda: _receive(dev, doc, chunks, batch.encode()))

    # -- the promises, checked after every run ------------------------------------------------
    def teardown(self) -> None:
        try:
            if getattr(self, "honest", None):
                self._settle_and_check()
        finally:
            for dev in [*getattr(self, "honest", []), getattr(self, "thief", None),
                        *self.accomplices]:
                if dev is not None:
                    dev.close()
            shutil.rmtree(self.root, ignore_errors=True)

    def _settle_and_check(self) -> None:
        if not self.revoked:
            self.owner_revokes_the_thief()
        for _ in range(4):  # heal: every honest pair syncs
            for i, a in enumerate(self.honest):
                for b in self.honest[i + 1:]:
                    pump(a, b)
        check_invariants(self.honest, self.intended, self.thief.key.public_key)


def _sync_if_members(x: Device, y: Device) -> None:
    """Two devices talk only when each holds the other as a member (the handshake's check)."""
    if x.repo.roster.is_member(y.key.public_key) and y.repo.roster.is_member(x.key.public_key):
        pump(x, y)


def _receive(dev: Device, doc: str, chunks, batch: bytes) -> None:
    verified = dev.repo.verify(doc, chunks, [batch])
    dev.repo.apply_verified(doc, verified, None, None)
    if doc == IDENTITY_DOC:
        dev.after_identity()


def _try(action) -> None:
    with contextlib.suppress(Rejected):
        action()


def _describe(dev: Device, docs: list[str]) -> str:
    """Each change of ``docs`` as actor/seq/hash/deps and its author's standing, for a report."""
    roster = dev.repo.roster
    out = []
    for doc_id in docs:
        if doc_id not in dev.store.doc_ids():
            continue
        for c in dev.repo.open(doc_id).doc.get_changes([]):
            key = actor_key(c.actor_id)
            standing = "m" if key in roster.members else "r" if key in roster.revoked else "u"
            out.append(f"{doc_id[-4:]}:{c.actor_id.hex()[:4]}.{c.actor_id.hex()[-4:]}#{c.seq}"
                       f"={c.hash.hex()[:6]}<{','.join(d.hex()[:6] for d in c.deps)}>{standing}")
    cut = {k.hex()[:4]: {d[-4:]: [(h.actor.hex()[-4:], h.seq, h.hash.hex()[:6])
                                  for h in hs.values()] for d, hs in v.items() if d in docs}
           for k, v in roster.revoked.items()}
    return f"{out} cutoffs {cut}"


def check_invariants(
    honest: list[Device], intended: set[bytes], thief: bytes, *, restart: bool = True
) -> None:
    """The promises of SPEC-005 after a heal; raises AssertionError naming the broken one.

    ``restart`` first restarts every device (which re-checks its store, SPEC-005 §5.10)."""
    for dev in honest:
        if restart:
            dev.reopen()  # every honest device still starts...
        for doc_id in dev.store.doc_ids():
            dev.repo.open(doc_id)  # ...and loads every document
    heads = [dev.heads() for dev in honest]
    differ = sorted({d for h in heads for d in h if any(x.get(d) != heads[0].get(d)
                                                         for x in heads)})
    assert not differ, f"honest devices did not converge on {differ}: " + "; ".join(
        f"{dev.name} {[(d, [x.hex()[:8] for x in h.get(d, ())]) for d in differ]} "
        f"rejects {dev.rejects[-4:]} changes {_describe(dev, differ)}"
        for dev, h in zip(honest, heads, strict=True))
    for dev in honest:
        roster = dev.repo.roster
        assert not roster.is_member(thief), f"the thief is still a member on {dev.name}"
        assert intended <= set(roster.members), f"{dev.name} lost honest members"
        for doc_id in dev.store.doc_ids():
            changes = dev.repo.open(doc_id).doc.get_changes([])
            deps = {c.hash: c.deps for c in changes}
            allowed: set[bytes] = set()
            for cutoff in roster.revoked.values():
                for head in cutoff.get(doc_id, {}).values():
                    stack = [head.hash]
                    while stack:
                        h = stack.pop()
                        if h in deps and h not in allowed:
                            allowed.add(h)
                            stack.extend(deps[h])
            for c in changes:
                own = c.hash in allowed and actor_key(c.actor_id) in roster.revoked
                assert actor_key(c.actor_id) in roster.members or own, (
                    f"{dev.name} holds a change in {doc_id} the final roster does not allow"
                )


PROFILE = settings(
    max_examples=300 if LONG else 25,
    stateful_step_count=60 if LONG else 30,
    derandomize=not LONG,
    deadline=None,
    print_blob=True,
)


@pytest.mark.timeout(0 if LONG else 300)
def test_in_process_under_a_hostile_member(capsys) -> None:
    """SPEC-005 §5, §6, §8, §9.8: the invariants hold whatever the interleaving. Then prints how
    many runs and actions the harness tried (visible with -s or -rA), and that it tried some.
    (One test, so the report does not depend on test order or on which xdist worker ran what.)"""
    RUNS[0] = 0
    ACTIONS.clear()
    try:
        run_state_machine_as_test(HostileMember, settings=PROFILE)
    finally:
        total = sum(ACTIONS.values())
        with capsys.disabled():
            print(f"\nadversary (in process): {RUNS[0]} runs, {total} actions: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(ACTIONS.items())))
    assert RUNS[0] > 0 and total > 0


def test_the_checker_catches_a_planted_violation(tmp_path: Path) -> None:
    """The invariants can fail: a change by an unknown key planted straight into the honest
    stores (bypassing verification) is named as not allowed. (A restart would have quarantined
    it: the node re-checks its store at start, which this test also shows.)"""
    founder = Device.found(tmp_path, "founder")
    desktop = founder.admit(tmp_path, "desktop")
    try:
        pump(founder, desktop)
        outsider = DeviceKey.generate()
        doc = Document(actor_id=outsider.public_key)
        with doc.transaction() as tx:
            tx.put(ROOT, "planted", ScalarType.Str, "x")
        change = parse_change(bytes(doc.get_changes([])[0].bytes))
        batch = SignedBatch.sign(outsider, founder.repo.mesh_id, NOTE_DOC, [change.hash])
        founder.store.commit_changes(NOTE_DOC, [change], [batch], [change.hash])
        desktop.store.commit_changes(NOTE_DOC, [change], [batch], [change.hash])
        try:
            check_invariants([founder, desktop], {founder.key.public_key}, outsider.public_key,
                             restart=False)
        except AssertionError as exc:
            assert "does not allow" in str(exc)
        else:
            raise AssertionError("the planted change was not caught")
        founder.reopen()
        assert founder.store.known_hashes(NOTE_DOC, [change.hash]) == set()
    finally:
        founder.close()
        desktop.close()


def test_a_device_the_thief_revoked_refuses_its_own_write_and_the_harness_expects_it() -> None:
    """The sequence hypothesis found in CI (SPEC-005 §5.10, DeviceRevoked): the thief revokes
    the desktop before the owner acts; once the desktop holds that revocation, its own write is
    refused in words, which is the node's rule, not a broken invariant."""
    state = HostileMember()
    try:
        state.found_the_mesh()
        state.thief_revokes(whom="desktop")
        state.sync(a=0, b=3)
        state.sync_honest(a=0, b=1)
        state.honest_write(doc="memory/note/2026-12/0", entry="a", text="", who=1)
        assert ACTIONS["honest write refused: the device holds its own revocation"] >= 1
    finally:
        state.teardown()
