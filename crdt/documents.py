"""The document repository: one façade over loading, local changes, signing and remote apply.

Documents load on demand and are evicted when idle, so memory stays bounded however much a
node holds. Every local commit is signed (one batch per commit) and persisted before anyone
hears of it; every remote change is verified, then persisted, then applied (SPEC-005).
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

from automerge.core import Document, Message, SyncState, Transaction

from .batches import SignedBatch
from .chunks import ChangeInfo, change_hash, changes_message
from .keys import DeviceKey
from .roster import Cert, Roster, decode_cert
from .store import DocMeta, Store
from .verify import Verified, verify_changes

log = logging.getLogger(__name__)

DOC_ID_RE = re.compile(r"^(identity|memory/[a-z][a-z0-9_-]{0,31}/\d{4}-\d{2}/[0-7])$")
COMPACT_AFTER = 2000
MAX_CERTS_PER_CALL = 10_000

ChangeListener = Callable[[str, bool], None]


def valid_doc_id(doc_id: str) -> bool:
    return isinstance(doc_id, str) and DOC_ID_RE.match(doc_id) is not None


class DocHandle:
    """One loaded document. Read through ``doc``; write only through :meth:`Repo.change`."""

    __slots__ = ("doc", "doc_id", "last_used", "meta")

    def __init__(self, doc_id: str, doc: Document, meta: DocMeta | None) -> None:
        self.doc_id = doc_id
        self.doc = doc
        self.meta = meta
        self.last_used = time.monotonic()


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
    ) -> None:
        self.store = store
        self.key = key
        self.mesh_id = mesh_id
        self.max_loaded = max_loaded
        self.compact_after = compact_after
        self._loaded: OrderedDict[str, DocHandle] = OrderedDict()
        self._listeners: list[ChangeListener] = []
        self._changed_at: dict[str, float] = {}
        self.roster = Roster.build(mesh_id, self._stored_certs())

    # -- roster ----------------------------------------------------------------------------------
    def _stored_certs(self) -> list[Cert]:
        certs = []
        for raw in self.store.certs():
            try:
                certs.append(decode_cert(raw))
            except Exception:  # a damaged row must not stop the node; it is simply not trusted
                log.warning("ignoring an unreadable roster certificate in the store")
        return certs

    def add_certs(self, raws: Iterable[bytes]) -> int:
        """Learn certificates (from a peer, a pairing or the Identity document); returns new.

        Only certificates issued by a device the roster has ever admitted are kept (a chain is
        followed in any order), so a stranger cannot fill the store with self-made ones; at most
        ``MAX_CERTS_PER_CALL`` are looked at (SPEC-005 §9.8).
        """
        pending = []
        for raw in list(raws)[:MAX_CERTS_PER_CALL]:
            try:
                pending.append(decode_cert(raw))
            except Exception as exc:
                log.info("refusing a roster certificate: %s", exc)
        fresh = []
        progress = True
        while pending and progress:
            progress = False
            for cert in list(pending):
                if cert.cert_id in self.roster.certs:
                    pending.remove(cert)
                elif cert.kind == "genesis" or cert.signer in self.roster.ever:
                    pending.remove(cert)
                    if self.roster.add(cert):
                        fresh.append((cert.cert_id, cert.encode()))
                        progress = True
        if pending:
            log.info("ignored %d certificate(s) from issuers outside the roster", len(pending))
        if fresh:
            self.store.put_certs(fresh)
        return len(fresh)

    # -- listeners -------------------------------------------------------------------------------
    def subscribe(self, listener: ChangeListener) -> None:
        """``listener(doc_id, local)`` runs after every durable change to a document."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: ChangeListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self, doc_id: str, local: bool) -> None:
        self._changed_at[doc_id] = time.monotonic()
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
        doc = Document.load(data) if data else Document(actor_id=self.key.public_key)
        doc.set_actor(self.key.public_key)
        return DocHandle(doc_id, doc, self.store.doc_meta(doc_id))

    def is_loaded(self, doc_id: str) -> bool:
        return doc_id in self._loaded

    def _evict_over_limit(self) -> None:
        while len(self._loaded) > self.max_loaded:
            doc_id, _ = self._loaded.popitem(last=False)
            log.debug("evicted %s (loaded-document limit)", doc_id)

    def evict_idle(self, idle_seconds: float) -> int:
        cutoff = time.monotonic() - idle_seconds
        idle = [d for d, h in self._loaded.items() if h.last_used < cutoff]
        for doc_id in idle:
            del self._loaded[doc_id]
        return len(idle)

    def evict(self, doc_id: str) -> None:
        self._loaded.pop(doc_id, None)

    def heads(self, doc_id: str) -> tuple[bytes, ...]:
        """Heads from the store's metadata: no need to load the document."""
        handle = self._loaded.get(doc_id)
        if handle is not None:
            return tuple(handle.doc.get_heads())
        meta = self.store.doc_meta(doc_id)
        return meta.heads if meta else ()

    # -- local writes ----------------------------------------------------------------------------
    def change(self, doc_id: str, *edits: Callable[[Transaction], None]) -> list[ChangeInfo]:
        """Apply each edit as its own Automerge change, sign them as one batch, persist.

        Nothing is visible to peers before the batch is durable. If persisting fails the
        document is dropped from memory, so memory never runs ahead of the store.
        """
        handle = self.open(doc_id)
        before = handle.doc.get_heads()
        try:
            for edit in edits:
                with handle.doc.transaction() as tx:
                    edit(tx)
            new = handle.doc.get_changes(before)
            if not new:
                return []
            infos = [ChangeInfo(c.hash, c.actor_id, c.seq, tuple(c.deps), c.bytes) for c in new]
            batch = SignedBatch.sign(self.key, self.mesh_id, doc_id, [i.hash for i in infos])
            handle.meta = self.store.commit_changes(
                doc_id, infos, [batch], handle.doc.get_heads()
            )
        except BaseException:
            self.evict(doc_id)
            raise
        self._notify(doc_id, True)
        return infos

    # -- remote changes --------------------------------------------------------------------------
    def verify(self, doc_id: str, chunks: Sequence[bytes], batches: Sequence[bytes]) -> Verified:
        return verify_changes(
            store=self.store,
            roster=self.roster,
            mesh_id=self.mesh_id,
            doc_id=doc_id,
            chunks=chunks,
            batch_records=batches,
        )

    def apply_verified(
        self, doc_id: str, verified: Verified, message: bytes | None, state: SyncState | None
    ) -> None:
        """Persist verified changes, then apply them (with the sync message when there is one)."""
        handle = self.open(doc_id)
        if verified.changes:
            # Heads are recorded after the in-memory apply below; the durable part is the
            # change log, from which the document (and its heads) are rebuilt on load.
            handle.meta = self.store.commit_changes(
                doc_id, verified.changes, verified.batches, handle.doc.get_heads()
            )
        try:
            if message is not None and state is not None:
                handle.doc.receive_sync_message(state, Message.decode(message))
            elif verified.changes:
                only_changes = changes_message([c.chunk for c in verified.changes])
                handle.doc.receive_sync_message(SyncState(), Message.decode(only_changes))
        except Exception:
            self.evict(doc_id)  # reload from the store, which holds exactly what was verified
            raise
        if verified.changes:
            heads = handle.doc.get_heads()
            handle.meta = self.store.commit_changes(doc_id, [], [], heads)
            self._notify(doc_id, False)

    # -- revocation ------------------------------------------------------------------------------
    def quarantine_revoked(self) -> dict[str, int]:
        """Drop changes a revoked device made after its cutoff (and all that depend on them).

        A tombstone can arrive after such changes were accepted; every node must end with the
        same set of changes (SPEC-005 §5.10), so each affected document is rebuilt at the heads
        of what remains and the excluded changes move to quarantine. Returns counts per doc.
        """
        revoked = self.roster.revoked
        if not revoked:
            return {}
        out: dict[str, int] = {}
        for doc_id in self.store.doc_ids():
            handle = self.open(doc_id)
            changes = handle.doc.get_changes([])
            bad = {
                c.hash for c in changes
                if c.actor_id in revoked and c.seq > revoked[c.actor_id].get(doc_id, 0)
            }
            if not bad:
                continue
            for c in changes:  # get_changes is in causal order: dependants come later
                if c.hash not in bad and any(d in bad for d in c.deps):
                    bad.add(c.hash)
            kept = [c for c in changes if c.hash not in bad]
            deps = {d for c in kept for d in c.deps}
            heads = [c.hash for c in kept if c.hash not in deps]
            rebuilt = handle.doc.fork(heads) if kept else Document(actor_id=self.key.public_key)
            rebuilt.set_actor(self.key.public_key)
            removed = [(c.hash, c.bytes) for c in changes if c.hash in bad]
            self.store.replace_document(doc_id, rebuilt.save() if kept else b"", heads, removed)
            self.evict(doc_id)
            out[doc_id] = len(removed)
            log.warning(
                "quarantined %d change(s) in %s made after a revocation", len(removed), doc_id
            )
            self._notify(doc_id, False)
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
        handle = self.open(doc_id)
        self.store.write_snapshot(
            doc_id, handle.doc.save(), meta.changes, tuple(handle.doc.get_heads())
        )
        return True

    def batches_covering(self, doc_id: str, chunks: Sequence[bytes]) -> list[bytes]:
        hashes = [change_hash(bytes(c)) for c in chunks]
        ids = self.store.batch_ids_for(doc_id, hashes)
        return self.store.batches(doc_id, list(dict.fromkeys(ids.values())))
