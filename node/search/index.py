"""The search index over Memory: SQLite FTS5 for text, exact vector search, fused by rank.

Everything here is Runtime (SPEC-001 §7.5): the database and the vector file can be deleted at
any time the node is stopped, and the next start rebuilds them from the memory documents. Like
Memory's own LMDB index, the index records the heads of every shard it indexed and re-reads a
shard only when those differ; inside a shard, only entries whose edit count changed are read.

Threads: the event loop owns the documents (``flush``) and answers queries (``search``); one
worker thread computes vectors (``embed_pending``). Both reach the one SQLite connection under
``_lock`` and never hold it while a model runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np
from automerge.core import ROOT, ObjType

from crdt import Repo

from ..memory import ShardScan, creator_of, in_shard, read_entry
from ..memory.ids import MAX_TEXT
from .embedder import Embedder, ModelUnavailable, checked_vectors
from .query import parse
from .vectors import VectorIndex

if TYPE_CHECKING:
    from ..memory import Memory

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: docs carry the session and agent of an agent's write
#: Rows' ``author`` is the device that signed their entry map's creation (SPEC-005 005.10.6);
#: an index without this mark in ``meta`` may hold rows written before that rule.
AUTHOR_RULE = "1"
DB_NAME = "index.sqlite3"
VEC_NAME = "vectors.npz"
RRF_K = 60  # reciprocal rank fusion constant (Cormack et al.): damps the top ranks' weight
MODES = ("text", "semantic", "hybrid")
EMBED_BATCH = 256
EXACT_SCAN_MAX = 2000  # a filter matching at most this many entries: read their vectors
RERANK = 100  # at least this many int8 candidates are re-ranked with their float16 vectors
TAG_SEP = "\x1f"  # tags are joined with a separator no tag holds and FTS5 splits on
BM25_WEIGHTS = (1.0, 2.0)  # text, tags: a tag is a deliberate label, worth more than a word
QUERY_WAIT_HYBRID = 3.0  # seconds hybrid waits for the query's vector before answering by text
QUERY_WAIT_SEMANTIC = 15.0
KEEP_OTHER_MODELS = 3  # vectors of recently used models kept for when they come back (§7.5)
MAX_WHO = 200  # a session id or agent name longer than this is not one maia-node wrote
READERS = 2  # connections that answer queries beside the writer's (text and vectors at once)
# SPEC-003 §12.4: one search's SQLite work, and its wait for a reader connection, end this
# many seconds after it starts (a 503). A hostile query cost ~2.9 s of CPU on 100k entries, and
# 64 of them at once held every thread the node had.
QUERY_TIME_LIMIT = 2.0
PROGRESS_STEPS = 1000  # SQLite virtual machine steps between two looks at the deadline
REQUEST_THREADS = 2  # threads that run searches for the API: its own pool, not the loop's
# SPEC-003 §12.3: a result's text is cut at RESULT_TEXT characters (``text_truncated``), and a
# response holds entries only while their JSON fits RESULT_BUDGET bytes: a member's 8 MiB
# entries made one search answer ~800 MiB. memory_get reads the whole entry.
RESULT_TEXT = 2000
RESULT_BUDGET = 1024 * 1024

_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE shards(doc_id TEXT PRIMARY KEY, heads BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE docs(
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    entry_id TEXT NOT NULL UNIQUE,
    shard TEXT NOT NULL,
    kind TEXT NOT NULL,
    author TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    edits INTEGER NOT NULL,
    tags TEXT NOT NULL,
    text TEXT NOT NULL,
    session TEXT,
    agent TEXT
);
CREATE INDEX docs_shard ON docs(shard);
CREATE INDEX docs_created ON docs(created_at);
CREATE TABLE doc_tags(tag TEXT NOT NULL, doc INTEGER NOT NULL, PRIMARY KEY(tag, doc))
    WITHOUT ROWID;
CREATE INDEX doc_tags_doc ON doc_tags(doc);
CREATE VIRTUAL TABLE fts USING fts5(
    text, tags, content='docs', content_rowid='rowid',
    tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TABLE vectors(
    model TEXT NOT NULL,
    doc INTEGER NOT NULL,
    vec BLOB,
    PRIMARY KEY(model, doc)
) WITHOUT ROWID;
CREATE INDEX vectors_doc ON vectors(doc);
"""


class SearchError(ValueError):
    """A query that cannot be answered as asked (the caller's to fix: a 400)."""


class QueryTimeout(SearchError):
    """A query that did not finish within its time (a 503, SPEC-003 §12.4).

    A SearchError so that a caller that words a refused query (the CLI) words this too; the
    HTTP route tells it apart, since it is the node's load, not the caller's mistake.
    """


class SemanticUnavailable(RuntimeError):
    """Semantic ranking was asked for but no embedder is loaded (a 503, SPEC-003 §12.3)."""


def _entry_row(entry_id: str, e: dict[str, Any], edits: int) -> dict[str, Any]:
    """The indexed fields of one entry, coerced: a synced document is untrusted input."""

    def text_of(value: Any) -> str:
        return value if isinstance(value, str) else ""

    def who(value: Any) -> str | None:
        return value if isinstance(value, str) and 0 < len(value) <= MAX_WHO else None

    tags = e.get("tags")
    tag_list = sorted(t for t, on in tags.items()
                      if on is True and isinstance(t, str) and t and TAG_SEP not in t) \
        if isinstance(tags, dict) else []
    created = text_of(e.get("created_at"))
    log_list = e.get("log") if isinstance(e.get("log"), list) else []
    stamps = [text_of(r.get("at")) for r in log_list if isinstance(r, dict)]
    return {
        "id": entry_id,
        # a member's entry may hold any length (8 MiB); the write cap bounds what is indexed
        "text": text_of(e.get("text"))[:MAX_TEXT],
        "kind": text_of(e.get("kind")),
        "author": text_of(e.get("author")),
        "created_at": created,
        "updated_at": max([created, *stamps]),
        "edits": edits,
        "tags": tag_list,
        "session": who(e.get("session")),
        "agent": who(e.get("agent")),
    }


class SearchIndex:
    """Ranked and semantic search over one node's memory entries."""

    def __init__(self, directory: Path, repo: Repo, embedder: Embedder | None,
                 memory: Memory | None = None) -> None:
        self.dir = Path(directory)
        self.repo = repo
        self.memory = memory  # names the entries of its writes (entries_written), if given
        self.embedder = embedder
        self.model_id = embedder.model_id if embedder is not None else None
        self._lock = threading.RLock()
        self._dirty: dict[str, float] = {}  # shards to read whole: synced, or written unnamed
        # Shards Memory wrote since they were indexed: the entries written and the heads
        # reached, while those writes are the only change (see entries_written).
        self._touched: dict[str, tuple[set[str], list[bytes]]] = {}
        self._heads: dict[str, list[bytes]] = {}  # the heads each shard's rows cover, sorted
        self._embed_cursor = 0
        self._pool: ThreadPoolExecutor | None = None  # vector ranking beside the text ranking
        self._request_pool: ThreadPoolExecutor | None = None  # the API's searches
        self.requests_in_flight = 0  # the API's searches queued or running (the loop counts)
        self.time_limit: float | None = QUERY_TIME_LIMIT  # per search, SPEC-003 §12.4
        self._vectors_changed = 0  # since the vector file was last saved
        self.skipped = 0  # vectors an embedder gave that were not stored (SPEC-001 §7.5)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = self._open()
        # Queries read through connections of their own (WAL: readers never wait for the
        # writer or each other), so a hybrid search ranks text and vectors at the same time
        # instead of one after the other behind the writer's lock (issue 13, p50/p99).
        self._readers: queue.Queue[sqlite3.Connection] = queue.Queue()
        self._all_readers: list[sqlite3.Connection] = []
        self._closed = False
        self._use_model()
        # Kept exactly as rows change, so a status poll or a search never counts 100k rows.
        self._n_docs = self._db.execute("SELECT count(*) FROM docs").fetchone()[0]
        self._n_vectors, self._n_skipped = self._db.execute(
            "SELECT count(vec), count(*) - count(vec) FROM vectors WHERE model IS ?",
            (self.model_id,)).fetchone()
        self.vecindex: VectorIndex | None = None  # loaded by load_vectors (it may take a while)
        self._author_pass = self._shards_before_author_rule()
        repo.subscribe(self._on_change)
        repo.before_evict(self._index_before_evict)
        if memory is not None:
            memory.write_listeners.append(self.entries_written)
            memory.scan_listeners.append(self.shard_scanned)
        self._mark_stale()

    # -- the database ----------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        """Open the database; one of another schema version or that fails to open is replaced."""
        path = self.dir / DB_NAME
        try:
            return self._connect(path)
        except sqlite3.DatabaseError as exc:
            log.warning("search index %s unusable (%s); rebuilding it from Memory", path, exc)
            self._delete_files()
            return self._connect(path)

    def _connect(self, path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # Runtime: losing the last commits is fine
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                if version != 0 or db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    db.close()
                    log.info("search index %s has schema %d; rebuilding", path, version)
                    self._delete_files()
                    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
                    db.execute("PRAGMA journal_mode=WAL")
                    db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("SELECT count(*) FROM docs").fetchone()
        except BaseException:
            db.close()
            raise
        return db

    def _delete_files(self) -> None:
        for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm", VEC_NAME):
            with contextlib.suppress(FileNotFoundError):
                (self.dir / name).unlink()

    @contextlib.contextmanager
    def _reading(self, deadline: float | None = None) -> Iterator[sqlite3.Connection]:
        """A read-only connection for one query; at most READERS exist, a third query waits.

        With a ``deadline`` (``time.monotonic()``), the wait for a connection and the SQLite
        work on it end then, with QueryTimeout: an unbounded wait let 64 queued searches hold
        64 threads, and SQLite's progress handler is the only way to stop a running query.
        """
        try:
            db = self._readers.get_nowait()
        except queue.Empty:
            with self._lock:
                opened = len(self._all_readers) < READERS and not self._closed
                if opened:
                    db = sqlite3.connect(self.dir / DB_NAME, check_same_thread=False,
                                         isolation_level=None)
                    db.execute("PRAGMA query_only=1")
                    self._all_readers.append(db)
            if not opened:
                try:
                    db = self._readers.get(timeout=None if deadline is None
                                           else max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise QueryTimeout("every search connection stayed busy for as long as "
                                       "a search may take; try again") from None
        if deadline is not None:
            db.set_progress_handler(lambda: time.monotonic() > deadline, PROGRESS_STEPS)
        try:
            yield db
        except sqlite3.OperationalError as exc:
            if deadline is not None and time.monotonic() > deadline:
                raise QueryTimeout("the search took longer than a search may take; narrow "
                                   "it (fewer words, longer prefix* words)") from exc
            raise
        finally:
            if deadline is not None:
                db.set_progress_handler(None, 0)
            self._readers.put(db)

    def request_pool(self) -> ThreadPoolExecutor:
        """The threads the API's searches run on: their own few, so a burst of costly
        searches waits here and never takes the loop's default pool, which routing and
        embeddings need."""
        if self._request_pool is None:
            self._request_pool = ThreadPoolExecutor(max_workers=REQUEST_THREADS,
                                                    thread_name_prefix="search-request")
        return self._request_pool

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                self._recount()
                raise
            self._db.execute("COMMIT")

    def _recount(self) -> None:
        """Counters from the rows (after a rolled-back write left them off, or a new model)."""
        with contextlib.suppress(sqlite3.Error):
            self._n_docs = self._db.execute("SELECT count(*) FROM docs").fetchone()[0]
            self._n_vectors, self._n_skipped = self._db.execute(
                "SELECT count(vec), count(*) - count(vec) FROM vectors WHERE model IS ?",
                (self.model_id,)).fetchone()

    def _shards_before_author_rule(self) -> set[str] | None:
        """The shards whose rows may carry the author their entry claimed rather than the
        device that signed it (written before SPEC-005 005.10.6): each is read once more, and
        only such rows' ``author`` is set right (their text, tags and vectors are sound, so
        nothing is embedded again). None when there are none (a new index is marked at once).
        """
        if self._meta("author_rule") == AUTHOR_RULE:
            return None
        with self._lock:
            shards = {s for (s,) in self._db.execute("SELECT DISTINCT shard FROM docs")}
        if not shards:
            with self._write() as db:
                db.execute("INSERT OR REPLACE INTO meta VALUES('author_rule', ?)", (AUTHOR_RULE,))
            return None
        log.info("search index: authors of %d shard(s) to check against their signers",
                 len(shards))
        return shards

    def _author_fixes(self, doc_id: str, doc: Any, present: set[str],
                      changed: list[dict[str, Any]]) -> list[tuple[str, int]]:
        """(signer, rowid) for this shard's rows whose ``author`` is not the device that signed
        their entry's creation, while the author pass covers the shard (rows written whole
        now, or going, are left to that)."""
        if self._author_pass is None or doc_id not in self._author_pass or doc is None:
            return []
        rewritten = {row["id"] for row in changed}
        with self._lock:
            rows = self._db.execute("SELECT entry_id, rowid, author FROM docs WHERE shard=?",
                                    (doc_id,)).fetchall()
        fixes = []
        for entry_id, rowid, author in rows:
            if entry_id not in present or entry_id in rewritten:
                continue
            got = doc.get(ROOT, entry_id)
            signer = creator_of(got[1]) if got is not None and got[0] == ObjType.Map else None
            if signer is not None and signer != author:
                fixes.append((signer, rowid))
        return fixes

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def _use_model(self) -> None:
        """Make the current model the most recently used; vectors of models used longer ago
        than the last KEEP_OTHER_MODELS others are dropped. Memory is not touched."""
        with self._write() as db:
            raw = self._meta("models")
            try:
                used = [m for m in json.loads(raw) if isinstance(m, str)] if raw else []
            except ValueError:
                used = []
            known = [m for (m,) in db.execute("SELECT DISTINCT model FROM vectors")]
            used += [m for m in known if m not in used]  # from before this list was kept
            if self.model_id is not None:
                used = [self.model_id, *(m for m in used if m != self.model_id)]
            keep = used[: KEEP_OTHER_MODELS + (self.model_id is not None)]
            for model in used[len(keep):]:
                gone = db.execute("DELETE FROM vectors WHERE model=?", (model,)).rowcount
                log.info("search index: dropped %d vector(s) of %s, not used lately", gone, model)
            db.execute("INSERT OR REPLACE INTO meta VALUES('models', ?)", (json.dumps(keep),))
            if self._meta("vec_gen") is None:
                db.execute("INSERT INTO meta VALUES('vec_gen', '0')")

    def switch(self, embedder: Embedder | None) -> bool:
        """Embed with ``embedder`` from now on (SPEC-006 §13.6); True if the model changed.

        Runs on the embedding worker (never beside ``embed_pending``). Queries use the new
        model at once; its vectors already stored (a model used before) are loaded, the other
        entries become pending and are embedded by the following passes. Memory is not read
        or written here."""
        new_id = embedder.model_id if embedder is not None else None
        if new_id == self.model_id:
            self.embedder = embedder
            return False
        with self._lock:
            old = self.model_id
            self.vecindex = None
            self.embedder, self.model_id = embedder, new_id
            self._embed_cursor = 0
            self._use_model()
            self._recount()
            self._vectors_changed = 0
        log.info("search index: embedding model %s -> %s (%d entries to embed)", old, new_id,
                 self.counts()["pending"])
        self.load_vectors()
        return True

    def close(self) -> None:
        if self._request_pool is not None:
            self._request_pool.shutdown(wait=True, cancel_futures=True)
            self._request_pool = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._lock:
            self.repo.unsubscribe(self._on_change)
            self.repo.forget_before_evict(self._index_before_evict)
            if self.memory is not None and self.entries_written in self.memory.write_listeners:
                self.memory.write_listeners.remove(self.entries_written)
            if self.memory is not None and self.shard_scanned in self.memory.scan_listeners:
                self.memory.scan_listeners.remove(self.shard_scanned)
            self._closed = True
            for reader in self._all_readers:
                reader.close()
            self._db.close()

    # -- keeping up with Memory ------------------------------------------------------------------
    def _on_change(self, doc_id: str, local: bool) -> None:
        if doc_id.startswith("memory/"):
            # A local write is indexed at the next pass; a synced shard once it is quiet. A
            # write through Memory then names its entries (entries_written), which clears
            # this mark when it can: only those entries are read, not the whole shard.
            if not local and self._heads.get(doc_id) == sorted(self.repo.heads(doc_id)):
                return  # indexed at these heads already: Memory's scan came first
            self._dirty[doc_id] = 0.0 if local else time.monotonic()

    def entries_written(self, doc_id: str, entry_ids: Iterable[str],
                        before: Sequence[bytes], after: Sequence[bytes]) -> None:
        """Memory wrote ``entry_ids`` of ``doc_id`` locally, taking its heads from ``before``
        to ``after`` (``Memory.write_listeners``).

        If the index covers exactly ``before`` (its rows, plus entries already noted this
        way), this write is the whole difference between the index and the shard: the next
        pass reads only these entries, not the 2,500 of a shard at 100,000 entries, where
        the scan of every entry on each POST made the event loop the bottleneck (issue 17).
        Otherwise the shard keeps its mark and is read whole, as for a synced change.
        """
        if not doc_id.startswith("memory/") or (
                self._author_pass is not None and doc_id in self._author_pass):
            return  # a shard the author pass has yet to read stays marked to be read whole
        held = self._touched.get(doc_id)
        covered = held[1] if held is not None else self._heads.get(doc_id, [])
        if covered != sorted(before):
            return
        ids = held[0] if held is not None else set()
        ids.update(entry_ids)
        self._touched[doc_id] = (ids, sorted(after))
        self._dirty.pop(doc_id, None)

    def shard_scanned(self, doc_id: str, doc: Any, scan: ShardScan) -> None:
        """Memory's index upkeep read a whole shard (``Memory.scan_listeners``): bring this
        index to the same heads from what it read, comparing edit counts with this index's
        own rows as :meth:`_reindex` does, and reading from the document only entries whose
        count differs here but not in Memory's index (rare: the two indexes normally move
        together). A catch-up's shards were read through the binding once per index; the
        second read was 40% of the receiver's CPU (issue 17)."""
        if not doc_id.startswith("memory/") or (
                doc_id not in self._dirty and doc_id not in self._touched
                and self._heads.get(doc_id) == scan.heads):
            return  # nothing new here (a scan can come before this index hears of a change)
        at = self._dirty.pop(doc_id, None)
        held = self._touched.pop(doc_id, None)
        try:
            with self._lock:
                indexed = {e: (rowid, edits) for e, rowid, edits in self._db.execute(
                    "SELECT entry_id, rowid, edits FROM docs WHERE shard=?", (doc_id,))}
            changed, present = [], set()
            for entry_id, edits in scan.edits.items():
                if entry_id in scan.superseded or not in_shard(entry_id, doc_id):
                    continue  # replaced by a correction (SPEC-004 §2.12), or not of this shard
                present.add(entry_id)
                if indexed.get(entry_id, (None, None))[1] == edits:
                    continue
                entry = scan.entries.get(entry_id)
                if entry is None:
                    entry = read_entry(doc, doc.get(ROOT, entry_id)[1])
                changed.append(_entry_row(entry_id, entry, edits))
            self._apply(doc_id, indexed, changed, present, scan.heads,
                        self._author_fixes(doc_id, doc, present, changed))
        except Exception as exc:  # Runtime only: the next pass reads the shard itself
            log.warning("search index of %s not brought up to date: %s", doc_id, exc)
            self._dirty[doc_id] = at if at is not None else 0.0
            if held is not None:
                self._touched[doc_id] = held

    def _index_before_evict(self, doc_id: str, doc: Any) -> None:
        """Index a changed shard while it is still in memory, as Memory does (SPEC-005 §7.7):
        a catch-up evicts each shard after applying it, and indexing it later meant loading
        it again from its change log, the highest moment of a 100k catch-up's memory (issue
        17). The vectors follow in the worker, from the rows written here."""
        if doc_id not in self._dirty and doc_id not in self._touched:
            return
        if self.memory is not None and self.memory.will_scan(doc_id):
            return  # Memory's own hook reads it and hands the reads on (shard_scanned)
        at = self._dirty.pop(doc_id, None)
        held = self._touched.pop(doc_id, None)
        try:
            if at is None and held is not None:
                self._reindex_entries(doc_id, *held, doc=doc)
            else:
                self._reindex(doc_id, doc)
        except sqlite3.Error as exc:  # Runtime only: the next pass loads it and tries again
            log.warning("search index of %s not brought up to date: %s", doc_id, exc)
            self._dirty[doc_id] = at if at is not None else 0.0

    def _mark_stale(self) -> None:
        with self._lock:
            indexed = {d: sorted(msgpack.unpackb(h)) for d, h in
                       self._db.execute("SELECT doc_id, heads FROM shards")}
        self._heads = indexed
        stored = set(self.repo.store.doc_ids("memory"))
        for doc_id in stored | set(indexed):
            if indexed.get(doc_id) != sorted(self.repo.heads(doc_id)) or doc_id not in stored:
                self._dirty[doc_id] = 0.0
        for doc_id in self._author_pass or ():
            self._dirty.setdefault(doc_id, 0.0)  # read once more: its authors (005.10.6)
        if self._dirty:
            log.info("search index: %d shard(s) to (re)index", len(self._dirty))

    def dirty_shards(self) -> int:
        return len(self._dirty.keys() | self._touched.keys())

    def flush(self, quiet: float = 0.0, max_shards: int | None = None) -> int:
        """Index shards that changed (with ``quiet`` > 0, only synced shards unchanged that
        long); entries Memory named as written come first and are read alone."""
        now = time.monotonic()
        done = 0
        for doc_id in list(self._touched)[:max_shards]:
            ids, heads = self._touched.pop(doc_id)
            if doc_id in self._dirty:
                continue  # changed by another writer or a peer too: read whole below
            was_loaded = self.repo.is_loaded(doc_id)
            try:
                self._reindex_entries(doc_id, ids, heads)
            except sqlite3.Error as exc:  # Runtime only (a full disk): try again next pass
                log.warning("search index of %s not brought up to date: %s", doc_id, exc)
                self._dirty[doc_id] = now
                return done
            finally:
                if not was_loaded:
                    self.repo.evict(doc_id)
            done += 1
        if max_shards is not None and done >= max_shards:
            return done
        # In the background pass, a synced shard Memory's upkeep will read whole is left to
        # it: its reads come here (shard_scanned), so the shard is read once, not twice.
        # Not for ever: if Memory's pass keeps failing (its Runtime full), read it here.
        defer = self.memory.will_scan if quiet and self.memory is not None else None
        due = [d for d, at in self._dirty.items()
               if now - at >= quiet and not (defer is not None and defer(d)
                                             and now - at < 3 * quiet)]
        due = due[: None if max_shards is None else max_shards - done]
        for doc_id in due:
            self._dirty.pop(doc_id, None)
            was_loaded = self.repo.is_loaded(doc_id)
            try:
                self._reindex(doc_id)
            except sqlite3.Error as exc:  # Runtime only (a full disk): try again next pass
                log.warning("search index of %s not brought up to date: %s", doc_id, exc)
                self._dirty[doc_id] = now
                break
            finally:
                if not was_loaded:
                    self.repo.evict(doc_id)  # one shard at a time, as Memory does
            done += 1
        return done

    def _reindex(self, doc_id: str, doc: Any = None) -> None:
        """Bring every entry of one shard up to date (a synced change, a start)."""
        with self._lock:
            indexed = {e: (rowid, edits) for e, rowid, edits in self._db.execute(
                "SELECT entry_id, rowid, edits FROM docs WHERE shard=?", (doc_id,))}
        if doc is None and self.repo.store.doc_meta(doc_id) is None and not \
                self.repo.is_loaded(doc_id):
            self._apply(doc_id, indexed, [], set(), None)
            return
        doc = doc if doc is not None else self.repo.open(doc_id).doc
        changed, present = [], set()
        # keys and values of the root in one call each: the shard's scan is per entry
        for entry_id, (kind, obj) in zip(doc.keys(ROOT), doc.values(ROOT), strict=True):
            if kind != ObjType.Map or not in_shard(entry_id, doc_id):
                continue  # a member's entry under another shard's id: never indexed twice
            self._read_entry(doc, entry_id, obj, indexed, changed, present)
        self._apply(doc_id, indexed, changed, present, sorted(doc.get_heads()),
                    self._author_fixes(doc_id, doc, present, changed))

    def _reindex_entries(self, doc_id: str, ids: set[str], heads: list[bytes],
                         doc: Any = None) -> None:
        """Bring only ``ids`` of one shard up to date: the shard went from the heads the
        index covers to ``heads`` by writes to these entries alone (entries_written)."""
        doc = doc if doc is not None else self.repo.open(doc_id).doc
        if sorted(doc.get_heads()) != heads:  # changed since in a way no write named
            self._reindex(doc_id, doc)
            return
        wanted = sorted(ids)
        indexed: dict[str, tuple[int, int]] = {}
        with self._lock:
            for at in range(0, len(wanted), 500):
                part = wanted[at : at + 500]
                indexed.update((e, (rowid, edits)) for e, rowid, edits in self._db.execute(
                    f"SELECT entry_id, rowid, edits FROM docs WHERE shard=? AND entry_id IN "
                    f"({','.join('?' * len(part))})", (doc_id, *part)))
        changed, present = [], set()
        for entry_id in wanted:
            got = doc.get(ROOT, entry_id) if in_shard(entry_id, doc_id) else None
            if got is not None and got[0] == ObjType.Map:
                self._read_entry(doc, entry_id, got[1], indexed, changed, present)
        self._apply(doc_id, indexed, changed, present, heads)

    @staticmethod
    def _read_entry(doc: Any, entry_id: str, obj: Any, indexed: dict[str, tuple[int, int]],
                    changed: list[dict[str, Any]], present: set[str]) -> None:
        """Note one entry map as present (unless deleted or superseded) and as changed when
        its edit count differs from the indexed one."""
        fields = doc.keys(obj)
        if "deleted_at" in fields:
            return
        if "superseded_by" in fields:
            return  # a correction replaced it: it never surfaces (SPEC-004 §2.12)
        present.add(entry_id)
        log_obj = doc.get(obj, "log") if "log" in fields else None
        edits = doc.length(log_obj[1]) if log_obj is not None else 0
        if indexed.get(entry_id, (None, None))[1] != edits:
            changed.append(_entry_row(entry_id, read_entry(doc, obj), edits))

    def _apply(self, doc_id: str, indexed: dict[str, tuple[int, int]],
               changed: list[dict[str, Any]], present: set[str],
               heads: list[bytes] | None, authors: Sequence[tuple[str, int]] = ()) -> None:
        """Write the rows read from one shard: ``indexed`` rows not ``present`` go, and the
        shard is marked as covering ``heads`` (None: the shard is gone). ``authors``: rows
        whose author the author pass sets right; the shard leaves that pass once written."""
        gone = [indexed[e][0] for e in set(indexed) - present]
        new = [row for row in changed if row["id"] not in indexed]
        in_pass = self._author_pass is not None and doc_id in self._author_pass
        with self._write() as db:
            if authors:
                db.executemany("UPDATE docs SET author=? WHERE rowid=?", authors)
            if in_pass and self._author_pass == {doc_id}:  # the last one: the index is sound
                db.execute("INSERT OR REPLACE INTO meta VALUES('author_rule', ?)",
                           (AUTHOR_RULE,))
            for row in changed:
                if row["id"] in indexed:
                    self._put(db, doc_id, row, indexed[row["id"]][0])
            if new:
                self._insert_new(db, doc_id, new)
            for rowid in gone:
                self._remove(db, rowid)
            if heads is not None:
                db.execute("INSERT OR REPLACE INTO shards VALUES(?, ?)",
                           (doc_id, msgpack.packb(heads)))
            else:
                db.execute("DELETE FROM shards WHERE doc_id=?", (doc_id,))
            if changed or gone:
                db.execute("UPDATE meta SET value=value+1 WHERE key='vec_gen'")
        if heads is not None:
            self._heads[doc_id] = heads
        else:
            self._heads.pop(doc_id, None)
        if in_pass and self._author_pass is not None:
            self._author_pass.discard(doc_id)
            if not self._author_pass:
                self._author_pass = None
                log.info("search index: every row's author is its entry's signer")
        if self.vecindex is not None:
            self.vecindex.remove(
                gone + [indexed[r["id"]][0] for r in changed if r["id"] in indexed])

    def _put(self, db: sqlite3.Connection, shard: str, row: dict[str, Any],
             rowid: int | None) -> None:
        tags = TAG_SEP.join(row["tags"])
        values = (shard, row["kind"], row["author"], row["created_at"], row["updated_at"],
                  row["edits"], tags, row["text"], row["session"], row["agent"])
        if rowid is not None:
            old_text, old_tags = db.execute(
                "SELECT text, tags FROM docs WHERE rowid=?", (rowid,)).fetchone()
            db.execute("INSERT INTO fts(fts, rowid, text, tags) VALUES('delete', ?, ?, ?)",
                       (rowid, old_text, old_tags))
            db.execute("UPDATE docs SET shard=?, kind=?, author=?, created_at=?, updated_at=?, "
                       "edits=?, tags=?, text=?, session=?, agent=? WHERE rowid=?",
                       (*values, rowid))
            db.execute("DELETE FROM doc_tags WHERE doc=?", (rowid,))
            self._forget_vector(db, rowid)  # text or tags changed: embed again
        else:
            rowid = db.execute(
                "INSERT INTO docs(shard, kind, author, created_at, updated_at, edits, tags, "
                "text, session, agent, entry_id) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*values, row["id"])
            ).lastrowid
            self._n_docs += 1
        db.execute("INSERT INTO fts(rowid, text, tags) VALUES(?, ?, ?)", (rowid, row["text"], tags))
        db.executemany("INSERT OR IGNORE INTO doc_tags VALUES(?, ?)",
                       [(t, rowid) for t in row["tags"]])

    def _insert_new(self, db: sqlite3.Connection, shard: str,
                    rows: list[dict[str, Any]]) -> None:
        """Insert rows of entries not yet indexed, each table in one ``executemany``: row
        ids are taken in order after the table's AUTOINCREMENT counter, so the full-text and
        tag rows need no ``lastrowid`` per row (a catch-up inserts 2,500 entries a shard;
        one statement per row and table was most of the index's share of the receiver's
        CPU, issue 17)."""
        seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name='docs'").fetchone()
        first = (seq[0] if seq else 0) + 1
        numbered = list(enumerate(rows, first))
        tags = {rowid: TAG_SEP.join(row["tags"]) for rowid, row in numbered}
        db.executemany(
            "INSERT INTO docs(rowid, shard, kind, author, created_at, updated_at, edits, tags, "
            "text, session, agent, entry_id) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(rowid, shard, row["kind"], row["author"], row["created_at"], row["updated_at"],
              row["edits"], tags[rowid], row["text"], row["session"], row["agent"], row["id"])
             for rowid, row in numbered])
        db.executemany("INSERT INTO fts(rowid, text, tags) VALUES(?, ?, ?)",
                       [(rowid, row["text"], tags[rowid]) for rowid, row in numbered])
        db.executemany("INSERT OR IGNORE INTO doc_tags VALUES(?, ?)",
                       [(t, rowid) for rowid, row in numbered for t in row["tags"]])
        self._n_docs += len(rows)

    def _remove(self, db: sqlite3.Connection, rowid: int) -> None:
        old_text, old_tags = db.execute(
            "SELECT text, tags FROM docs WHERE rowid=?", (rowid,)).fetchone()
        db.execute("INSERT INTO fts(fts, rowid, text, tags) VALUES('delete', ?, ?, ?)",
                   (rowid, old_text, old_tags))
        db.execute("DELETE FROM docs WHERE rowid=?", (rowid,))
        db.execute("DELETE FROM doc_tags WHERE doc=?", (rowid,))
        self._forget_vector(db, rowid)
        self._n_docs -= 1

    def _forget_vector(self, db: sqlite3.Connection, rowid: int) -> None:
        for (had_vector,) in db.execute(
                "DELETE FROM vectors WHERE doc=? RETURNING vec IS NOT NULL", (rowid,)).fetchall():
            if had_vector:
                self._n_vectors -= 1
            else:
                self._n_skipped -= 1

    # -- vectors (worker thread) -----------------------------------------------------------------
    def load_vectors(self) -> None:
        """Load the vector file if it matches the stored vectors, else rebuild it from them."""
        if self.embedder is None:
            return
        path = self.dir / VEC_NAME
        with self._lock:
            stamp = f"{self.model_id} {self._meta('vec_gen')}"
            saved = self._meta("vec_stamp")
        vi = VectorIndex.load(path, self.embedder.dim) if saved == stamp else None
        if vi is None:
            vi = VectorIndex(self.embedder.dim)
            self.vecindex = vi  # searches see the vectors as they arrive
            after = 0
            while True:
                with self._lock:
                    rows = self._db.execute(
                        "SELECT doc, vec FROM vectors WHERE model=? AND doc>? AND vec IS NOT NULL "
                        "ORDER BY doc LIMIT 4096", (self.model_id, after)).fetchall()
                if not rows:
                    break
                keys = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16)
                vi.add(keys, vecs.reshape(len(rows), -1).astype(np.float32))
                after = rows[-1][0]
            if len(vi):
                log.info("search index: vector index rebuilt (%d vectors)", len(vi))
                self._vectors_changed = len(vi)
        self.vecindex = vi

    def embed_pending(self, batch: int = EMBED_BATCH) -> int:
        """Embed up to ``batch`` entries that have no vector for the model; returns how many.

        The entry's edit count is read with its text, and the vector is stored only if that
        count is unchanged: an entry edited meanwhile is embedded again from its new text.
        """
        if self.embedder is None or self.vecindex is None or not self.counts()["pending"]:
            return 0  # nothing to do: no scan of every row every pass (it holds the lock)
        sql = ("SELECT d.rowid, d.edits, d.text, d.tags FROM docs d WHERE d.rowid>? AND NOT "
               "EXISTS(SELECT 1 FROM vectors v WHERE v.model=? AND v.doc=d.rowid) "
               "ORDER BY d.rowid LIMIT ?")
        with self._lock:
            rows = self._db.execute(sql, (self._embed_cursor, self.model_id, batch)).fetchall()
            if not rows and self._embed_cursor:
                self._embed_cursor = 0
                rows = self._db.execute(sql, (0, self.model_id, batch)).fetchall()
        if not rows:
            return 0
        texts = [f"{text}\n{tags.replace(TAG_SEP, ' ')}" if tags else text
                 for _, _, text, tags in rows]
        vectors, ok = self._embed_batch(texts)
        half = vectors.astype(np.float16)
        stored: list[int] = []
        with self._write() as db:
            for i, (rowid, edits, _, _) in enumerate(rows):
                cur = db.execute(
                    "INSERT OR REPLACE INTO vectors(model, doc, vec) SELECT ?, ?, ? WHERE "
                    "EXISTS(SELECT 1 FROM docs WHERE rowid=? AND edits=?)",
                    (self.model_id, rowid, half[i].tobytes() if ok[i] else None, rowid, edits))
                if cur.rowcount:
                    if ok[i]:
                        stored.append(i)
                        self._n_vectors += 1
                    else:
                        self._n_skipped += 1
            db.execute("UPDATE meta SET value=value+1 WHERE key='vec_gen'")
        self.skipped += int((~ok).sum())
        if stored:
            idx = np.asarray(stored)
            self.vecindex.add(np.asarray([rows[i][0] for i in stored], dtype=np.int64),
                              vectors[idx])
        self._embed_cursor = rows[-1][0]
        self._vectors_changed += len(rows)
        return len(rows)

    def _embed_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Vectors and usable flags; a text the model fails on alone is skipped, not retried.

        An exception for the whole batch is tried text by text: an entry that makes the model
        fail (a mesh member can write any text) must not stop every later entry from being
        embedded. If every text fails alone, the model itself is down: the exception goes up
        and the batch stays pending.
        """
        assert self.embedder is not None
        try:
            return checked_vectors(self.embedder, texts)
        except ModelUnavailable:
            raise  # the model is away (its host is gone): no text is to blame, try later
        except Exception:
            if len(texts) == 1:
                raise
        vectors = np.zeros((len(texts), self.embedder.dim), dtype=np.float32)
        ok = np.zeros(len(texts), dtype=bool)
        failed = 0
        for i, text in enumerate(texts):
            try:
                v, o = checked_vectors(self.embedder, [text])
            except ModelUnavailable:
                raise
            except Exception as exc:
                failed += 1
                log.warning("embedder %s failed on one entry (%s); skipped",
                            self.model_id, type(exc).__name__)
                continue
            vectors[i], ok[i] = v[0], o[0]
        if failed == len(texts):
            raise RuntimeError(f"embedder {self.model_id} failed on every entry of a batch")
        return vectors, ok

    def save_vectors(self, force: bool = False) -> bool:
        """Write the vector file if vectors changed since it was written; True if written."""
        if self.vecindex is None or not (self._vectors_changed or force):
            return False
        with self._lock:  # no vector changes while the file and its stamp are written
            self.vecindex.save(self.dir / VEC_NAME)
            stamp = f"{self.model_id} {self._meta('vec_gen')}"
            self._db.execute("INSERT OR REPLACE INTO meta VALUES('vec_stamp', ?)", (stamp,))
            self._vectors_changed = 0
        return True

    # -- queries ---------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Entries, entries with a vector, skipped ones and entries waiting for one."""
        with self._lock:
            entries, vectors, skipped = self._n_docs, self._n_vectors, self._n_skipped
        return {"entries": entries, "vectors": vectors, "skipped": skipped,
                "pending": entries - vectors - skipped if self.embedder is not None else 0}

    def search(
        self,
        query: str,
        *,
        mode: str = "hybrid",
        kind: str | None = None,
        tag: str | None = None,
        device: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 20,
        refresh: bool = True,
    ) -> dict[str, Any]:
        """Ranked entries for ``query`` (SPEC-003 §12); filters narrow both rankings.

        The SQLite work ends ``self.time_limit`` seconds after the ranking starts
        (QueryTimeout).

        ``refresh`` first indexes changed shards; it reads documents, so it must run on the
        event loop's thread: a caller that searches from another thread calls ``flush`` on
        the loop first and passes False. In hybrid mode the vector ranking runs on a second
        thread while SQLite ranks the text (both release the GIL).
        """
        if mode not in MODES:
            raise SearchError(f"mode must be one of {', '.join(MODES)}")
        with self._lock:  # one consistent model: a switch (SPEC-006 §13.6) may run meanwhile
            model = (self.embedder, self.vecindex, self.model_id)
        semantic_ready = (model[0] is not None and model[1] is not None
                          and model[1].dim == model[0].dim)
        if mode == "semantic" and not semantic_ready:
            raise SemanticUnavailable("no embedding model is loaded on this node")
        if refresh:
            self.flush()
        deadline = None if self.time_limit is None else time.monotonic() + self.time_limit
        where, args = _filters(kind, tag, device, since, until)
        depth = limit if mode != "hybrid" else max(3 * limit, 50)
        parsed = parse(query)
        if parsed.empty and mode == "text":
            raise SearchError("the query has no word to search for")
        pending = None
        if mode in ("semantic", "hybrid") and semantic_ready:
            pending = self._query_pool().submit(self._semantic, model, query, where, args,
                                                depth, deadline)
        text_ranked: list[int] = []
        semantic_ranked: list[int] = []
        try:
            if mode in ("text", "hybrid") and not parsed.empty:
                text_ranked = self._text(parsed, where, args, depth, deadline)
        finally:
            if pending is not None:
                try:
                    semantic_ranked = pending.result(
                        QUERY_WAIT_HYBRID if mode == "hybrid" else QUERY_WAIT_SEMANTIC)
                except FutureTimeout:
                    # a slow or hung embedding cortex (SPEC-006 §13.6): never stall a search
                    log.warning("embedder %s did not embed a query in time; %s", model[2],
                                "answering by text" if mode == "hybrid" else "503")
                    if mode == "semantic":
                        raise SemanticUnavailable(
                            f"the embedding model {model[2]} did not answer in time") from None
                except SemanticUnavailable:
                    if mode == "semantic":
                        raise
                    # hybrid: the text ranking alone
        if mode == "text":
            scores = {r: 1.0 / (RRF_K + i + 1) for i, r in enumerate(text_ranked)}
        elif mode == "semantic":
            scores = {r: 1.0 / (RRF_K + i + 1) for i, r in enumerate(semantic_ranked)}
        else:
            scores = {}
            for ranking in (text_ranked, semantic_ranked):
                for i, r in enumerate(ranking):
                    scores[r] = scores.get(r, 0.0) + 1.0 / (RRF_K + i + 1)
        text_rank = {r: i + 1 for i, r in enumerate(text_ranked)}
        sem_rank = {r: i + 1 for i, r in enumerate(semantic_ranked)}
        # Ties (text rank 1 + semantic 3 against 3 + 1) go to the better text rank, so the
        # order depends on the rankings only, never on row ids (a rebuild answers the same).
        never = len(scores) + 1
        top = sorted(scores, key=lambda r: (-scores[r], text_rank.get(r, never),
                                            sem_rank.get(r, never)))[:limit]
        rows = self._rows(top, deadline)
        entries = []
        budget = RESULT_BUDGET
        for r in top:
            if r not in rows:
                continue
            entry = rows[r] | {
                "score": round(scores[r], 6),
                "ranks": {"text": text_rank.get(r), "semantic": sem_rank.get(r)},
            }
            budget -= len(json.dumps(entry, ensure_ascii=False).encode("utf-8", "replace"))
            if budget < 0:
                break  # the best entries that fit; the rest would make the answer unbounded
            entries.append(entry)
        counts = self.counts()
        return {"entries": entries, "count": len(entries), "mode": mode,
                "model": model[2], "pending": counts["pending"]}

    def _query_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="search-query")
        return self._pool

    def _text(self, parsed, where: str, args: list, depth: int,
              deadline: float | None = None) -> list[int]:
        bm25 = f"bm25(fts, {BM25_WEIGHTS[0]}, {BM25_WEIGHTS[1]})"
        if where:
            sql = (f"SELECT d.rowid, {bm25} AS s, d.entry_id FROM fts JOIN docs d ON "
                   f"d.rowid=fts.rowid WHERE fts MATCH ? {where} ORDER BY s, d.entry_id LIMIT ?")
        else:  # the FTS table alone: three times faster than joined, measured at 100k
            sql = f"SELECT rowid, {bm25} AS s, NULL FROM fts WHERE fts MATCH ? ORDER BY s LIMIT ?"
        with self._reading(deadline) as db:
            try:
                found = db.execute(sql, (parsed.all_terms(), *args, depth)).fetchall()
                if len(found) < depth and len(parsed.terms) > 1:
                    seen = {r[0] for r in found}
                    more = db.execute(sql, (parsed.any_term(), *args, depth)).fetchall()
                    found += [r for r in more if r[0] not in seen][: depth - len(found)]
            except sqlite3.OperationalError as exc:  # parse() makes this unreachable; a 400
                if deadline is not None and time.monotonic() > deadline:
                    raise  # interrupted by the progress handler: _reading makes it a timeout
                log.warning("full-text query refused by SQLite: %s", exc)
                raise SearchError("the query could not be read") from exc
            if not where and len({r[1] for r in found}) < len(found):
                # Equal scores go to the smaller entry id, so a rebuilt index (other row ids)
                # ranks the same.
                ids = _entry_ids(db, [r[0] for r in found])
                found = sorted(found, key=lambda r: (r[1], ids.get(r[0], "")))
        return [r[0] for r in found]

    def _semantic(self, model: tuple, query: str, where: str, args: list,
                  depth: int, deadline: float | None = None) -> list[int]:
        embedder, vecindex, model_id = model
        try:
            vectors, ok = checked_vectors(embedder, [query])
        except Exception as exc:  # a model is untrusted and may be unreachable (a cortex)
            log.warning("embedder %s failed on a query: %s", model_id, exc)
            raise SemanticUnavailable(f"the embedding model failed: {type(exc).__name__}") \
                from None
        if not ok[0]:
            return []
        qv = vectors[0]
        if where:
            with self._reading(deadline) as db:
                n = db.execute(f"SELECT count(*) FROM docs d WHERE 1=1 {where}",
                               args).fetchone()[0]
                rows = db.execute(
                    f"SELECT d.rowid, v.vec, d.entry_id FROM docs d JOIN vectors v ON "
                    f"v.doc=d.rowid AND v.model=? WHERE v.vec IS NOT NULL {where}",
                    (model_id, *args)).fetchall() if n <= EXACT_SCAN_MAX else None
            if rows is None:  # a broad filter: the best of all, filtered
                rows = self._candidates(model_id, vecindex.search(qv, max(20 * depth, 2000)),
                                        where, args, deadline)
        else:
            rows = self._candidates(model_id, vecindex.search(qv, max(2 * depth, RERANK)),
                                    "", [], deadline)
        return _by_similarity(rows, qv)[:depth]

    def _candidates(self, model_id: str, rowids: list[int], where: str,
                    args: list, deadline: float | None = None) -> list[tuple]:
        """(row id, float16 vector, tie-break key) of those ``rowids`` that pass the filters.

        Without a filter the vectors table alone answers: a vector row exists exactly as long
        as its entry's row (both go in one transaction), so a deleted entry cannot slip in.
        """
        if not rowids:
            return []
        marks = ",".join("?" * len(rowids))
        with self._reading(deadline) as db:
            if not where:
                return db.execute(
                    f"SELECT doc, vec, doc FROM vectors WHERE model=? AND doc IN ({marks}) AND "
                    f"vec IS NOT NULL", (model_id, *rowids)).fetchall()
            return db.execute(
                f"SELECT d.rowid, v.vec, d.entry_id FROM docs d JOIN vectors v ON "
                f"v.doc=d.rowid AND v.model=? WHERE d.rowid IN ({marks}) AND v.vec IS NOT "
                f"NULL {where}", (model_id, *rowids, *args)).fetchall()

    def _rows(self, rowids: list[int], deadline: float | None = None
              ) -> dict[int, dict[str, Any]]:
        if not rowids:
            return {}
        marks = ",".join("?" * len(rowids))
        with self._reading(deadline) as db:
            found = db.execute(
                f"SELECT rowid, entry_id, substr(text, 1, {RESULT_TEXT}), kind, tags, author, "
                f"created_at, updated_at, edits, session, agent, length(text) > {RESULT_TEXT} "
                f"FROM docs WHERE rowid IN ({marks})", rowids).fetchall()
        return {
            r[0]: {"id": r[1], "text": r[2], "text_truncated": bool(r[11]), "kind": r[3],
                   "tags": r[4].split(TAG_SEP) if r[4] else [], "author": r[5],
                   "created_at": r[6], "updated_at": r[7], "edits": r[8],
                   "session": r[9], "agent": r[10]}
            for r in found
        }

    def status(self) -> dict[str, Any]:
        return self.counts() | {
            "model": self.model_id,
            "vector_index": len(self.vecindex) if self.vecindex is not None else None,
            "shards_to_index": self.dirty_shards(),
        }


def _entry_ids(db: sqlite3.Connection, rowids: list[int]) -> dict[int, str]:
    marks = ",".join("?" * len(rowids))
    return dict(db.execute(
        f"SELECT rowid, entry_id FROM docs WHERE rowid IN ({marks})", rowids).fetchall())


def _by_similarity(rows: list[tuple], qv: np.ndarray) -> list[int]:
    """Row ids by exact cosine with the stored float16 vectors; equal similarity (identical
    texts) goes to the smaller tie-break key (the entry id when filtered, else the row id)."""
    if not rows:
        return []
    mat = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16)
    sims = mat.reshape(len(rows), -1).astype(np.float32) @ qv
    order = sorted(range(len(rows)), key=lambda i: (-sims[i], rows[i][2]))
    return [rows[i][0] for i in order]


def _filters(kind: str | None, tag: str | None, device: str | None, since: str | None,
             until: str | None) -> tuple[str, list]:
    """SQL conditions on ``docs d`` (each starting with AND) and their parameters."""
    where, args = [], []
    for column, value in (("kind", kind), ("author", device)):
        if value is not None:
            where.append(f"AND d.{column}=?")
            args.append(value)
    if since is not None:
        where.append("AND d.created_at>=?")
        args.append(since)
    if until is not None:
        where.append("AND d.created_at<?")
        args.append(until)
    if tag is not None:
        where.append("AND EXISTS(SELECT 1 FROM doc_tags t WHERE t.tag=? AND t.doc=d.rowid)")
        args.append(tag)
    return " ".join(where), args
