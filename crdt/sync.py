"""Per-peer document synchronisation: the Automerge sync protocol with verification in front.

No I/O here: a :class:`PeerSync` turns local state into frames (plain dicts) and incoming
frames into verified, durable, applied changes; the node's connection manager moves frames.
Every outgoing sync message carries the batch records that cover its changes, and is split
into parts so no frame exceeds the transport limit.
"""

from __future__ import annotations

import logging
from typing import Any

from automerge.core import Message, SyncState

from .chunks import SyncMessageV1, changes_message, parse_sync_message
from .docids import valid_doc_id
from .documents import Repo
from .verify import Rejected

log = logging.getLogger(__name__)

MAX_PART_BYTES = 4 << 20
MAX_STAGED_BYTES = 32 << 20
#: Messages of heads alone held until the next generate (SPEC-005 §8.3a): each at most this
#: size, all of one peer's at most the second.
MAX_HELD_MESSAGE = 64 << 10
MAX_HELD_BYTES = 4 << 20
#: Refusals about an author, not about the peer that relays its changes: an honest member may
#: hold a revoked author's changes because it has not yet seen the tombstone, or relay a
#: flooding author's documents that it accepted within its own budget.
ROSTER_CODES = frozenset({"revoked", "unknown_signer", "duplicate_seq", "quota_exceeded"})


class PeerSync:
    """Sync state of this node with one peer, for every document."""

    def __init__(self, repo: Repo, peer_key: bytes, *, max_part_bytes: int = MAX_PART_BYTES):
        self.repo = repo
        self.peer_key = peer_key
        self.max_part_bytes = max_part_bytes
        self._states: dict[str, SyncState] = {}
        # The heads the peer last announced per document (its summary, then each final sync
        # message): read-only bookkeeping for status displays, never used to decide what to send.
        self.their_heads: dict[str, tuple[bytes, ...]] = {}
        self.accepted = 0
        self.rejected = 0
        # Parts of a split message held back because they carry a revoked author's changes
        # whose cutoff head has not arrived yet: (chunks, batch records) per document.
        self._staged: dict[str, tuple[list[bytes], list[bytes]]] = {}
        # Hashes to ask for in our next message per document: dependencies a message of the
        # peer lacked, most often because its Bloom filter check wrongly took them for held.
        # The same filter would miss them again on every retry (SPEC-005 §8.6).
        self._need: dict[str, set[bytes]] = {}
        # Where the peer stands, for a fresh sync state (``_state_to_send``): its summary was
        # read, and the documents reset since (what it holds of them is no longer known).
        self._summary_read = False
        self._unsure: set[str] = set()
        # The peer's latest message without changes, per document, not yet applied to the
        # sync state, and the heads our last message for each document carried (SPEC-005
        # §8.3a): a message of heads alone is applied when we next generate, so a document
        # the peer reports at our heads is answered with nothing, without being loaded.
        self._held: dict[str, bytes] = {}
        self._held_bytes = 0
        self._sent_heads: dict[str, list[bytes]] = {}

    # -- summary: which documents differ ---------------------------------------------------------
    def summary_frame(self) -> dict[str, Any]:
        docs = {d: list(self.repo.heads(d)) for d in self.repo.store.doc_ids()}
        return {"t": "summary", "docs": docs}

    def docs_to_sync(self, frame: dict[str, Any]) -> list[str]:
        theirs = frame.get("docs")
        if not isinstance(theirs, dict):
            raise Rejected("malformed", "summary without a document map")
        self._summary_read = True
        ours = set(self.repo.store.doc_ids())
        differ = []
        for doc_id in ours | {d for d in theirs if isinstance(d, str) and valid_doc_id(d)}:
            their_heads = theirs.get(doc_id)
            if not isinstance(their_heads, list | type(None)) or (
                their_heads is not None
                and not all(isinstance(h, bytes) and len(h) == 32 for h in their_heads)
            ):
                raise Rejected("malformed", f"heads of {doc_id[:300]!r} are not a list of hashes")
            self.their_heads[doc_id] = tuple(h for h in their_heads or () if isinstance(h, bytes))
            if doc_id not in ours and self.repo.store.dropped_keys(doc_id):
                continue  # dropped here as a device's unseen documents (SPEC-005 §6.7)
            if their_heads is None or sorted(their_heads) != sorted(self.repo.heads(doc_id)):
                differ.append(doc_id)
        return sorted(differ)

    def reset(self, doc_id: str) -> None:
        """Forget what we believe the peer has (after a rejection or a reconnect)."""
        self._states.pop(doc_id, None)
        self.their_heads.pop(doc_id, None)
        self._unsure.add(doc_id)
        self._staged.pop(doc_id, None)
        self._forget_held(doc_id)
        self._sent_heads.pop(doc_id, None)

    def _state(self, doc_id: str) -> SyncState:
        state = self._states.get(doc_id)
        if state is None:
            state = self._states[doc_id] = SyncState()
        return state

    def _state_to_send(self, doc_id: str, doc: Any) -> SyncState:
        """The sync state of ``doc_id``; a fresh one starts from the heads the peer last
        announced when we hold all of them (SPEC-005 §8.7).

        Why: a fresh Automerge state knows nothing of the peer, so its first message carries
        only our heads and a Bloom filter, and the change goes out one round trip later, after
        the peer's answer. The peer's summary already said where it stands; starting from there,
        the first message carries the changes made since (a live write reaches a peer across a
        60 ms tunnel in one trip, not one and a half). A summary that lied only costs its sender
        a ``missing_dependency`` round, after which the protocol starts afresh (§8.6)."""
        state = self._states.get(doc_id)
        if state is not None:
            return state
        state = self._states[doc_id] = SyncState()
        held = self.their_heads.get(doc_id)
        if held is None and self._summary_read and doc_id not in self._unsure:
            held = ()  # in neither summary: made since, so the peer held nothing of it then
        elif not held:
            return state  # unknown, or a document only we held: the peer opens (§8.2)
        heads = list(held)
        if len(self.repo.store.known_hashes(doc_id, heads)) == len(heads):
            # As if the peer had said: "my heads are these, I need nothing, and I hold
            # everything up to them" (an empty Bloom filter claims nothing beyond).
            told = SyncMessageV1(heads, [], [(heads, b"")], []).encode()
            doc.receive_sync_message(state, Message.decode(told))
        return state

    # -- outgoing --------------------------------------------------------------------------------
    def _nothing_to_answer(self, doc_id: str) -> bool:
        """True when the peer's held message (§8.3a) leaves nothing to say: it reports our
        heads, needs nothing, and our last message carried these heads too. Automerge would
        generate no message then either; deciding it from the store's heads spares loading
        the document (a server loaded each shard of a catch-up three times, issue 17)."""
        held = self._held.get(doc_id)
        if held is None or self._need.get(doc_id):
            return False
        try:
            parsed, _ = parse_sync_message(held)
        except Exception:  # it parsed when it arrived; be safe and let Automerge decide
            return False
        ours = sorted(self.repo.heads(doc_id))
        return not parsed.need and sorted(parsed.heads) == ours \
            and self._sent_heads.get(doc_id) == ours

    def _may_hold(self, doc_id: str, parsed: Any, raw: bytes) -> bool:
        """Whether a final message may wait unapplied (§8.3a): it carries no change, is small,
        names a document this node stores, and the held messages stay within their bound (a
        member sending heads for thousands of documents must not grow this node's memory)."""
        return (not parsed.changes and len(raw) <= MAX_HELD_MESSAGE
                and self._held_bytes + len(raw) <= MAX_HELD_BYTES
                and self.repo.store.doc_meta(doc_id) is not None)

    def _forget_held(self, doc_id: str) -> bytes | None:
        held = self._held.pop(doc_id, None)
        if held is not None:
            self._held_bytes -= len(held)
        return held

    def _apply_held(self, doc_id: str, doc: Any, state: SyncState) -> SyncState:
        """Apply the peer's held message of heads alone to ``state`` (§8.3a); returns the
        state to go on with."""
        held = self._forget_held(doc_id)
        if held is None:
            return state
        try:
            doc.receive_sync_message(state, Message.decode(held))
        except Exception:  # only a hint of where the peer stands: start this document afresh
            log.info("a held sync message for %s did not apply; starting its sync afresh",
                     doc_id)
            self.reset(doc_id)
            state = self._states[doc_id] = SyncState()
        return state

    def generate(self, doc_id: str) -> list[dict[str, Any]]:
        """Frames to send for ``doc_id`` now (empty when the peer is believed in sync)."""
        if self._nothing_to_answer(doc_id):
            return []
        handle = self.repo.open_for_peer(doc_id)
        state = self._apply_held(doc_id, handle.doc, self._state_to_send(doc_id, handle.doc))
        msg = handle.doc.generate_sync_message(state)
        if msg is None:
            return []
        # Encoded once and parsed once: the message goes out as the binding encoded it, less
        # the capabilities that would steer the peer to v2, unless it is changed or split.
        encoded = msg.encode()
        parsed, rest = parse_sync_message(encoded)
        self._sent_heads[doc_id] = sorted(parsed.heads)
        raw: bytes | None = encoded[: len(encoded) - len(rest)] if rest else encoded
        need = self._need.pop(doc_id, None)
        if need:
            parsed.need = list(dict.fromkeys([*parsed.need, *sorted(need)]))
            raw = None
        if not parsed.changes:
            return [{"t": "sync", "doc": doc_id, "msg": raw or parsed.encode(), "batches": [],
                     "final": True}]
        frames: list[dict[str, Any]] = []
        part: list[bytes] = []
        size = 0
        for change in parsed.changes:
            if part and size + len(change) > self.max_part_bytes:
                frames.append(self._part(doc_id, part, None))
                part, size = [], 0
            part.append(bytes(change))
            size += len(change)
        if frames or raw is None:
            parsed.changes = part
            raw = parsed.encode()
        frames.append(self._part(doc_id, part, raw))
        return frames

    def _part(self, doc_id: str, chunks: list[bytes], envelope: bytes | None) -> dict[str, Any]:
        batches = self.repo.batches_covering(doc_id, chunks)
        if envelope is None:
            return {"t": "sync", "doc": doc_id, "msg": changes_message(chunks),
                    "batches": batches, "final": False}
        return {"t": "sync", "doc": doc_id, "msg": envelope, "batches": batches, "final": True}

    def settle(self) -> dict[str, int]:
        """Forget parts held back for a cutoff head that never came (the connection ended
        between the parts of a split message). Nothing of them was stored; returns the
        documents concerned and how many changes each held."""
        staged, self._staged = self._staged, {}
        return {doc_id: len(chunks) for doc_id, (chunks, _) in staged.items()}

    def _take_envelope(self, doc_id: str, parsed) -> None:
        """Keep the peer's heads, need and have from a message whose changes were refused.

        Without this, a peer holding a revoked author's late changes and a node holding the
        tombstone would refuse each other's messages forever: each round of the protocol would
        be reset before this side ever learnt what the peer lacks, so the tombstone would never
        reach it. With the envelope, the next message from here carries what the peer needs
        (the Identity change with the tombstone first), the peer re-checks and both converge
        (SPEC-005 §8.6)."""
        parsed.changes = []
        self._forget_held(doc_id)  # this envelope is newer
        try:
            self.repo.open_for_peer(doc_id).doc.receive_sync_message(
                self._state(doc_id), Message.decode(parsed.encode())
            )
        except Exception:  # the envelope alone is only a hint; a bad one is simply dropped
            self.reset(doc_id)

    # -- incoming --------------------------------------------------------------------------------
    def receive(self, frame: dict[str, Any]) -> int:
        """Verify, persist and apply one sync frame. Returns how many new changes it held.

        Raises :class:`Rejected` with nothing stored when any part of it fails.
        """
        doc_id, raw = frame.get("doc"), frame.get("msg")
        batches, final = frame.get("batches", []), frame.get("final", True)
        if not isinstance(doc_id, str) or not valid_doc_id(doc_id):
            raise Rejected("malformed", f"invalid document id {doc_id!r}")
        if not isinstance(raw, bytes) or not isinstance(batches, list):
            raise Rejected("malformed", "sync frame fields of the wrong type")
        if not all(isinstance(b, bytes) for b in batches):
            raise Rejected("malformed", "batch records must be bytes")
        try:
            parsed, _ = parse_sync_message(raw)
            # Decoded by the binding once: it must parse for Automerge before anything is
            # stored, and the same decoded message is what is applied (issue 12.7).
            message = Message.decode(raw)
        except Exception as exc:
            raise Rejected("malformed", f"sync message does not parse: {exc}") from exc
        chunks, records = list(parsed.changes), list(batches)
        staged = self._staged.pop(doc_id, None)
        if staged is not None:  # an earlier part let in a revoked author's changes: verify all
            chunks, records = staged[0] + chunks, staged[1] + records
        try:
            verified = self.repo.verify(doc_id, chunks, records, defer_heads=not final)
            if verified.unsettled:
                # A revoked author's change whose cutoff head may come in a later part: hold
                # this part (and any before it) in memory, unapplied and unstored, until the
                # part that settles it (SPEC-005 §6.1 h). Bounded; a peer that never sends it
                # simply loses what it staged.
                if sum(map(len, chunks)) > MAX_STAGED_BYTES:
                    raise Rejected("too_large", "parts held for a cutoff head exceed the bound")
                self._staged[doc_id] = (chunks, records)
                return 0
            if final and staged is None and self._may_hold(doc_id, parsed, raw):
                # Heads, need and have alone: held until we next generate (§8.3a). A newer
                # one replaces it: each carries the peer's whole view, and none carries
                # changes, so applying the last alone leaves the state where both would.
                self._held_bytes += len(raw) - len(self._held.get(doc_id, b""))
                self._held[doc_id] = raw
                self.their_heads[doc_id] = tuple(parsed.heads)
                return 0
            if final and doc_id in self._held:
                # In order: the held message first, then this one with its changes.
                handle = self.repo.open_for_peer(doc_id)
                self._apply_held(doc_id, handle.doc, self._state(doc_id))
            if final and staged is not None:
                # The held parts and this one as ONE message: applied once, committed once.
                parsed.changes = chunks
                self.repo.apply_verified(doc_id, verified, Message.decode(parsed.encode()),
                                         self._state(doc_id))
                self.their_heads[doc_id] = tuple(parsed.heads)
            elif final:
                self.repo.apply_verified(doc_id, verified, message, self._state(doc_id))
                self.their_heads[doc_id] = tuple(parsed.heads)
            else:
                self.repo.apply_verified(doc_id, verified, None, None)
        except Rejected as exc:
            self.rejected += 1
            self.reset(doc_id)
            if exc.code == "missing_dependency" and (exc.missing or exc.refused):
                # the missing hashes and the refused changes' own (SPEC-005 §8.6), bounded
                need = self._need.setdefault(doc_id, set())
                need.update(exc.missing[:1024])
                need.update(exc.refused[: max(0, 2048 - len(need))])
            if final and exc.code in ROSTER_CODES:
                self._take_envelope(doc_id, parsed)
            raise
        self.accepted += len(verified.changes)
        return len(verified.changes)

