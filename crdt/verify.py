"""Verification of incoming changes: everything is checked before anything is stored or applied.

A message is accepted whole or rejected whole (SPEC-005): a peer cannot slip one bad change
in among good ones, and a rejected message leaves no trace in the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .batches import BatchError, SignedBatch
from .chunks import ChangeInfo, ChunkError, parse_change
from .roster import Roster
from .store import Store

MAX_CHANGES_PER_MESSAGE = 200_000


class Rejected(Exception):
    """An incoming message failed verification. ``code`` is machine-readable (SPEC-005)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(slots=True)
class Verified:
    """Changes that passed, new to this node, in message order, with the batches covering them."""

    changes: list[ChangeInfo]
    batches: list[SignedBatch]


def verify_changes(
    *,
    store: Store,
    roster: Roster,
    mesh_id: bytes,
    doc_id: str,
    chunks: Sequence[bytes],
    batch_records: Sequence[bytes],
) -> Verified:
    if len(chunks) > MAX_CHANGES_PER_MESSAGE:
        raise Rejected("too_large", f"{len(chunks)} changes in one message")
    signed: dict[bytes, SignedBatch] = {}
    for raw in batch_records:
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
        if not batch.signature_valid():
            raise Rejected("bad_signature", "batch signature does not verify")
        for h in batch.hashes:
            signed[h] = batch

    infos: list[ChangeInfo] = []
    for chunk in chunks:
        try:
            infos.append(parse_change(bytes(chunk)))
        except ChunkError as exc:
            code = "hash_mismatch" if "checksum" in str(exc) else "malformed"
            raise Rejected(code, str(exc)) from exc

    known = store.known_hashes(doc_id, [i.hash for i in infos] + [d for i in infos for d in i.deps])
    seen: set[bytes] = set(known)
    fresh: list[ChangeInfo] = []
    used: dict[bytes, SignedBatch] = {}
    for info in infos:
        if info.hash in seen:
            continue  # already held (verified earlier) or repeated in this message
        batch = signed.get(info.hash)
        if batch is None:
            raise Rejected("unsigned", f"change {info.hash.hex()[:16]} is not covered by a batch")
        if batch.signer != info.actor:
            raise Rejected(
                "bad_signature", f"change {info.hash.hex()[:16]} is signed by another device"
            )
        verdict = roster.may_author(info.actor, doc_id, info.seq)
        if not verdict.ok:
            raise Rejected(verdict.code, verdict.detail)
        missing = [d for d in info.deps if d not in seen]
        if missing:
            raise Rejected(
                "missing_dependency",
                f"change {info.hash.hex()[:16]} depends on {missing[0].hex()[:16]}, not held",
            )
        seen.add(info.hash)
        fresh.append(info)
        used[batch.batch_id] = batch
    return Verified(fresh, list(used.values()))
