"""The Memory layer: notes, conversations, facts and skills as entries in sharded documents.

An entry id names its shard (``note-202611-7Q2KX9A1BC`` lives in ``memory/note/2026-11/<b>``
with the bucket taken from its first random character), so a lookup needs no index and no
shard grows without bound. Listing and search use a Runtime index that is rebuilt from the
documents whenever it is missing or stale (SPEC-001: deleting Runtime loses nothing).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime, timedelta
from typing import Any

import lmdb
import msgpack
from automerge.core import ROOT, ObjType, ScalarType, Transaction

from crdt import Repo
from node.heap import gc_paused

from .ids import (
    KINDS,
    MAX_TEXT,
    EntryNotFound,
    creator_of,
    in_shard,
    new_entry_id,
    now_iso,
    read_entry,
    shard_of,
)
from .versions import versions_of

log = logging.getLogger(__name__)

# The rules the index's rows were written by (3: entries of their own shard only, SPEC-005
# 005.10.2a; fields in the types maia-node writes, 005.10.2b; 4: the author is the device that
# signed the entry's creation, 005.10.6); an index written under older rules is rebuilt once
# (Memory._apply_index_rules).
INDEX_RULES_KEY, INDEX_RULES = b"index_rules", b"4"
UNREAD_TOMBSTONES = b"unread-tombstones:"  # kv: shards whose deleted entries no reader saw
REINDEX_TXN_ROWS = 500  # index rows per write transaction in a rebuild (_put_rows)
#: Index rows of local writes held before they are written in one Runtime transaction.
PENDING_ROWS = 5000
#: A shard in memory that peers' changes keep changing is indexed once this many changes (or a
#: quarter of the shard's, if more) came since it was last indexed, without waiting for it to
#: go quiet or leave memory: the work comes in slices of about this size on the event loop.
#: Waiting made it one piece per shard (1,000 new facts: 150 ms during a consolidation run,
#: issue 14).
REMOTE_INDEX_BACKLOG = 1000
#: Entries a sliced re-index reads per slice, and the sliced re-indexes held at once, each with
#: its document in memory until done (SPEC-005 005.7.7): a node drives them between other work
#: on its event loop, so a live write from a peer does not wait behind a whole shard's re-index.
INDEX_SLICE = 128
MAX_INDEX_JOBS = 2


MAX_TAG = 64
MAX_TAGS = 64
_TAG_RE = re.compile(rf"\S{{1,{MAX_TAG}}}")


#: A deleted entry as the index upkeep hands it to ``Memory.tombstone_readers``: its id and
#: its scalar fields (maps and lists left out, values as signed, of any type a member wrote).
Tombstone = tuple[str, dict[str, Any]]


#: See ``Memory.write_listeners``.
WriteListener = Callable[[str, list[str], tuple[bytes, ...], tuple[bytes, ...]], None]


@dataclass
class ShardScan:
    """What one pass of the index upkeep over a shard read, for ``Memory.scan_listeners``.

    ``edits``: every entry that is not deleted, with its edit count (its ``log`` length);
    ``superseded``: those of them a correction replaced; ``entries``: the fields read of the
    entries whose count differed from Memory's own index (as ``extract`` gives them, ``log``
    records with their ``at`` stamps). A derived index compares the counts with its own and
    reads from the document only what Memory did not (issue 17).
    """

    heads: list[bytes]
    edits: dict[str, int] = dataclass_field(default_factory=dict)
    superseded: set[str] = dataclass_field(default_factory=set)
    entries: dict[str, dict[str, Any]] = dataclass_field(default_factory=dict)


#: See ``Memory.scan_listeners``.
ScanListener = Callable[[str, Any, ShardScan], None]


class InvalidEntry(ValueError):
    """Text, kind or tags break a rule of this module (one sentence, online and offline alike)."""


def check_tags(tags: Iterable[str], what: str = "tags") -> list[str]:
    """The tag rule, for every caller: 1 to 64 characters without white space, at most 64,
    each once."""
    tags = list(tags)
    if len(tags) > MAX_TAGS:
        raise InvalidEntry(f"{what}: at most {MAX_TAGS} tags")
    for tag in tags:
        # one regex match, not a generator over the characters (issue 17: a bulk import
        # checks every tag); ``\s`` is ``str.isspace`` for str patterns
        if not isinstance(tag, str) or _TAG_RE.fullmatch(tag) is None:
            raise InvalidEntry(f"{what}: {tag!r} is not a tag (1 to {MAX_TAG} characters, "
                               "no spaces)")
    if len(set(tags)) != len(tags):
        raise InvalidEntry(f"{what}: a tag is given twice")
    return tags


def check_text(text: object) -> str:
    if not isinstance(text, str) or not text or len(text) > MAX_TEXT:
        raise InvalidEntry(f"text must be 1 to {MAX_TEXT} characters")
    return text


class EntrySuperseded(ValueError):
    """The entry was corrected already; a new correction must name the current entry."""


# Who made a write, when an agent session made it (SPEC-004 §2.11): {"session", "agent"}. The
# device is not here: it is the signing key of the change itself (SPEC-005 §10.6).
WriteBy = dict[str, str]


def _stamp(tx: Transaction, obj: Any, by: WriteBy | None) -> None:
    """Record the session and agent of a write in a signed map (entry or edit-log record)."""
    for field in ("session", "agent"):
        if by and by.get(field):
            tx.put(obj, field, ScalarType.Str, by[field])


# each random byte to the base32 letter of its low 5 bits: 256 is a multiple of 32, so every
# letter is equally likely (5 random bits per character, as base32 encoding gives)
_TO_B32 = bytes(ord("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[b & 31]) for b in range(256))


def _random_parts(n: int) -> list[str]:
    """``n`` random 10-character base32 parts of entry ids (50 random bits each), drawn with
    one system call and mapped in C: per id, ``urandom`` and ``b32encode`` cost a third of
    what Automerge spends writing the entry, and ``b32encode`` is a Python loop (issue 17)."""
    chars = os.urandom(10 * n).translate(_TO_B32).decode()
    return [chars[i : i + 10] for i in range(0, 10 * n, 10)]


def _entries_obj(doc: Any) -> bytes:
    """Entries live directly in the shard's root map, keyed by entry id.

    The root always exists, so two devices that create the same shard concurrently never
    race to create a container: a nested ``entries`` map made by both would keep one winner
    and hide the other device's entries (SPEC-005 §10.2).
    """
    return ROOT


@dataclass(slots=True)
class _IndexJob:
    """A sliced re-index in progress: the document it reads, and its remaining slices."""

    doc: Any
    steps: Iterator[None]


_DONE = object()


class Memory:
    """Memory entries of one node, over its document repository."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        # shard -> when it last changed; upkeep waits for a shard to go quiet before indexing
        self._dirty: dict[str, float] = {}
        # change count and entries of each shard when it was last indexed (or first changed
        # by a peer since this process started, entries then unknown): REMOTE_INDEX_BACKLOG
        self._indexed_changes: dict[str, tuple[int, int]] = {}
        self._last_flush = 0.0
        # Sliced re-indexes in progress (SPEC-005 005.7.7), oldest first, and who drives them:
        # set by a running node to wake its background indexer; without one (``maia`` offline,
        # a test over Memory alone), a shard is re-indexed in one piece as it leaves memory.
        self._jobs: dict[str, _IndexJob] = {}
        self.wake_indexer: Callable[[], None] | None = None
        env, self._index_db = repo.store.runtime_db("entries")
        self._env = env
        self._kv = repo.store.runtime_db("kv")[1]
        # Index rows of local writes not yet in the Runtime index (see write_pending), per
        # shard, with the heads to mark indexed (None: the shard was stale before the write).
        self._pending: dict[str, tuple[list[dict[str, Any]], list[bytes] | None]] = {}
        self._pending_rows = 0
        # Readers of tombstones: each (re)indexed shard's deleted entries are handed to them as
        # (entry id, scalar fields), so a feature can keep a Runtime cache of what deleted
        # entries carry (SPEC-006 §12.4.4: rejections) that follows sync and is rebuilt with
        # the index, at no extra pass over the documents.
        # A reader is called for every shard (re)indexed, with the heads indexed, even when the
        # shard has no deleted entry, so it can tell which shards its cache has seen.
        self.tombstone_readers: list[Callable[[str, list[Tombstone]], None]] = []
        # Told of every local write made here: (shard, entry ids written, heads before, heads
        # after). A derived index (search) then reads those entries alone, not the shard.
        # A write to a shard that names no entries here (another writer) is not told.
        self.write_listeners: list[WriteListener] = []
        # Told of every shard the index upkeep read whole (a peer's changes, a rebuild), with
        # the document and what was read of it (ShardScan): the search index then compares
        # edit counts instead of reading every entry through the binding a second time (a
        # catch-up read each shard twice, once per index, issue 17).
        self.scan_listeners: list[ScanListener] = []
        repo.subscribe(self._on_change)
        repo.before_evict(self._index_loaded)
        self._apply_index_rules()
        self._mark_stale()

    # -- index upkeep ----------------------------------------------------------------------------
    def _on_change(self, doc_id: str, local: bool) -> None:
        if not doc_id.startswith("memory/"):
            return
        self._dirty[doc_id] = time.monotonic()
        if local or not self.repo.is_loaded(doc_id):
            return
        meta = self.repo.store.doc_meta(doc_id)
        if meta is None:
            return
        since, entries = self._indexed_changes.setdefault(doc_id, (meta.changes, 0))
        # a quarter of the shard at least, in changes or in entries (a member can sign many
        # entries in one change): each pass compares every entry, so a shard of a million
        # entries is compared no more often than every 250,000 changes
        if meta.changes - since >= max(REMOTE_INDEX_BACKLOG, max(meta.changes, entries) // 4):
            self._index_loaded(doc_id, self.repo.open(doc_id).doc)

    def _index_loaded(self, doc_id: str, doc: Any) -> None:
        """Index a changed shard while it is in memory: before it leaves (a ``before_evict``
        hook), or once peers' changes to it reach the backlog. After a catch-up (which loads,
        applies and evicts shards in turn) it would otherwise be loaded again to be indexed."""
        job = self._jobs.get(doc_id)
        if doc_id not in self._dirty or (job is not None and job.doc is doc):
            return
        self._jobs.pop(doc_id, None)  # it read a copy since evicted and loaded again: stale
        self.write_pending()
        # Sliced for a shard that stays in memory (the backlog) or was held for live traffic;
        # one leaving a bulk transfer is read at once, so a catch-up's peak memory holds no
        # shard for later (SPEC-005 005.7.7)
        if self.wake_indexer is not None and (
                self.repo.is_loaded(doc_id) or self.repo.held_for_live(doc_id)):
            self._jobs[doc_id] = _IndexJob(doc, self._reindex_steps(
                doc_id, doc, txn_rows=0, slice_size=INDEX_SLICE))
            while len(self._jobs) > MAX_INDEX_JOBS:
                self._finish_job(next(iter(self._jobs)))
            self.wake_indexer()
            return
        at = self._dirty.pop(doc_id)
        try:
            # One transaction for the shard (its rows are adjacent keys, so few pages): an
            # fsync per 500 rows made a 100k catch-up wait on ~240 Runtime commits.
            self._reindex(doc_id, doc, txn_rows=0)
        except lmdb.Error as exc:
            log.warning("memory index of %s not brought up to date: %s", doc_id, exc)
            self._dirty[doc_id] = at

    def index_slice(self) -> bool:
        """Advance the oldest sliced re-index by one slice; True while any remains (the
        node's indexer calls it between other work on its event loop)."""
        if not self._jobs:
            return False
        doc_id = next(iter(self._jobs))
        job = self._jobs[doc_id]
        try:
            done = next(job.steps, _DONE) is _DONE
        except lmdb.Error as exc:  # still dirty: indexed again at a later pass
            log.warning("memory index of %s not brought up to date: %s", doc_id, exc)
            done = True
        except Exception:
            log.exception("memory index of %s: a slice failed", doc_id)
            done = True
        if done and self._jobs.get(doc_id) is job:
            del self._jobs[doc_id]
        return bool(self._jobs)

    def index_in_one_piece(self) -> None:
        """Stop slicing (the node's indexer is stopping): slices not yet done are dropped,
        their shards stay dirty and are read again, whole, by the next pass."""
        self.wake_indexer = None
        self._jobs.clear()

    def _finish_job(self, doc_id: str) -> None:
        job = self._jobs.pop(doc_id)
        try:
            for _ in job.steps:
                pass
        except lmdb.Error as exc:  # still dirty: indexed again at a later pass
            log.warning("memory index of %s not brought up to date: %s", doc_id, exc)
        except Exception:
            log.exception("memory index of %s: re-index failed", doc_id)

    def _doc_to_index(self, doc_id: str) -> Any:
        """The shard to read: the repository's copy if it is in memory (the newest), else a
        sliced re-index's copy if it holds what the store holds (evicted, and not loaded and
        changed since), else loaded."""
        job = self._jobs.pop(doc_id, None)
        if job is not None and not self.repo.is_loaded(doc_id) and \
                sorted(job.doc.get_heads()) == sorted(self.repo.heads(doc_id)):
            return job.doc
        return self.repo.open(doc_id).doc

    def dirty_shards(self) -> int:
        """How many shards the index has yet to bring up to date."""
        return len(self._dirty) + len(self._pending)

    def will_scan(self, doc_id: str) -> bool:
        """Whether the index upkeep reads ``doc_id`` whole at its next pass or eviction (and
        tells ``scan_listeners``): a derived index can leave the shard to it."""
        return doc_id in self._dirty

    def _indexed_heads(self, txn, doc_id: str) -> list[bytes] | None:
        raw = txn.get(b"heads:" + doc_id.encode(), db=self._kv)
        return msgpack.unpackb(raw) if raw else None

    def _apply_index_rules(self) -> None:
        """Rebuild, once, an index written under older rules (``INDEX_RULES``): its rows may
        hold a member's map under another shard's entry id (a forged second version listed
        under that very id, 005.10.2a) or fields of types no reader expects (005.10.2b). The
        rows and indexed heads are dropped, so every shard is read again (on a node, in
        slices in the background). Skipped on a read-only store."""
        with self._env.begin(db=self._kv) as txn:  # at every start: no writer's lock
            if txn.get(INDEX_RULES_KEY) == INDEX_RULES:
                return
        if self._env.flags()["readonly"]:
            return
        with self._env.begin(write=True) as txn:
            txn.drop(self._index_db, delete=False)
            heads = [bytes(k) for k in txn.cursor(db=self._kv).iternext(values=False)
                     if bytes(k).startswith(b"heads:")]
            for key in heads:
                txn.delete(key, db=self._kv)
            txn.put(INDEX_RULES_KEY, INDEX_RULES, db=self._kv)
        if heads:
            log.info("memory index: rebuilt under its current rules (%d shards)", len(heads))

    def _mark_stale(self) -> None:
        with self._env.begin() as txn:
            for doc_id in self.repo.store.doc_ids("memory"):
                if sorted(self._indexed_heads(txn, doc_id) or []) != sorted(
                    self.repo.heads(doc_id)
                ):
                    self._dirty[doc_id] = time.monotonic()
        if self._dirty:
            log.info("memory index: %d shard(s) to (re)index", len(self._dirty))

    def revisit_all(self) -> None:
        """Mark every shard for re-indexing, so tombstone readers see every deleted entry:
        for a reader whose cache is missing while the index is not (the index rebuilt by a
        process that had no such reader, e.g. ``maia`` offline after Runtime was deleted)."""
        for doc_id in self.repo.store.doc_ids("memory"):
            self._dirty.setdefault(doc_id, time.monotonic())

    def revisit_unread_tombstones(self) -> int:
        """Mark for re-indexing the shards indexed while no tombstone reader was registered
        (by ``maia`` offline, e.g. after Runtime was deleted) whose deleted entries no reader
        has seen; the node calls it once its readers are registered. Returns how many."""
        with self._env.begin(db=self._kv) as txn:
            cur = txn.cursor()
            docs = []
            if cur.set_range(UNREAD_TOMBSTONES):
                for key in cur.iternext(values=False):
                    if not key.startswith(UNREAD_TOMBSTONES):
                        break
                    docs.append(bytes(key[len(UNREAD_TOMBSTONES):]).decode())
        for doc_id in docs:
            self._dirty.setdefault(doc_id, time.monotonic())
        return len(docs)

    def holds_entries(self, doc_id: str) -> bool:
        """Whether the shard holds any memory entry, live, superseded or deleted: one that can
        be listed, shown, restored or undeleted. A shard that holds none is seen by nobody
        (SPEC-005 §6.7). The index answers for live entries; only a shard it lists nothing of
        is read, for deleted ones (the index keeps no row of those)."""
        self.write_pending()
        if doc_id not in self._dirty:
            prefix = _row_prefix(doc_id)
            with self._env.begin(db=self._index_db) as txn:
                cur = txn.cursor()
                if cur.set_range(prefix) and bytes(cur.key()).startswith(prefix):
                    return True
        was_loaded = self.repo.is_loaded(doc_id)
        try:
            doc = self.repo.open(doc_id).doc
            return any(kind == ObjType.Map and in_shard(key, doc_id)
                       for key, (kind, _) in zip(doc.keys(ROOT), doc.values(ROOT), strict=True))
        finally:
            if not was_loaded:
                self.repo.evict(doc_id)

    def flush_index(
        self, quiet: float = 0.0, after_each: Callable[[], None] | None = None,
        limit: int | None = None,
    ) -> int:
        """Bring the Runtime index up to date; returns shards done.

        With ``quiet`` > 0 (background upkeep) only shards unchanged for that long are done, so
        a shard still growing during a catch-up is indexed once at the end, not every pass.
        With ``limit``, at most that many shards: the caller yields between calls, so a node
        with thousands of changed shards (a catch-up, a member's flood) keeps answering.
        """
        self.write_pending()
        now = time.monotonic()
        due = [d for d, at in self._dirty.items() if now - at >= quiet][:limit]
        for doc_id in due:
            self._dirty.pop(doc_id, None)
            was_loaded = self.repo.is_loaded(doc_id)
            try:
                self._reindex(doc_id, self._doc_to_index(doc_id))
            except lmdb.Error as exc:
                # Runtime only (a full disk, say): reads go on from the index as it is, and
                # the shard is indexed again at a later pass (issue 18.4).
                log.warning("memory index of %s not brought up to date: %s", doc_id, exc)
                self._dirty[doc_id] = now
                if not was_loaded:
                    self.repo.evict(doc_id)
                break
            if not was_loaded:
                # One shard at a time: a node started on a large unindexed store would
                # otherwise hold every shard it indexed until they go idle (a start-up peak
                # of 10x its idle memory), issue 18.8.
                self.repo.evict(doc_id)
                if after_each is not None:
                    after_each()
        if not quiet:
            self._last_flush = now
        return len(due)

    def _reindex(self, doc_id: str, doc: Any = None,
                 txn_rows: int = REINDEX_TXN_ROWS) -> None:
        """Bring one shard's index rows up to date, in one piece."""
        if doc is None:
            doc = self.repo.open(doc_id).doc
        for _ in self._reindex_steps(doc_id, doc, txn_rows=txn_rows):
            pass

    def _reindex_steps(self, doc_id: str, doc: Any, *, txn_rows: int,
                       slice_size: int = 0) -> Iterator[None]:
        """Bring one shard's index rows up to date, extracting only entries that changed;
        with ``slice_size``, pausing (a ``yield``) after every that many entries and before
        the derived indexes are told.

        Every write to an entry appends to its ``log`` (SPEC-005 §10.6), so comparing the log
        length with the indexed edit count finds changed entries without extracting all of
        them: a shard of thousands of entries is refreshed in milliseconds during a catch-up.

        Sliced, the shard may change before the last slice: the same document object takes a
        peer's next changes, or it leaves memory and a fresh copy takes them. What is marked
        (heads, change count) is read now, when the work is set up, not at its first slice,
        and the shard stays dirty unless it still stands at those heads when the work ends.
        """
        heads = list(doc.get_heads())
        return self._reindex_slices(doc_id, doc, heads, self.repo.store.doc_meta(doc_id),
                                    txn_rows, slice_size)

    def _reindex_slices(self, doc_id: str, doc: Any, heads: list[bytes], meta: Any,
                        txn_rows: int, slice_size: int) -> Iterator[None]:
        prefix = _row_prefix(doc_id)
        indexed: dict[str, int] = {}
        with self._env.begin() as txn:
            cur = txn.cursor(db=self._index_db)
            if cur.set_range(prefix):
                for key, raw in cur:
                    if not key.startswith(prefix):
                        break
                    indexed[key[len(prefix):].decode()] = msgpack.unpackb(raw)["edits"]
        present: set[str] = set()
        rows: list[tuple[bytes, bytes]] = []
        tombstones: list[Tombstone] = []
        deleted = 0
        scan = ShardScan(sorted(heads)) if self.scan_listeners else None
        # keys and values of a map in two calls each: per entry, 3 calls to the binding when
        # it is unchanged and 5 when it is indexed, not the ~20 of ``extract`` (issue 17).
        for n, (entry_id, (kind, obj)) in enumerate(
                zip(doc.keys(ROOT), doc.values(ROOT), strict=True)):
            if slice_size and n and n % slice_size == 0:
                yield
            if kind != ObjType.Map or not in_shard(entry_id, doc_id):
                continue  # no entry of this shard (ids.in_shard: a member's forged copy)
            # the keys and the log's length tell an unchanged entry; its values (the text,
            # the sources) are read only when it changed
            keys = doc.keys(obj)
            if "deleted_at" in keys:
                deleted += 1
                if self.tombstone_readers:
                    fields = dict(zip(keys, doc.values(obj), strict=True))
                    tombstones.append((entry_id, {
                        k: v[0][1] for k, v in fields.items() if not isinstance(v[0], ObjType)}))
                continue
            present.add(entry_id)
            log_obj = doc.get(obj, "log") if "log" in keys else None
            edits = doc.length(log_obj[1]) if log_obj is not None else 0
            if scan is not None:
                scan.edits[entry_id] = edits
                if "superseded_by" in keys:
                    scan.superseded.add(entry_id)
            if indexed.get(entry_id) == edits:
                continue
            fields = dict(zip(keys, doc.values(obj), strict=True))
            entry = _entry_from(doc, obj, fields, edits, stamps=scan is not None)
            if scan is not None:
                scan.entries[entry_id] = entry
            rows.append((_row_key(doc_id, entry_id), _index_row(doc_id, entry_id, entry)))
            if txn_rows and len(rows) >= txn_rows:
                self._put_rows(rows)
        if slice_size:
            yield
            # Read over several turns, the document object may now hold what the store does
            # not (a write applied in memory whose commit failed, changes quarantined since):
            # then nothing is written, and the shard stays dirty to be read from the store.
            own = list(doc.get_heads())
            if len(self.repo.store.known_hashes(doc_id, own)) != len(own):
                return
        # The heads are written last, with the deletions: until then the shard still counts
        # as stale, so a crash part-way leaves it to be indexed again, never half-marked.
        with self._env.begin(write=True) as txn:
            for key, value in rows:
                txn.put(key, value, db=self._index_db)
            for gone in set(indexed) - present:  # deleted, or quarantined (SPEC-005 §5.10)
                txn.delete(_row_key(doc_id, gone), db=self._index_db)
            if not slice_size:
                self._mark_indexed(txn, doc_id, heads, deleted)
        if meta is not None:  # the rows hold at least this much: the remote backlog counts on
            self._indexed_changes[doc_id] = (meta.changes, len(present) + deleted)
        if slice_size:
            yield
            if sorted(self.repo.heads(doc_id)) != sorted(heads):
                # it moved on since the work was set up: the rows stand, but the shard is not
                # marked, nor shown to readers and listeners (an older view than theirs may
                # be): it stays dirty and is read again
                return
        for reader in self.tombstone_readers:
            try:
                reader(doc_id, tombstones)
            except Exception:  # a reader's cache is Runtime: it must never stop the index
                log.exception("a tombstone reader failed on %s", doc_id)
        for listener in list(self.scan_listeners) if scan is not None else ():
            try:
                listener(doc_id, doc, scan)
            except Exception:  # a derived index is Runtime: it catches up at its own pass
                log.exception("a scan listener failed on %s", doc_id)
        if slice_size:
            # marked once the readers have seen it: a node stopped before would otherwise
            # leave its tombstones unread for good
            with self._env.begin(write=True) as txn:
                self._mark_indexed(txn, doc_id, heads, deleted)
            self._dirty.pop(doc_id, None)

    def _mark_indexed(self, txn: Any, doc_id: str, heads: list[bytes], deleted: int) -> None:
        """Record ``heads`` as the shard's indexed heads, and whether its deleted entries
        still wait for a tombstone reader."""
        txn.put(b"heads:" + doc_id.encode(), msgpack.packb(heads), db=self._kv)
        # deleted entries no tombstone reader saw (``maia`` offline has none): the node shows
        # them to its readers at start (``revisit_unread_tombstones``)
        unread = UNREAD_TOMBSTONES + doc_id.encode()
        if deleted and not self.tombstone_readers:
            txn.put(unread, b"1", db=self._kv)
        elif self.tombstone_readers:
            txn.delete(unread, db=self._kv)

    def _put_rows(self, rows: list[tuple[bytes, bytes]]) -> None:
        """Write index rows in a transaction of their own and empty ``rows``: a write
        transaction holds its dirty pages in memory, so one per shard of thousands of entries
        would add tens of MB to a rebuild's peak (issue 18.8)."""
        with self._env.begin(write=True) as txn:
            for key, value in rows:
                txn.put(key, value, db=self._index_db)
        rows.clear()

    # -- writes ----------------------------------------------------------------------------------
    def add(self, text: str, kind: str = "note", tags: Iterable[str] = (),
            by: WriteBy | None = None, *, field_tags: bool = False) -> dict[str, Any]:
        return self.add_many([{"text": text, "kind": kind, "tags": list(tags)}], by=by,
                             field_tags=field_tags)[0]

    def add_many(self, items: Iterable[dict[str, Any]], by: WriteBy | None = None,
                 extra: dict[str, list[Callable[[Transaction], None]]] | None = None,
                 *, field_tags: bool = False,
                 row_fields: dict[str, dict[str, Any]] | None = None,
                 extra_ids: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
        """Add entries; one signed batch per shard touched, so a bulk import verifies fast.

        ``extra`` adds edits to the same transaction (a supersede marks the old entry in the
        change that creates the new one, so no device ever sees one without the other).
        ``row_fields``: per new entry id, the signed fields ``extra`` sets on it (a fact's
        sources), so its index row carries them without a Runtime write of its own.
        ``field_tags``: the tags carry a writer's structured fields (the journal's
        ``project:<id>``), not a person's words, so the tag rule does not apply to them.
        ``extra_ids``: the entries the ``extra`` edits of each shard write, for the write
        listeners; a shard with extra edits and no ids here is not told of (read whole)."""
        with gc_paused():  # thousands of short-lived containers: see node.heap
            return self._add_many(list(items), by, extra, field_tags=field_tags,
                                  row_fields=row_fields, extra_ids=extra_ids)

    def _add_many(self, items: list[dict[str, Any]], by: WriteBy | None,
                  extra: dict[str, list[Callable[[Transaction], None]]] | None,
                  *, field_tags: bool, row_fields: dict[str, dict[str, Any]] | None,
                  extra_ids: dict[str, list[str]] | None) -> list[dict[str, Any]]:
        by_shard: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        month = f"{datetime.now(UTC):%Y%m}"
        for item, rand in zip(items, _random_parts(len(items)), strict=True):
            text, kind = check_text(item.get("text", "")), item.get("kind", "note")
            tags = list(item.get("tags", []))
            if not field_tags:
                check_tags(tags)
            if kind not in KINDS:
                raise InvalidEntry(f"kind must be one of {', '.join(KINDS)}")
            # an id drawn by the caller (supersede links to it before the change is made);
            # never from a request: the routes' schemas refuse an "id" field
            entry_id = item.get("id") or f"{kind}-{month}-{rand}"
            if not entry_id.startswith(kind + "-"):
                raise InvalidEntry("an entry id names its kind")
            fields = {"text": text, "kind": kind, "tags": tags}
            if item.get("supersedes"):
                fields["supersedes"] = item["supersedes"]
            by_shard.setdefault(shard_of(entry_id), []).append((entry_id, fields))
        me = self.repo.key.device_id
        out: list[dict[str, Any]] = []
        at = now_iso()
        stale = {
            doc_id for doc_id in by_shard
            if doc_id in self._dirty or (self.repo.store.doc_meta(doc_id) is not None and (
                self._heads_indexed(doc_id) != sorted(self.repo.heads(doc_id))))
        }
        # Every shard in one transaction: an import is stored whole or not at all, so a client
        # that retries after a full disk creates no duplicates (issue 18.4).
        changes = {
            doc_id: [_creator(entry_id, e, at, me, by) for entry_id, e in entries]
            for doc_id, entries in by_shard.items()
        }
        for doc_id, edits in (extra or {}).items():
            changes.setdefault(doc_id, []).extend(edits)
        before = {d: self.repo.heads(d) for d in changes} if self.write_listeners else {}
        self.repo.change_many(changes)
        for doc_id in before:
            if doc_id in (extra or {}) and doc_id not in (extra_ids or {}):
                continue  # edits this layer cannot name: the listeners read the shard whole
            self._tell(doc_id, [entry_id for entry_id, _ in by_shard.get(doc_id, ())]
                       + (extra_ids or {}).get(doc_id, []), before[doc_id])
        rows_by_shard: dict[str, list[dict[str, Any]]] = {}
        session, agent = (by or {}).get("session") or None, (by or {}).get("agent") or None
        for doc_id, entries in by_shard.items():
            self._dirty.pop(doc_id, None)
            # What _public reads back from the entry just written, built directly: the
            # generic path (merged dicts, the extra-field scan) cost as much as signing.
            rows_by_shard[doc_id] = rows = [
                {"id": entry_id, "text": e["text"], "kind": e["kind"],
                 "tags": sorted(set(e["tags"])), "created_at": at, "author": me, "edits": 1,
                 "session": session, "agent": agent, "supersedes": e.get("supersedes") or None,
                 "superseded_by": None, **(row_fields or {}).get(entry_id, {})}
                for entry_id, e in entries
            ]
            out.extend(rows)
        self._hold_rows(rows_by_shard, current=set(by_shard) - stale - set(extra or {}))
        for doc_id in stale | set(extra or {}):
            self._dirty[doc_id] = time.monotonic()
        return out

    def _tell(self, doc_id: str, entry_ids: list[str], before: tuple[bytes, ...]) -> None:
        """Tell the write listeners that ``entry_ids`` of ``doc_id`` were written."""
        if not self.write_listeners:
            return
        after = self.repo.heads(doc_id)
        for listener in list(self.write_listeners):
            try:
                listener(doc_id, entry_ids, before, after)
            except Exception:  # derived state only: its own upkeep reads the shard later
                log.exception("a write listener failed on %s", doc_id)

    def _hold_rows(self, rows_by_shard: dict[str, list[dict[str, Any]]], *,
                   current: set[str]) -> None:
        """Keep index rows of a durable local write for :meth:`write_pending`.

        The entries are durable once ``change_many`` returns; their index rows are Runtime,
        rebuilt from the documents whenever the indexed heads differ. Writing them in a
        transaction of their own would cost a second fsync on every write (more than the
        write itself: issue 17), so they are written with later ones, before any read of the
        index, at the next upkeep, at close, or once ``PENDING_ROWS`` are held. A crash before
        that leaves the indexed heads behind, so the shard is re-indexed at the next start.
        """
        for doc_id, rows in rows_by_shard.items():
            held, heads = self._pending.get(doc_id, ([], []))
            held.extend(rows)
            if doc_id not in current or heads is None:
                heads = None  # stale before (or since): marked only by a re-index
            else:
                heads = list(self.repo.heads(doc_id))
            self._pending[doc_id] = (held, heads)
            self._pending_rows += len(rows)
        if self._pending_rows >= PENDING_ROWS:
            self.write_pending()

    def write_pending(self) -> None:
        """Write held index rows of local writes in one Runtime transaction (see
        :meth:`_hold_rows`); a shard that fails is left to the re-index."""
        if not self._pending:
            return
        try:
            self._index_rows(self._pending)
        except Exception as exc:  # Runtime only (a full disk, say): keep them, try later
            log.warning("memory index of %d shard(s) not written (%s); reads include the "
                        "rows held meanwhile", len(self._pending), exc)
            return
        self._pending, self._pending_rows = {}, 0

    def _held(self) -> dict[bytes, dict[str, Any]]:
        """Index rows held by :meth:`_hold_rows` and not yet written, by row key."""
        return {_row_key(doc_id, row["id"]): {**row, "doc": doc_id}
                for doc_id, (rows, _) in self._pending.items() for row in rows}

    def _heads_indexed(self, doc_id: str) -> list[bytes] | None:
        """Heads the index covers: those of held rows first (None when those cannot mark it)."""
        held = self._pending.get(doc_id)
        if held is not None:
            return sorted(held[1]) if held[1] is not None else None
        with self._env.begin() as txn:
            return sorted(self._indexed_heads(txn, doc_id) or [])

    def _index_rows(
        self, pending: dict[str, tuple[list[dict[str, Any]], list[bytes] | None]]
    ) -> None:
        """Write index rows of several shards in one transaction; a shard with heads was up
        to date before its writes, so its indexed heads move on to those heads."""
        # the fallback of _index_row: a member may sign a field msgpack cannot write (a
        # Timestamp); without it one such row failed every later write of held rows
        pack = msgpack.Packer(use_bin_type=True, default=_as_text).pack
        packb = msgpack.packb
        with self._env.begin(write=True) as txn:
            cur = txn.cursor(db=self._index_db)
            for doc_id, (rows, heads) in pending.items():
                prefix = _row_prefix(doc_id)
                tail = pack("doc") + pack(doc_id)
                cur.putmulti([(prefix + row["id"].encode(), _packed_with(pack, row, doc_id, tail))
                              for row in rows])
                if heads is not None:
                    txn.put(b"heads:" + doc_id.encode(), packb(heads), db=self._kv)

    def update(
        self,
        entry_id: str,
        *,
        text: str | None = None,
        add_tags: Iterable[str] = (),
        remove_tags: Iterable[str] = (),
        by: WriteBy | None = None,
        field_tags: bool = False,
    ) -> dict[str, Any]:
        doc_id = shard_of(entry_id)
        self.get(entry_id)  # raises EntryNotFound
        add_tags, remove_tags = list(add_tags), list(remove_tags)
        if not field_tags:
            check_tags(add_tags, "add_tags")
            check_tags(remove_tags, "remove_tags")
        if text is not None:
            check_text(text)
        ops = []
        if text is not None:
            ops.append("text")
        if add_tags or remove_tags:
            ops.append("tags")
        if not ops:
            raise InvalidEntry("nothing to change")

        def edit(tx: Transaction) -> None:
            e = tx.get(ROOT, entry_id)[1]
            if text is not None:
                tx.put(e, "text", ScalarType.Str, text)
            tags = tx.get(e, "tags")[1]
            for tag in add_tags:
                tx.put(tags, tag, ScalarType.Boolean, True)
            for tag in remove_tags:
                if tx.get(tags, tag) is not None:
                    tx.delete(tags, tag)
            log_list = tx.get(e, "log")[1]
            rec = tx.insert_object(log_list, tx.length(log_list), ObjType.Map)
            tx.put(rec, "at", ScalarType.Str, now_iso())
            tx.put(rec, "op", ScalarType.Str, "update " + "+".join(ops))
            _stamp(tx, rec, by)

        before = self.repo.heads(doc_id)
        stale = doc_id in self._dirty or self._heads_indexed(doc_id) != sorted(before)
        self.repo.change(doc_id, edit)
        self._tell(doc_id, [entry_id], before)
        self._dirty.pop(doc_id, None)
        entry = self.get(entry_id)
        self._hold_rows({doc_id: [entry]}, current=set() if stale else {doc_id})
        if stale:
            self._dirty[doc_id] = time.monotonic()
        return entry

    def delete(self, entry_id: str, by: WriteBy | None = None) -> dict[str, Any]:
        """Forget an entry: ``deleted_at`` is set (SPEC-005 §10.5) and readers hide it; the
        signed history stays, so every device agrees it was deleted and by whom."""
        doc_id = shard_of(entry_id)
        self.get(entry_id)  # raises EntryNotFound, also for an entry deleted already
        at = now_iso()

        def edit(tx: Transaction) -> None:
            e = tx.get(ROOT, entry_id)[1]
            tx.put(e, "deleted_at", ScalarType.Str, at)
            log_list = tx.get(e, "log")[1]
            rec = tx.insert_object(log_list, tx.length(log_list), ObjType.Map)
            tx.put(rec, "at", ScalarType.Str, at)
            tx.put(rec, "op", ScalarType.Str, "delete")
            _stamp(tx, rec, by)

        before = self.repo.heads(doc_id)
        self.repo.change(doc_id, edit)
        self._tell(doc_id, [entry_id], before)
        self._dirty[doc_id] = time.monotonic()
        return {"id": entry_id, "deleted_at": at}

    def supersede(self, old_id: str, text: str, kind: str | None = None,
                  tags: Iterable[str] | None = None, by: WriteBy | None = None,
                  ) -> dict[str, Any]:
        """A correction that links the old entry (SPEC-004 §2.12): a new entry with
        ``supersedes`` and the old one's ``superseded_by``, in one signed change per shard.
        The old text stays, readable by id, so nothing an agent corrects is lost."""
        old = self.get(old_id)  # EntryNotFound, also when deleted
        if old.get("superseded_by"):
            raise EntrySuperseded(
                f"{old_id} was superseded by {old['superseded_by']}; correct that one")
        kind = kind or old["kind"]
        tags = list(old["tags"] if tags is None else tags)
        new_id = new_entry_id(kind)

        def mark(tx: Transaction) -> None:
            e = tx.get(ROOT, old_id)[1]
            tx.put(e, "superseded_by", ScalarType.Str, new_id)
            log_list = tx.get(e, "log")[1]
            rec = tx.insert_object(log_list, tx.length(log_list), ObjType.Map)
            tx.put(rec, "at", ScalarType.Str, now_iso())
            tx.put(rec, "op", ScalarType.Str, "superseded by " + new_id)
            _stamp(tx, rec, by)

        item = {"id": new_id, "text": text, "kind": kind, "tags": tags, "supersedes": old_id}
        return self.add_many([item], by=by, extra={shard_of(old_id): [mark]},
                             extra_ids={shard_of(old_id): [old_id]})[0]

    def unsupersede(self, entry_id: str) -> dict[str, Any]:
        """Undo a supersede (the owner's remedy, SPEC-004 §2.12): the entry surfaces again;
        the correction stays, and the signed log records the restore."""
        entry = self.get(entry_id)
        if not entry.get("superseded_by"):
            raise ValueError(f"{entry_id} is not superseded")
        doc_id = shard_of(entry_id)

        def edit(tx: Transaction) -> None:
            e = tx.get(ROOT, entry_id)[1]
            tx.delete(e, "superseded_by")
            log_list = tx.get(e, "log")[1]
            rec = tx.insert_object(log_list, tx.length(log_list), ObjType.Map)
            tx.put(rec, "at", ScalarType.Str, now_iso())
            tx.put(rec, "op", ScalarType.Str, "restored (was superseded by "
                   f"{entry['superseded_by']})")

        before = self.repo.heads(doc_id)
        self.repo.change(doc_id, edit)
        self._tell(doc_id, [entry_id], before)
        self._dirty[doc_id] = time.monotonic()
        return self.get(entry_id)

    # -- reads -----------------------------------------------------------------------------------
    def get(self, entry_id: str) -> dict[str, Any]:
        doc_id = shard_of(entry_id)
        if self.repo.store.doc_meta(doc_id) is None and not self.repo.is_loaded(doc_id):
            raise EntryNotFound(entry_id)
        doc = self.repo.open(doc_id).doc
        got = doc.get(_entries_obj(doc), entry_id)
        if got is None or got[0] != ObjType.Map:
            raise EntryNotFound(entry_id)
        # the entry's fields and the number of its log records, not the records: a member
        # could append 100,000 records to an honest entry, and each show read them all
        # (394 ms a call)
        obj = got[1]
        fields = dict(zip(doc.keys(obj), doc.values(obj), strict=True))
        deleted = fields.get("deleted_at")
        if deleted is not None and isinstance(deleted[0], ObjType):
            entry = read_entry(doc, obj)  # a shape maia-node does not write: read whole
        else:
            log_obj = fields.get("log")
            edits = doc.length(log_obj[1]) if log_obj is not None and \
                log_obj[0] == ObjType.List else 0
            entry = _entry_from(doc, obj, fields, edits)
            if deleted is not None:
                entry["deleted_at"] = deleted[0][1]
        if entry.get("deleted_at"):
            raise EntryNotFound(entry_id)
        return _public(entry_id, entry)

    def history(self, entry_id: str) -> list[dict[str, Any]]:
        """Every version with its values and verified device, also once deleted (SPEC-005
        §10.7): read from the document's own history by ``versions``."""
        return versions_of(self).history(entry_id)

    def list(
        self,
        *,
        kind: str | None = None,
        tag: str | None = None,
        author: str | None = None,
        since: str | None = None,
        until: str | None = None,
        query: str | None = None,
        limit: int = 50,
        include_superseded: bool = False,
        any_words: bool = False,
    ) -> list[dict[str, Any]]:
        """Entries newest first; ``query`` matches entries containing every word of it, or any
        word with ``any_words`` (the relevance scan of SPEC-004 §6.7 ranks those itself)."""
        self.flush_index()  # writes held rows first: a read sees every write before it
        needle = query.casefold() if query else None
        words = needle.split() if needle else []
        out = []
        held = self._held()  # only when the Runtime index could not be written
        with self._env.begin(db=self._index_db) as txn:
            written = ((k, msgpack.unpackb(raw, raw=False)) for k, raw in txn.cursor()
                       if bytes(k) not in held)
            for _, row in itertools.chain(written, held.items()):
                if kind and row["kind"] != kind:
                    continue
                if row.get("superseded_by") and not include_superseded:
                    continue  # corrected: only the correction surfaces (SPEC-004 §2.12)
                if tag and tag not in row["tags"]:
                    continue
                if author and row["author"] != author:
                    continue
                if since and row["created_at"] < since:
                    continue
                if until and row["created_at"] >= until:
                    continue
                if words:
                    hay = (row["text"] + " " + " ".join(row["tags"])).casefold()
                    if not (any if any_words else all)(w in hay for w in words):
                        continue
                out.append(row)
        # newest first by the time an entry claims, but never one dated ahead of now (a day
        # of clock skew allowed): any member can sign "9999-..." and an entry so dated led
        # every listing and won every "newest" choice (a skill's name) for good
        latest = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
        out.sort(key=lambda r: r["created_at"] if r["created_at"] <= latest else "",
                 reverse=True)
        return [
            {k: v for k, v in r.items() if k != "doc"} for r in out[: max(1, limit)]
        ]

    def count(self) -> int:
        """Entries indexed; refreshed at most once a second so a polled status stays cheap."""
        if time.monotonic() - self._last_flush >= 1.0:
            self.flush_index()
        self.write_pending()
        held = self._held()
        with self._env.begin(db=self._index_db) as txn:
            return txn.stat(self._index_db)["entries"] + sum(
                1 for k in held if txn.get(k, db=self._index_db) is None)


def _public(entry_id: str, e: dict[str, Any]) -> dict[str, Any]:
    """An entry as every reader gets it (index rows, ``get``, the API, MCP, skills, the
    consolidation), its fields in the types maia-node writes. A member can sign any value
    under any field (an Int ``created_at``, a list of ``tags``, a Timestamp ``importance``):
    passed through, one such entry made every listing's sort raise, every word search, every
    consolidation run and skill lookup, or stopped its whole shard from being indexed
    (SPEC-005 005.10.2b). A field of another type reads as absent."""
    tags = e.get("tags")
    log_list = e.get("log")
    return {
        "id": entry_id,
        "text": _str_or(e.get("text"), ""),
        "kind": _str_or(e.get("kind"), ""),
        "tags": sorted(t for t, on in tags.items() if on is True and isinstance(t, str))
        if isinstance(tags, dict) else [],
        "created_at": _str_or(e.get("created_at"), ""),
        "author": _str_or(e.get("author"), ""),
        "edits": len(log_list) if isinstance(log_list, list) else 0,
        "session": _str_or(e.get("session"), None) or None,
        "agent": _str_or(e.get("agent"), None) or None,
        "supersedes": _str_or(e.get("supersedes"), None) or None,
        "superseded_by": _str_or(e.get("superseded_by"), None) or None,
        # signed fields of facts, skills and pins (SPEC-006 §12), only when the entry has them
        **{f: v for f in SIGNED_EXTRA_FIELDS
           if (v := _plain(e.get(f))) not in (None, "", [])},
    }


def _str_or(value: Any, default: Any) -> Any:
    return value if isinstance(value, str) else default


def _plain(value: Any) -> Any:
    """A signed extra field as JSON can carry it: scalars as they are, a Timestamp as its
    ISO text, a list of those; anything else (a map, bytes, a counter) as absent. Readers
    of each field still check its meaning (``importance`` a score, ``sources`` ids)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list):
        items = [_plain(v) for v in value]
        return items if all(i is not None and not isinstance(i, list) for i in items) else None
    return None


# Fields some entries carry besides the common ones (SPEC-006 §12.4.1, §12.5.2, §12.6.1).
SIGNED_EXTRA_FIELDS = ("sources", "cortex", "model", "valid_from", "valid_until", "pinned",
                       "name", "when_to_use", "steps", "importance")


def _entry_from(doc: Any, obj: Any, fields: dict[str, Any], edits: int,
                *, stamps: bool = False) -> dict[str, Any]:
    """An entry read from its map's ``fields`` (:func:`_entry_fields`), or whole
    (:func:`read_entry`) for a shape maia-node does not write; its author, either way, the
    device that signed the map's creation, not the one it claims (SPEC-005 005.10.6)."""
    entry = _entry_fields(doc, fields, edits, stamps=stamps)
    if entry is None:
        return read_entry(doc, obj)
    creator = creator_of(obj)
    if creator is not None:
        entry["author"] = creator
    return entry


def _entry_fields(doc: Any, fields: dict[str, Any], edits: int,
                  *, stamps: bool = False) -> dict[str, Any] | None:
    """What :func:`_public` reads of an entry, from its map's values, the way ``extract``
    would give it; None for a shape other than the one maia-node writes (a peer's odd
    entry), which is then extracted whole. ``stamps``: the ``log`` records carry their
    ``at`` (for the search index's ``updated_at``); otherwise only their number is read."""
    out: dict[str, Any] = {"log": [None] * edits}
    # the signed fields of a fact, skill or pin (SPEC-006 §12): scalars, or lists of scalars
    # (sources, steps); read here, not extracted whole (about 20 calls to the binding per
    # entry instead of 5: a third of a peer's index upkeep of new facts, issue 14)
    for key in SIGNED_EXTRA_FIELDS:
        got = fields.get(key)
        if got is None:
            continue
        if got[0] == ObjType.List:
            items = doc.values(got[1])
            if any(isinstance(v, ObjType) for v, _ in items):
                return None
            out[key] = [v[1] for v, _ in items]
        elif isinstance(got[0], ObjType):
            return None
        else:
            out[key] = got[0][1]
    # every scalar _public reads: leaving superseded_by out made a corrected entry surface
    # again in listings once its shard was re-indexed
    for key in ("text", "kind", "created_at", "author", "session", "agent", "supersedes",
                "superseded_by"):
        got = fields.get(key)
        if got is not None:
            if isinstance(got[0], ObjType):
                return None
            out[key] = got[0][1]
    tags = fields.get("tags")
    if tags is not None:
        if tags[0] != ObjType.Map:
            return None
        values = doc.values(tags[1])
        if any(isinstance(v, ObjType) for v, _ in values):
            return None
        out["tags"] = {t: v[1] for t, (v, _) in zip(doc.keys(tags[1]), values, strict=True)}
    log_obj = fields.get("log")
    if log_obj is not None and log_obj[0] != ObjType.List:
        return None
    if stamps and log_obj is not None and edits:
        records = []
        for kind, rec in doc.values(log_obj[1]):
            if kind != ObjType.Map:
                return None
            at = doc.get(rec, "at")
            if at is not None and isinstance(at[0], ObjType):
                return None  # a Text or other object: extract reads it as a rebuild does
            records.append({"at": at[0][1]} if at is not None else {})
        out["log"] = records
    return out


def _row_prefix(doc_id: str) -> bytes:
    return doc_id.encode() + b"\x00"


def _row_key(doc_id: str, entry_id: str) -> bytes:
    """Index rows are keyed by shard first, so one shard's rows can be replaced together."""
    return _row_prefix(doc_id) + entry_id.encode()


def _index_row(doc_id: str, entry_id: str, e: dict[str, Any]) -> bytes:
    row = _public(entry_id, e)
    row["doc"] = doc_id
    return msgpack.packb(row, use_bin_type=True, default=_as_text)


def _packed_with(pack: Callable[[Any], bytes], row: dict[str, Any], doc_id: str,
                 tail: bytes) -> bytes:
    """msgpack of ``row`` with ``"doc": doc_id`` added (``tail``: that pair, packed), by
    rewriting the map's header: copying each row to add its shard cost more than packing
    it (issue 17). A row that holds the key already, or too many keys for a map16, is
    packed from a copy instead."""
    n = len(row)
    if n >= 0xFFFF or "doc" in row:
        return pack({**row, "doc": doc_id})
    body = pack(row)
    if n < 15:  # fixmap stays a fixmap
        return bytes((0x80 | (n + 1),)) + body[1:] + tail
    if n == 15:  # a fixmap of 15 becomes a map16 of 16
        return b"\xde\x00\x10" + body[1:] + tail
    return b"\xde" + (n + 1).to_bytes(2, "big") + body[3:] + tail


def _as_text(value: Any) -> Any:
    """A value msgpack cannot write, as text: a member can sign a field as an Automerge
    Timestamp (read back as a ``datetime``) or a counter, and its row must not fail the whole
    shard's indexing on every pass, hiding every honest entry beside it."""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


_STR, _BOOL, _MAP, _LIST = ScalarType.Str, ScalarType.Boolean, ObjType.Map, ObjType.List


def _creator(entry_id: str, e: dict[str, Any], at: str, me: str, by: WriteBy | None = None):
    # Names bound once, no call when nobody is stamped: per entry this runs beside a dozen
    # binding calls, and each Python step here counted against the write rate (issue 17).
    def edit(tx: Transaction) -> None:
        put = tx.put
        obj = tx.put_object(ROOT, entry_id, _MAP)
        put(obj, "text", _STR, e["text"])
        put(obj, "kind", _STR, e["kind"])
        put(obj, "created_at", _STR, at)
        put(obj, "author", _STR, me)
        if by:
            _stamp(tx, obj, by)
        if e.get("supersedes"):
            put(obj, "supersedes", _STR, e["supersedes"])
        t = tx.put_object(obj, "tags", _MAP)
        for tag in e["tags"]:
            put(t, tag, _BOOL, True)
        rec = tx.insert_object(tx.put_object(obj, "log", _LIST), 0, _MAP)
        put(rec, "at", _STR, at)
        if by:
            _stamp(tx, rec, by)  # history reads who made each version from its record
        put(rec, "op", _STR, "create")

    return edit
