"""Verification of incoming changes: everything is checked before anything is stored or applied.

A message is accepted whole or rejected whole (SPEC-005): a peer cannot slip one bad change
in among good ones, and a rejected message leaves no trace in the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .batches import BatchError, SignedBatch
from .chunks import ChangeInfo, ChunkError, parse_change
from .keys import device_id
from .roster import ACTOR_BYTES, CutoffHead, Roster, actor_key
from .store import Store

MAX_CHANGES_PER_MESSAGE = 200_000
#: Operations in one change (SPEC-005 005.6.1 c): a change applies whole, and run-length
#: encoding lets a few bytes hold millions of operations (634 MB for a million list
#: insertions in 182 bytes). maia-node's own largest change is a few hundred.
MAX_OPS_PER_CHANGE = 65_536
EXTRA_BATCHES = 16
#: Hashes a refusal for missing dependencies names for the next ``need`` (SPEC-005 §8.6).
MAX_ASKED = 1024


class Rejected(Exception):
    """An incoming message failed verification. ``code`` is machine-readable (SPEC-005)."""

    def __init__(self, code: str, detail: str, missing: Sequence[bytes] = (),
                 authors: frozenset[bytes] = frozenset(),
                 refused: Sequence[bytes] = ()) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        #: With ``missing_dependency``: the hashes to ask for (SPEC-005 §8.6).
        self.missing = list(missing)
        #: With ``missing_dependency``: the message's changes not held here, asked for again
        #: with the missing ones (§8.6: the peer's state was reset, and a Bloom filter that
        #: left out a dependency may leave these out too).
        self.refused = list(refused)
        #: With ``dropped``: the device keys the document was dropped as (SPEC-005 §11.3: a
        #: peer sending its own dropped documents again is misbehaving; a relay is not).
        self.authors = authors


@dataclass(slots=True)
class Verified:
    """Changes that passed, new to this node, in message order, with the batches covering them."""

    changes: list[ChangeInfo]
    batches: list[SignedBatch]
    #: Some changes of a revoked device were let in before their cutoff head arrived (only
    #: with ``defer_heads``): the caller must re-check the document once the message is whole.
    unsettled: bool = False


def verify_changes(
    *,
    store: Store,
    roster: Roster,
    mesh_id: bytes,
    doc_id: str,
    chunks: Sequence[bytes],
    batch_records: Sequence[bytes],
    defer_heads: bool = False,
) -> Verified:
    """Check one message whole; raise :class:`Rejected` on the first fault (SPEC-005 §6.1).

    ``defer_heads`` is for one part of a message split in several (or a restore's slice):
    a revoked device's change whose cutoff head is not yet held is let in, and the result says
    so; :class:`crdt.sync.PeerSync` holds such a part back until a later part settles it.
    """
    if len(chunks) > MAX_CHANGES_PER_MESSAGE:
        raise Rejected("too_large", f"{len(chunks)} changes in one message")
    # An honest message carries at most one batch per change; repeats cost nothing and the
    # rest is refused, so a member cannot make a node check thousands of signatures for free.
    records = list(dict.fromkeys(bytes(r) for r in batch_records))
    if len(records) > len(chunks) + EXTRA_BATCHES:
        raise Rejected("too_large", f"{len(records)} batch records for {len(chunks)} changes")
    signed: dict[bytes, SignedBatch] = {}
    for raw in records:
        try:
            batch = SignedBatch.decode(raw)
        except BatchError as exc:
            raise Rejected("malformed", str(exc)) from exc
        if batch.mesh_id != mesh_id or batch.doc_id != doc_id:
            raise Rejected(
                "replayed_batch",
                f"batch signed for document {batch.doc_id!r} of another mesh or document, "
                f"sent for {doc_id!r}",
            )
        for h in batch.hashes:
            signed[h] = batch

    infos: list[ChangeInfo] = []
    for chunk in chunks:
        try:
            infos.append(parse_change(bytes(chunk)))
        except ChunkError as exc:
            code = "hash_mismatch" if "checksum" in str(exc) else "malformed"
            raise Rejected(code, str(exc)) from exc
        if infos[-1].ops > MAX_OPS_PER_CHANGE:
            raise Rejected("too_large", f"change {infos[-1].hash.hex()[:16]} holds "
                                        f"{infos[-1].ops:,} operations (at most "
                                        f"{MAX_OPS_PER_CHANGE:,})")

    known = store.known_hashes(doc_id, [i.hash for i in infos] + [d for i in infos for d in i.deps])
    seen: set[bytes] = set(known)

    def refused() -> list[bytes]:
        return [i.hash for i in infos if i.hash not in known][:MAX_ASKED]

    fresh: list[ChangeInfo] = []
    used: dict[bytes, SignedBatch] = {}
    top = store.actor_seqs(doc_id, {i.actor for i in infos if i.hash not in seen})
    needed: dict[bytes, CutoffHead] = {}
    checked: set[bytes] = set()
    for info in infos:
        if info.hash in seen:
            continue  # already held (verified earlier) or repeated in this message
        if len(info.actor) not in ACTOR_BYTES:
            raise Rejected("malformed", f"change {info.hash.hex()[:16]} has an actor id of "
                                        f"{len(info.actor)} bytes")
        batch = signed.get(info.hash)
        if batch is None:
            raise Rejected("unsigned", f"change {info.hash.hex()[:16]} is not covered by a batch")
        if batch.signer != actor_key(info.actor):
            raise Rejected(
                "bad_signature", f"change {info.hash.hex()[:16]} is signed by another device"
            )
        verdict = roster.may_author(info.actor, doc_id, info.seq)
        if not verdict.ok:
            raise Rejected(verdict.code, verdict.detail)
        # Signatures are checked only for batches that cover a change not yet held, by an
        # author the roster knows, once each (SPEC-005 §6.1 b, d).
        if batch.batch_id not in checked:
            if not batch.signature_valid():
                raise Rejected("bad_signature", "batch signature does not verify")
            checked.add(batch.batch_id)
        # SPEC-005 §6.1 d: one actor's changes in a document are numbered 1, 2, 3, ... with no
        # gap and no repeat; a second change with an (actor, seq) already held is equivocation
        # (a copied key or a rolled-back data dir) and is never stored: Automerge would refuse
        # it on every later load, bricking the document.
        expected = top.get(info.actor, 0) + 1
        if info.seq < expected:
            raise Rejected(
                "duplicate_seq",
                f"device {device_id(actor_key(info.actor))} signed a second, different change "
                f"numbered {info.seq} in {doc_id}",
                authors=frozenset({actor_key(info.actor)}),
            )
        if info.seq > expected:
            raise Rejected(
                "missing_dependency",
                f"change {info.seq} of {device_id(actor_key(info.actor))} in {doc_id} comes "
                f"before its change {expected}, not held",
                [d for d in info.deps if d not in seen], refused=refused(),
            )
        head = verdict.needs
        if head is not None:
            if info.seq == head.seq and info.hash != head.hash:
                raise Rejected("revoked", f"change {info.seq} of revoked device "
                                          f"{device_id(head.actor[:32])} is not its cutoff head")
            needed[head.hash] = head
        missing = [d for d in info.deps if d not in seen]
        if missing:
            raise Rejected(
                "missing_dependency",
                f"change {info.hash.hex()[:16]} depends on {missing[0].hex()[:16]}, not held",
                missing, refused=refused(),
            )
        top[info.actor] = info.seq
        seen.add(info.hash)
        fresh.append(info)
        used[batch.batch_id] = batch
    # A revoked device's changes count only as ancestors of its cutoff head (SPEC-005 §5.4):
    # with numbering unique per actor, that holds exactly when the head is held or arrives in
    # the same message. Until then nobody can tell the true chain from a forged branch.
    unsettled = False
    for digest, head in needed.items():
        if digest not in seen:
            if defer_heads:
                unsettled = True
                continue
            raise Rejected(
                "revoked",
                f"changes of revoked device {device_id(head.actor[:32])} in {doc_id} arrived "
                f"without its cutoff head {digest.hex()[:16]}",
            )
    return Verified(fresh, list(used.values()), unsettled)
