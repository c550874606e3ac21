"""The document repository: one façade over loading, local changes, signing and remote apply.

Documents load on demand and are evicted when idle, so memory stays bounded however much a
node holds. Every local commit is signed (one batch per commit) and persisted before anyone
hears of it; every remote change is verified, then persisted, then applied (SPEC-005).
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

from automerge.core import ROOT, Document, Message, ScalarType, SyncState, Transaction

from .batches import BatchError, SignedBatch
from .chunks import ChangeInfo, ChunkError, change_hash, changes_message, parse_change
from .docids import valid_doc_id
from .keys import DeviceKey, device_id
from .roster import MAX_DEPTH, CertError, Roster, actor_key, parse_cert
from .store import DocMeta, Store, StoreError
from .verify import Rejected, Verified, verify_changes

log = logging.getLogger(__name__)

COMPACT_AFTER = 2000
# SPEC-001 §6.5: the document schema this version writes. Every document's root carries it; a
# node never writes to a document whose schema is newer (it still stores and forwards it).
DOC_SCHEMA = 1
MAX_CERTS_PER_CALL = 10_000
#: Signatures checked per call; the rest wait for the next call, so a member that floods the
#: Identity document with certificates cannot hold the event loop (SPEC-005 §5.1).
MAX_VERIFIES_PER_CALL = 500
#: Tombstones a peer not yet known may hand over, each only if it makes that peer a member.
MAX_RESCUES = 16
INCARNATION_BYTES = 8

ChangeListener = Callable[[str, bool], None]
#: ``hook(doc_id, doc)`` runs just before a document leaves memory (see Repo.before_evict).
EvictHook = Callable[[str, Document], None]
#: Documents in a peer's bulk transfer (a catch-up: a message brings at least as many changes
#: as the document held) that stay in memory at once, the one being loaded included: a
#: catch-up of a large store loads, applies and evicts its shards in turn instead of holding
#: all of them (issue 17: a 100k catch-up peaked near 10x the idle memory). One, since the
#: answer to a shard's message is generated before the next message is read
#: (node/mesh/peers.py yields to its sender after each frame), so a shard is not loaded again
#: to answer it; a shard of 2,500 entries holds about 16 MB in Automerge (SPEC-005 §7.7).
MAX_REMOTE_LOADED = 1
#: Bytes of changes (as accepted, before any compaction) of the documents kept in memory for a
#: peer's live traffic (messages that add less than the document held), least recently
#: applied to out first. A document in memory holds 11-12x those bytes (measured: 2.9 MB of
#: changes, 32 MB loaded; 6.1 MB, 76 MB), so this is about 150 MB at most, gone once idle.
#: Without it every live write from a peer to a shard not resident paid a load and a
#: re-index (21 + 13 ms for 1,250 entries): live propagation p50 went from 8.7 to 27.7 ms.
#: 12 MiB holds 16 shards of a month of 10,000 entries of each of two kinds (a month's notes
#: and the facts a consolidation run writes beside them); at 8 MiB the fact shards pushed the
#: note shards out in the run's second half and live notes paid a load on the peer again: p99
#: during a run 111-113 ms, against 92 ms at 12 MiB and 88 ms at 16 MiB (issue 14).
MAX_LIVE_BYTES = 12 << 20
#: ...and at most this many of them: bytes do not bound memory for a member who signs dense
#: changes (a compressed or run-length encoded change of many operations), so the live class
#: holds at most 16 such documents where the single bound held one.
MAX_LIVE_DOCS = 16
#: Bytes of peers' changes applied between two hand-backs of freed memory to the system
#: (``Repo.on_release``): a catch-up's heap and the store pages it read stay bounded while it
#: runs, not only once the node goes idle (SPEC-005 §7.7).
RELEASE_EVERY_BYTES = 4 << 20
#: What one device may make a node store (issue 18.5): a burst that covers catching up years of
#: history, refilled over a day. In memory: a restart forgets, which only ever helps the honest.
NEW_DOCS_BURST = 20_000
AUTHOR_BYTES_BURST = 2 << 30
REFILL_SECONDS = 86_400.0


class SchemaTooNew(StoreError):
    """A document written by a newer maia-node: this one must not write to it (SPEC-001
    §6.5). Its changes are still stored, verified and forwarded."""

    def __init__(self, doc_id: str, schema: int) -> None:
        super().__init__(f"{doc_id} has document schema {schema}, newer than this version "
                         f"writes ({DOC_SCHEMA}); upgrade maia-node on this device to change it")
        self.doc_id, self.schema = doc_id, schema


class DeviceRevoked(StoreError):
    """This device's own key is revoked in the roster it holds: it must not write, and says
    so in words a person can act on (issue 15.6). Its changes would be refused everywhere."""

    def __init__(self, info: dict[str, str]) -> None:
        who = info.get("by_name") or "another device"
        reason = f" ({info['reason']})" if info.get("reason") else ""
        super().__init__(
            f"this device was revoked by {who} ({info.get('by', '?')[:15]}) at "
            f"{info.get('at') or 'an unknown time'}{reason}; it can no longer change the "
            "mesh's documents. To use it again, set it up as a new device: 'maia init' in an "
            "empty data dir, then pair it.")
        self.info = info


def doc_schema(doc: Document) -> int | None:
    """The ``schema`` at a document's root, or None when it has none (written before §6.5)."""
    got = doc.get(ROOT, "schema")
    value = got[0] if got is not None else None
    if isinstance(value, tuple):  # (ScalarType, value) in the binding's scalar form
        value = value[1]
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class AuthorBudget:
    """Two token buckets (new documents, bytes) for one device key."""

    __slots__ = ("at", "bytes", "docs")

    def __init__(self, now: float) -> None:
        self.at, self.docs, self.bytes = now, float(NEW_DOCS_BURST), float(AUTHOR_BYTES_BURST)

    def allows(self, now: float, docs: int, size: int) -> bool:
        elapsed, self.at = max(0.0, now - self.at), now
        self.docs = min(NEW_DOCS_BURST, self.docs + elapsed * NEW_DOCS_BURST / REFILL_SECONDS)
        self.bytes = min(AUTHOR_BYTES_BURST,
                         self.bytes + elapsed * AUTHOR_BYTES_BURST / REFILL_SECONDS)
        return docs <= self.docs and size <= self.bytes

    def take(self, docs: int, size: int) -> None:
        self.docs -= docs
        self.bytes -= size


class DocHandle:
    """One loaded document. Read through ``doc``; write only through :meth:`Repo.change`."""

    __slots__ = ("doc", "doc_id", "last_used", "meta", "size")

    def __init__(self, doc_id: str, doc: Document, meta: DocMeta | None, size: int = 0) -> None:
        self.doc_id = doc_id
        self.doc = doc
        self.meta = meta
        self.last_used = time.monotonic()
        # bytes of its changes as accepted when it loaded, plus those applied or written
        # since: what the live bound weighs it by (SPEC-005 §7.7)
        self.size = size


class Repo:
    """Documents of one node: its key, its mesh, its roster and its store."""

    def __init__(
        self,
        store: Store,
        key: DeviceKey,
        mesh_id: bytes,
        *,
        max_loaded: int = 64,
        compact_after: int = COMPACT_AFTER,
        max_remote_loaded: int = MAX_REMOTE_LOADED,
    ) -> None:
        self.store = store
        self.key = key
        self.mesh_id = mesh_id
        # What an unmodified node does once its roster counts it revoked (change_many); only a
        # test's stand-in for a modified, hostile client turns it off.
        self.refuse_when_revoked = True
        self.max_loaded = max_loaded
        self.max_remote_loaded = max_remote_loaded
        self.max_live_bytes = MAX_LIVE_BYTES
        self.peer_changed_at = float("-inf")  # monotonic: when a peer's change last applied
        # Loaded documents a peer's changes were applied to (or loaded to answer a peer) and
        # not written here since they were loaded, least recently applied to first, each with
        # whether it is in a bulk transfer (True), kept for live traffic (False) or loaded for
        # the protocol alone (None: bounded as bulk); and the documents written here.
        self._remote: OrderedDict[str, bool | None] = OrderedDict()
        self._written: set[str] = set()
        # Called (when set) once RELEASE_EVERY_BYTES of peers' changes were applied and a
        # document went out for the remote bound: the node hands freed memory back there.
        self.on_release: Callable[[], None] | None = None
        self._applied_since_release = 0
        self._evict_hooks: list[EvictHook] = []
        self.compact_after = compact_after
        self._loaded: OrderedDict[str, DocHandle] = OrderedDict()
        self._listeners: list[ChangeListener] = []
        self._changed_at: dict[str, float] = {}
        # SPEC-005 §2.2: this process writes as key + a fresh incarnation, so a data dir rolled
        # back by a snapshot or a copied VM never reuses an (actor, seq) it already sent.
        self.actor = key.public_key + os.urandom(INCARNATION_BYTES)
        self.certs_pending = 0
        self._cert_backlog: list[bytes] = []
        self._budgets: dict[bytes, AuthorBudget] = {}
        self.roster = Roster(mesh_id)
        self.roster.add_many(self._stored_certs())

    # -- roster ----------------------------------------------------------------------------------
    def _stored_certs(self) -> list:
        certs = []
        for raw in self.store.certs():
            try:
                cert = parse_cert(raw)
            except CertError as exc:  # a damaged row must not stop the node; it is not trusted
                log.warning("ignoring an unreadable roster certificate in the store: %s", exc)
                continue
            if cert.verify():
                certs.append(cert)
        return certs

    def add_certs(self, raws: Iterable[bytes], *, chain_of: bytes | None = None) -> int:
        """Learn certificates (from a peer, a pairing or the Identity document); returns new.

        Cheap checks come first and signatures last (SPEC-005 §5.1): a certificate is parsed
        with every field bounded, dropped unless it is this mesh's genesis or its issuer is in
        Ever (a chain is followed in any order), and only then is its signature checked, at
        most ``MAX_VERIFIES_PER_CALL`` per call (``certs_pending`` counts the rest). With
        ``chain_of``, only the genesis, the endorsements leading to that key and tombstones are
        taken: what a peer may hand over before it is known.
        """
        pending = []
        for raw in list(raws)[:MAX_CERTS_PER_CALL]:
            try:
                cert = parse_cert(raw)
            except CertError as exc:
                log.info("refusing a roster certificate: %s", exc)
                continue
            if cert.cert_id in self.roster.certs or not self.roster.belongs(cert):
                continue
            pending.append(cert)
        rescues: list = []
        if chain_of is not None:  # its admission chain; tombstones only to rescue it, below
            rescues = [c for c in pending if c.kind == "revoke"][:MAX_RESCUES]
            pending = _chain(pending, chain_of)
        fresh = []
        budget = MAX_VERIFIES_PER_CALL
        ever = set(self.roster.ever)
        # admission distance, as the roster counts it: an endorsement deeper than MAX_DEPTH
        # admits nobody (crdt.roster.derive), so it is not stored either
        depth = dict(self.roster.depth)
        progress = True
        while pending and progress and budget > 0:
            progress = False
            for cert in list(pending):
                if budget <= 0:
                    break
                if cert.kind == "endorse" and depth.get(cert.signer, 0) >= MAX_DEPTH:
                    continue  # beyond the roster's depth for now: waits for a shorter path
                if cert.kind == "genesis" or cert.signer in ever:
                    pending.remove(cert)
                    budget -= 1
                    if not cert.verify():
                        log.info("refusing a roster certificate: signature does not verify")
                        continue
                    fresh.append(cert)
                    if cert.kind == "endorse":
                        ever.add(cert.body["subject"])
                        subject = cert.body["subject"]  # the shortest path, as derive counts
                        depth[subject] = min(depth.get(subject, MAX_DEPTH + 1),
                                             depth.get(cert.signer, 0) + 1)
                    elif cert.kind == "genesis":
                        ever.add(cert.signer)
                    progress = True
        self.certs_pending = len(pending) if budget <= 0 else 0
        if budget <= 0 and chain_of is None:
            # Kept for the next call (the node's upkeep makes one): certificates that came in
            # a certs frame are not in the Identity document to be found again (§8.9).
            self._cert_backlog = [c.encode() for c in pending][:MAX_CERTS_PER_CALL]
        if pending and budget > 0:
            log.info("ignored %d certificate(s) from issuers outside the roster", len(pending))
        if rescues and not self._would_admit(fresh, chain_of):
            # A peer refused here only because we still count a revocation of it may carry
            # the more senior revocation that undoes it (SPEC-005 §9.8). Only such a
            # tombstone is taken from a peer not yet known; others wait for certs frames.
            for cert in rescues:
                if cert.signer in ever and self._would_admit([*fresh, cert], chain_of) \
                        and cert.verify():
                    fresh.append(cert)
                    break
        if fresh:
            try:
                self.store.put_certs([(c.cert_id, c.encode()) for c in fresh])
            except Exception as exc:  # e.g. a full identity map: learn nothing, raise nothing
                log.warning("could not store %d roster certificate(s): %s", len(fresh), exc)
                return 0
            self.roster.add_many(fresh)
        return len(fresh)

    def take_cert_backlog(self) -> list[bytes]:
        """Certificates left unchecked by the per-call bound, to hand to :meth:`add_certs`."""
        backlog, self._cert_backlog = self._cert_backlog, []
        return backlog

    def _would_admit(self, extra: list, key: bytes | None) -> bool:
        if key is None:
            return True
        trial = Roster.build(self.mesh_id, [*self.roster.certs.values(), *extra])
        return trial.is_member(key)

    # -- listeners -------------------------------------------------------------------------------
    def subscribe(self, listener: ChangeListener) -> None:
        """``listener(doc_id, local)`` runs after every durable change to a document."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: ChangeListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self, doc_id: str, local: bool) -> None:
        self._changed_at[doc_id] = time.monotonic()
        if not local:
            self.peer_changed_at = self._changed_at[doc_id]
        for listener in list(self._listeners):
            try:
                listener(doc_id, local)
            except Exception:
                log.exception("change listener failed for %s", doc_id)

    # -- loading ---------------------------------------------------------------------------------
    def open(self, doc_id: str) -> DocHandle:
        if not valid_doc_id(doc_id):
            raise ValueError(f"invalid document id {doc_id!r}")
        handle = self._loaded.get(doc_id)
        if handle is None:
            handle = self._load(doc_id)
            self._loaded[doc_id] = handle
            self._evict_over_limit()
        else:
            self._loaded.move_to_end(doc_id)
        handle.last_used = time.monotonic()
        return handle

    def _load(self, doc_id: str) -> DocHandle:
        snapshot, chunks = self.store.load_doc(doc_id)
        data = snapshot + b"".join(chunks)
        doc = Document.load(data) if data else Document(actor_id=self.actor)
        doc.set_actor(self.actor)
        # weighed by its changes' bytes as accepted: a compacted snapshot is about 7x smaller
        # than the log it folds, the memory it loads into is not (SPEC-005 §7.7)
        size = max(len(data), self.store.doc_bytes(doc_id)) if data else 0
        return DocHandle(doc_id, doc, self.store.doc_meta(doc_id), size)

    def is_loaded(self, doc_id: str) -> bool:
        return doc_id in self._loaded

    def before_evict(self, hook: EvictHook) -> None:
        """``hook(doc_id, doc)`` runs before a document leaves memory for the loaded-document
        limits or idleness (not for :meth:`evict`): derived state such as an index can be
        brought up to date while the document is still in memory, instead of loading it
        again later."""
        self._evict_hooks.append(hook)

    def forget_before_evict(self, hook: EvictHook) -> None:
        """Stop calling ``hook`` (its owner is closing)."""
        if hook in self._evict_hooks:
            self._evict_hooks.remove(hook)

    def _unload(self, doc_id: str) -> None:
        handle = self._loaded.pop(doc_id, None)
        self._written.discard(doc_id)
        if handle is None:
            self._remote.pop(doc_id, None)
            return
        for hook in list(self._evict_hooks):  # they may ask held_for_live
            try:
                hook(doc_id, handle.doc)
            except Exception:
                log.exception("eviction hook failed for %s", doc_id)
        self._remote.pop(doc_id, None)

    def held_for_live(self, doc_id: str) -> bool:
        """Whether ``doc_id`` is (or, in a ``before_evict`` hook, was) held for peers' live
        traffic rather than a bulk transfer or local use (SPEC-005 §7.7)."""
        return self._remote.get(doc_id) is False

    def _evict_over_limit(self) -> None:
        while len(self._loaded) > self.max_loaded:
            doc_id = next(iter(self._loaded))
            self._unload(doc_id)
            log.debug("evicted %s (loaded-document limit)", doc_id)

    def open_for_peer(self, doc_id: str) -> DocHandle:
        """:meth:`open` for a peer's sake (its next sync message): a document loaded for this
        alone counts as part of a bulk transfer, so answering every shard of a catch-up does
        not leave them all resident (SPEC-005 §7.7). One a local reader or writer holds stays
        under the general bound."""
        held_locally = doc_id in self._loaded and doc_id not in self._remote
        if held_locally or doc_id in self._written:
            return self.open(doc_id)
        bulk = self._remote.get(doc_id)  # loaded for the protocol alone: None, as bulk
        self._make_room_for_remote(doc_id, bulk is not False)
        handle = self.open(doc_id)
        self._remote[doc_id] = bulk
        self._remote.move_to_end(doc_id)
        self._evict_remote(doc_id)
        return handle

    def _make_room_for_remote(self, doc_id: str, bulk: bool) -> None:
        """Before a document is loaded for a peer's sake, evict the least recently applied
        remote documents so that it makes the bounds, not one more: a catch-up then holds at
        most ``max_remote_loaded`` shards of its bulk transfer at its peak, the one being
        applied included (before, the oldest left only after the new one was in memory; with
        shards of 6,000 entries, about 30 MB each, that one extra was a tenth of a 100k
        catch-up's peak, issue 17)."""
        if doc_id in self._loaded or doc_id in self._written:
            return
        self._evict_remote(doc_id, max(self.max_remote_loaded - 1, 0) if bulk else None)

    def _evict_remote(self, current: str | None, bulk_keep: int | None = None) -> None:
        """Evict remote documents over the bounds, least recently applied to first, never
        ``current``: documents in a bulk transfer over ``max_remote_loaded`` (or
        ``bulk_keep``), those kept for live traffic over ``max_live_bytes`` bytes of changes
        or ``MAX_LIVE_DOCS`` documents."""
        bulk_keep = self.max_remote_loaded if bulk_keep is None else bulk_keep
        bulk = [d for d, b in self._remote.items() if b is not False]
        live = [d for d, b in self._remote.items() if b is False]
        evicted = False
        excess = len(bulk) - bulk_keep
        for doc_id in bulk:
            if excess <= 0:
                break
            if doc_id != current:
                self._unload(doc_id)
                evicted = True
                excess -= 1
        live_bytes = sum(self._loaded[d].size for d in live if d in self._loaded)
        live_docs = len(live)
        for doc_id in live:
            if live_bytes <= self.max_live_bytes and live_docs <= MAX_LIVE_DOCS:
                break
            if doc_id != current:
                handle = self._loaded.get(doc_id)
                live_bytes -= handle.size if handle is not None else 0
                live_docs -= 1
                self._unload(doc_id)
                evicted = True
        if evicted and self.on_release is not None and (
                self._applied_since_release >= RELEASE_EVERY_BYTES):
            self._applied_since_release = 0
            try:
                self.on_release()
            except Exception:
                log.exception("handing memory back failed")

    def evict_idle(self, idle_seconds: float) -> int:
        cutoff = time.monotonic() - idle_seconds
        idle = [d for d, h in self._loaded.items() if h.last_used < cutoff]
        for doc_id in idle:
            self._unload(doc_id)
        return len(idle)

    def evict(self, doc_id: str) -> None:
        self._loaded.pop(doc_id, None)
        self._remote.pop(doc_id, None)
        self._written.discard(doc_id)

    def heads(self, doc_id: str) -> tuple[bytes, ...]:
        """Heads from the store's metadata: no need to load the document."""
        handle = self._loaded.get(doc_id)
        if handle is not None:
            return tuple(handle.doc.get_heads())
        meta = self.store.doc_meta(doc_id)
        return meta.heads if meta else ()

    # -- local writes ----------------------------------------------------------------------------
    def change(
        self, doc_id: str, *edits: Callable[[Transaction], None], roster_change: bool = False,
    ) -> list[ChangeInfo]:
        """Apply each edit as its own Automerge change, sign them as one batch, persist.

        Nothing is visible to peers before the batch is durable. If persisting fails the
        document is dropped from memory, so memory never runs ahead of the store.
        """
        return self.change_many({doc_id: edits}, roster_change=roster_change).get(doc_id, [])

    def change_many(
        self, edits_by_doc: dict[str, Sequence[Callable[[Transaction], None]]],
        *, roster_change: bool = False,
    ) -> dict[str, list[ChangeInfo]]:
        """Like :meth:`change` for several documents of one layer, stored in ONE transaction:
        a bulk write is durable whole or not at all. On failure every touched document is
        dropped from memory (reloaded from the store, which holds none of it).

        A device whose roster counts itself revoked refuses every write but a roster change
        (``roster_change``): a founder that a thief revoked first must still be able to issue
        the more senior revocation that undoes it (SPEC-005 §5.4), and a truly revoked key's
        certificates count nowhere anyway.
        """
        touched: list[str] = []
        writes = []
        out: dict[str, list[ChangeInfo]] = {}
        revoked = self.roster.revocation(self.key.public_key)
        if revoked is not None and not roster_change and self.refuse_when_revoked:
            raise DeviceRevoked(revoked)
        try:
            for doc_id, edits in edits_by_doc.items():
                handle = self.open(doc_id)
                self._remote.pop(doc_id, None)  # written here: kept by the general limit
                self._written.add(doc_id)
                touched.append(doc_id)
                schema = doc_schema(handle.doc)
                if schema is not None and schema > DOC_SCHEMA:
                    raise SchemaTooNew(doc_id, schema)
                before = handle.doc.get_heads()
                for n, edit in enumerate(edits):
                    with handle.doc.transaction() as tx:
                        if n == 0 and schema is None:  # §6.5: every document carries it
                            tx.put(ROOT, "schema", ScalarType.Int, DOC_SCHEMA)
                        edit(tx)
                new = handle.doc.get_changes(before)
                if not new:
                    continue
                # ``raw_bytes``: the uncompressed chunk. ``bytes`` deflates each change, which
                # costs as much as the change itself (issue 17); both hash alike and load alike,
                # and compaction folds the log into a compressed snapshot anyway.
                infos = [ChangeInfo(c.hash, c.actor_id, c.seq, tuple(c.deps), c.raw_bytes)
                         for c in new]
                batch = SignedBatch.sign(self.key, self.mesh_id, doc_id, [i.hash for i in infos])
                writes.append((doc_id, infos, [batch], handle.doc.get_heads()))
                out[doc_id] = infos
                handle.size += sum(len(i.chunk) for i in infos)
            metas = self.store.commit_many(writes, fresh=True) if writes else {}
        except BaseException:
            for doc_id in touched:
                self.evict(doc_id)
            raise
        for doc_id, meta in metas.items():
            handle = self._loaded.get(doc_id)
            if handle is not None:
                handle.meta = meta
            self._notify(doc_id, True)
        return out

    # -- remote changes --------------------------------------------------------------------------
    def verify(
        self, doc_id: str, chunks: Sequence[bytes], batches: Sequence[bytes],
        *, defer_heads: bool = False,
    ) -> Verified:
        self._check_dropped(doc_id, chunks, batches)
        verified = verify_changes(
            store=self.store,
            roster=self.roster,
            mesh_id=self.mesh_id,
            doc_id=doc_id,
            chunks=chunks,
            batch_records=batches,
            defer_heads=defer_heads,
        )
        self._charge(doc_id, verified)
        return verified

    def _check_dropped(self, doc_id: str, chunks: Sequence[bytes],
                       batch_records: Sequence[bytes]) -> None:
        """A document the owner dropped stays dropped while only the devices it was dropped as
        write to it; a change another member signed makes it shared work again (SPEC-005 §6.7).

        Decided before verification, from the parsed actors (so refusing costs no signature
        check), and for each part of a split message alone: a part with another member's
        signed change lifts the tombstone even when its dependencies are still missing, so the
        peer's next, whole message is taken."""
        dropped = self.store.dropped_keys(doc_id)
        if not dropped:
            return
        try:
            infos = [parse_change(bytes(c)) for c in chunks]
        except ChunkError:
            return  # verification names the fault
        if not infos:
            return  # a message of heads and needs only: the exchange goes on
        others = {actor_key(i.actor) for i in infos} - dropped
        if not others:
            raise Rejected("dropped", f"{doc_id[:120]} was dropped here as documents nobody "
                           f"sees, of device(s) {', '.join(sorted(map(device_id, dropped)))}",
                           authors=dropped)
        by_key = {actor_key(i.actor): set() for i in infos}
        for i in infos:
            by_key[actor_key(i.actor)].add(i.hash)
        for raw in list(dict.fromkeys(bytes(r) for r in batch_records))[: len(infos) + 16]:
            try:
                batch = SignedBatch.decode(raw)
            except BatchError:
                continue
            if (batch.signer in others and self.roster.is_member(batch.signer)
                    and batch.mesh_id == self.mesh_id and batch.doc_id == doc_id
                    and by_key[batch.signer] & set(batch.hashes) and batch.signature_valid()):
                self.store.lift_drop(doc_id)
                log.info("%s is shared work again (a change of %s): its drop is lifted",
                         doc_id, device_id(batch.signer))
                return

    def drop_documents(self, doc_ids: Sequence[str], keys: Iterable[bytes]) -> int:
        """Drop whole documents that only ``keys`` wrote (SPEC-005 §6.7): out of memory and out
        of the store, a tombstone kept that names each one's own authors (another device of
        ``keys`` writing there later lifts it, as anyone else does). The caller checks that
        they are unseen. Returns bytes freed."""
        keys = frozenset(keys)
        if self.key.public_key in keys:
            raise ValueError("this device's own documents cannot be dropped")
        authors: dict[str, set[bytes]] = {}
        for doc_id in doc_ids:
            if not doc_id.startswith("memory/"):
                raise ValueError(f"only Memory documents can be dropped, not {doc_id[:120]!r}")
            held = {actor_key(a) for a in self.store.doc_actors(doc_id)}
            if not held or not held <= keys:
                raise ValueError(f"{doc_id[:120]} holds changes of other devices")
            authors[doc_id] = held
        for doc_id in doc_ids:
            self.evict(doc_id)
        return self.store.drop_documents(authors, time.time())

    def _charge(self, doc_id: str, verified: Verified) -> None:
        """Bound what one author can make this node store: new documents and bytes per key,
        token buckets with a burst that covers catching up a long history (issue 18.5).

        A member flooding documents is refused with ``quota_exceeded`` after its burst,
        whoever relays it; ``maia status`` shows the bytes held per device."""
        if not verified.changes:
            return
        new_doc = self.store.doc_meta(doc_id) is None
        costs: dict[bytes, tuple[int, int]] = {}
        for c in verified.changes:  # by weight (§6.6): a dense change is not a small one
            size = costs.get(actor_key(c.actor), (0, 0))[1]
            costs[actor_key(c.actor)] = (1 if new_doc else 0, size + c.weight)
        now = time.monotonic()
        buckets = []
        for key, (docs, size) in costs.items():
            bucket = self._budgets.get(key)
            if bucket is None:
                bucket = self._budgets[key] = AuthorBudget(now)
            if not bucket.allows(now, docs, size):
                raise Rejected(
                    "quota_exceeded",
                    f"device {device_id(key)} has sent more new documents or bytes than a "
                    "node accepts from one device in a day",
                )
            buckets.append((bucket, docs, size))
        for bucket, docs, size in buckets:
            bucket.take(docs, size)

    def apply_verified(
        self, doc_id: str, verified: Verified, message: Message | bytes | None,
        state: SyncState | None,
    ) -> None:
        """Apply verified changes in memory, then persist them in one transaction.

        Automerge applies first, so nothing it would refuse is ever stored (a stored change
        that fails to load would brick the document on every later start); the store is
        written before anyone is told, and if it fails the document is dropped from memory
        and reloaded from the store, so memory never runs ahead of it (SPEC-005 §7.1).
        """
        # A message that brings at least as many changes as the document held before is a
        # transfer of its content (a catch-up): bounded as bulk. One that adds less to it is
        # live traffic, kept within the live bytes. One with no change leaves the class as it
        # was: None (bounded as bulk) for a document loaded for the protocol alone.
        prior = self._remote.get(doc_id, None if doc_id not in self._loaded else False)
        bulk: bool | None = prior
        if verified.changes:
            held = self._loaded[doc_id].meta if doc_id in self._loaded else \
                self.store.doc_meta(doc_id)
            bulk = len(verified.changes) >= (held.changes if held is not None else 0)
        self._make_room_for_remote(doc_id, bulk is not False)
        if doc_id not in self._written:
            self._remote[doc_id] = bulk
            self._remote.move_to_end(doc_id)
        handle = self.open(doc_id)
        try:
            if message is not None and state is not None:
                if not isinstance(message, Message):
                    message = Message.decode(message)
                handle.doc.receive_sync_message(state, message)
            elif verified.changes:
                only_changes = changes_message([c.chunk for c in verified.changes])
                handle.doc.receive_sync_message(SyncState(), Message.decode(only_changes))
        except Exception as exc:
            self.evict(doc_id)
            raise Rejected("malformed", f"Automerge refused the changes: {exc}") from exc
        if not verified.changes:
            self._evict_remote(doc_id)
            return
        applied = sum(c.weight for c in verified.changes)  # (§6.6)
        self._applied_since_release += applied
        handle.size += applied
        try:
            handle.meta = self.store.commit_changes(
                doc_id, verified.changes, verified.batches, handle.doc.get_heads()
            )
        except BaseException:
            self.evict(doc_id)
            raise
        self._notify(doc_id, False)
        self._evict_remote(doc_id)

    # -- roster changes --------------------------------------------------------------------------
    def recheck(self, doc_ids: Iterable[str] | None = None) -> dict[str, int]:
        """Re-check every held change against the current roster; quarantine what fails.

        Run whenever membership changes (a tombstone, a revoked issuer's admissions falling
        away): a change whose author is not a member, or is revoked and not an ancestor of its
        cutoff head, moves to quarantine with every change that depends on it, so every node
        that holds the same certificates ends with the same changes (SPEC-005 §5.10).
        Documents whose every author is a member are skipped without loading.
        """
        out: dict[str, int] = {}
        if self.roster.founder is None:
            # No roster derived (none held yet, or deriving it failed): every author would
            # look unknown and every document go to quarantine. Nothing is judged without one.
            log.warning("no roster to re-check the documents against; they are left as they are")
            return out
        for doc_id in self.store.doc_ids() if doc_ids is None else list(doc_ids):
            try:
                removed = self._recheck_one(doc_id)
            except Exception:  # one document must not stop the others (or the node's start)
                log.exception("re-checking %s failed; it is tried again at the next change",
                              doc_id)
                continue
            if removed:
                out[doc_id] = removed
        if doc_ids is None:
            self.readmit()
        return out

    def _new_incarnation(self) -> None:
        """Write under a fresh actor from now on. Needed when our own changes left a document
        (quarantine): the next change there would otherwise reuse a (actor, seq) that peers
        already hold with another hash, which they refuse and which would split the document
        once the quarantined changes come back (SPEC-005 §2.2, §6.1 f)."""
        self.actor = self.key.public_key + os.urandom(INCARNATION_BYTES)
        for handle in self._loaded.values():
            handle.doc.set_actor(self.actor)
        log.info("writing under a new incarnation: some of this device's changes were "
                 "quarantined")

    def _recheck_one(self, doc_id: str) -> int:
        """Re-check one document (see :meth:`recheck`); returns how many changes left."""
        roster = self.roster
        actors = self.store.doc_actors(doc_id)
        if all(actor_key(a) in roster.members for a in actors):
            return 0
        was_loaded = self.is_loaded(doc_id)
        handle = self.open(doc_id)
        changes = handle.doc.get_changes([])
        deps_of = {c.hash: c.deps for c in changes}
        allowed: set[bytes] = set()
        for key in {actor_key(a) for a in actors} & set(roster.revoked):
            for head in roster.revoked[key].get(doc_id, {}).values():
                if head.hash in deps_of:
                    _ancestors(head.hash, deps_of, allowed)
        # An ancestor of a cutoff head vouches only for the revoked author's own changes;
        # another author's change in that history is judged on its own.
        allowed = {c.hash for c in changes
                   if c.hash in allowed and actor_key(c.actor_id) in roster.revoked}
        bad = {
            c.hash for c in changes
            if actor_key(c.actor_id) not in roster.members and c.hash not in allowed
        }
        if not bad:
            if not was_loaded:
                self.evict(doc_id)  # one document at a time, however many are checked
            return 0
        for c in changes:  # get_changes is in causal order: dependants come later
            if c.hash not in bad and any(d in bad for d in c.deps):
                bad.add(c.hash)
        kept = [c for c in changes if c.hash not in bad]
        deps = {d for c in kept for d in c.deps}
        heads = [c.hash for c in kept if c.hash not in deps]
        rebuilt = handle.doc.fork(heads) if kept else Document(actor_id=self.actor)
        rebuilt.set_actor(self.actor)
        removed = [(c.hash, c.bytes) for c in changes if c.hash in bad]
        if any(bytes(c.actor_id) == self.actor for c in changes if c.hash in bad):
            self._new_incarnation()
        seqs: dict[bytes, tuple[int, int]] = {}
        for c in kept:
            seq, size = seqs.get(c.actor_id, (0, 0))
            seqs[c.actor_id] = (max(seq, c.seq), size + len(c.bytes))
        self.store.replace_document(
            doc_id, rebuilt.save() if kept else b"", heads, removed, seqs
        )
        self.evict(doc_id)
        log.warning(
            "quarantined %d change(s) in %s that the roster no longer allows",
            len(removed), doc_id,
        )
        self._notify(doc_id, False)
        return len(removed)

    def readmit(self) -> dict[str, int]:
        """Take back from quarantine every change the current roster allows again.

        A revocation that counted for a while (a thief's, before the owner's more senior one
        undid it) must not lose honest data for good: when membership grows back, what it
        quarantined is verified again, change by change in causal order, exactly as if a peer
        had sent it (SPEC-005 §5.10)."""
        out: dict[str, int] = {}
        for layer in ("identity", "memory"):
            for doc_id, rows in self.store.quarantined_changes(layer).items():
                waiting = {digest: (batch_id, chunk) for digest, batch_id, chunk in rows}
                back: list[bytes] = []
                progress = True
                while waiting and progress:
                    progress = False
                    for digest, (batch_id, chunk) in list(waiting.items()):
                        try:
                            verified = self.verify(doc_id, [chunk],
                                                   self.store.batches(doc_id, [batch_id]))
                            self.apply_verified(doc_id, verified, None, None)
                        except Rejected:
                            continue
                        del waiting[digest]
                        back.append(digest)
                        progress = True
                if back:
                    self.store.release_quarantined(doc_id, back)
                    out[doc_id] = len(back)
                    log.warning("took back %d change(s) of %s from quarantine", len(back), doc_id)
        return out

    # -- upkeep ----------------------------------------------------------------------------------
    def compact(self, doc_id: str, quiet: float = 0.0) -> bool:
        """Fold the change log into a snapshot when it has grown past ``compact_after``.

        With ``quiet``, a document that changed more recently is left for a later pass, so a
        catch-up is not slowed by saving a document that is still growing.
        """
        meta = self.store.doc_meta(doc_id)
        if meta is None or meta.pending < self.compact_after:
            return False
        if quiet and time.monotonic() - self._changed_at.get(doc_id, 0.0) < quiet:
            return False
        was_loaded = self.is_loaded(doc_id)
        handle = self.open(doc_id)
        self.store.write_snapshot(
            doc_id, handle.doc.save(), meta.changes, tuple(handle.doc.get_heads())
        )
        if not was_loaded:
            self.evict(doc_id)
        return True

    def compact_loaded(self, quiet: float = 0.0, limit: int | None = None) -> list[str]:
        """Compact the documents already in memory whose change log has grown.

        Only loaded documents: saving one in memory is cheap, while loading one from a long
        change log just to fold it costs several times its own size at the peak (a 6,000-entry
        shard: about 90 MB for a moment). A document nobody opens keeps its log, which costs
        disk only, and is folded after its next use; so a node started on a large import does
        no work proportional to it (issue 18.8).
        """
        done: list[str] = []
        for doc_id in self.loaded_ids():
            if limit is not None and len(done) >= limit:
                break
            if self.compact(doc_id, quiet):
                done.append(doc_id)
        return done

    def loaded_ids(self) -> list[str]:
        """Ids of the documents in memory now (a copy: callers may load or evict)."""
        return list(self._loaded)

    def batches_covering(self, doc_id: str, chunks: Sequence[bytes]) -> list[bytes]:
        hashes = [change_hash(bytes(c)) for c in chunks]
        ids = self.store.batch_ids_for(doc_id, hashes)
        return self.store.batches(doc_id, list(dict.fromkeys(ids.values())))


def _ancestors(start: bytes, deps_of: dict[bytes, Sequence[bytes]], into: set[bytes]) -> None:
    stack = [start]
    while stack:
        h = stack.pop()
        if h in into or h not in deps_of:
            continue
        into.add(h)
        stack.extend(deps_of[h])


def _chain(certs: list, key: bytes) -> list:
    """The genesis and the endorsements that lead to ``key``, walking back from it."""
    out = [c for c in certs if c.kind == "genesis"][:1]
    current, seen = key, set()
    while current not in seen and len(out) < 64:
        seen.add(current)
        step = min((c for c in certs if c.kind == "endorse" and c.body["subject"] == current),
                   key=lambda c: c.cert_id, default=None)
        if step is None:
            break
        out.append(step)
        current = step.signer
    return out
