"""The Python Automerge binding alone, in this process: the ceilings maia-node is measured by.

maia-node cannot write, load or sync a change faster than the binding it is built on. Every
speed benchmark measures these ceilings in the same run, on the same entry shape (a map with
text, kind, created_at, author, a tags map and a log list; one change per entry), and reports
its own figures as ratios to them, so a result holds on a slower or a faster machine and
through the noise of other work on the cores (issue 17).
"""

from __future__ import annotations

import base64
import os
import sqlite3
import statistics
import tempfile
import time
from typing import Any

from automerge.core import ROOT, Document, Message, ObjType, ScalarType, SyncState

AUTHOR = "BENCHAA-" + "A" * 55  # the shape of a device id


def write_entry(doc: Document, item: dict[str, Any], entry_id: str, at: str,
                parent: Any = ROOT, author: str = AUTHOR) -> None:
    """One change creating one entry of maia-node's memory shape (under ``parent``): the same
    shape in every benchmark that measures the binding alone."""
    with doc.transaction() as tx:
        obj = tx.put_object(parent, entry_id, ObjType.Map)
        tx.put(obj, "text", ScalarType.Str, item["text"])
        tx.put(obj, "kind", ScalarType.Str, item["kind"])
        tx.put(obj, "created_at", ScalarType.Str, at)
        tx.put(obj, "author", ScalarType.Str, author)
        tags = tx.put_object(obj, "tags", ObjType.Map)
        for tag in item["tags"]:
            tx.put(tags, tag, ScalarType.Boolean, True)
        log = tx.put_object(obj, "log", ObjType.List)
        rec = tx.insert_object(log, 0, ObjType.Map)
        tx.put(rec, "at", ScalarType.Str, at)
        tx.put(rec, "op", ScalarType.Str, "create")


def entry_ids(items: list[dict[str, Any]]) -> list[str]:
    month = time.strftime("%Y%m", time.gmtime())
    return [f"{i['kind']}-{month}-{base64.b32encode(os.urandom(7)).decode()[:10]}"
            for i in items]


def write_doc(items: list[dict[str, Any]]) -> tuple[Document, float]:
    """One document, one change per entry; returns it and the seconds the writes took."""
    ids = entry_ids(items)
    at = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    doc = Document(actor_id=os.urandom(40))
    t0 = time.perf_counter()
    for item, entry_id in zip(items, ids, strict=True):
        write_entry(doc, item, entry_id, at)
    return doc, time.perf_counter() - t0


def write_rate(items: list[dict[str, Any]]) -> float:
    """Entries (transactions) per second the binding writes into one document."""
    _, took = write_doc(items)
    return len(items) / took


def load_rate(doc: Document) -> float:
    """Changes per second the binding loads from the concatenated change chunks."""
    changes = doc.get_changes([])
    data = b"".join(c.bytes for c in changes)
    t0 = time.perf_counter()
    loaded = Document.load(data)
    took = time.perf_counter() - t0
    assert len(loaded.get_heads()) == len(doc.get_heads())
    return len(changes) / took


def sync_rate(doc: Document) -> float:
    """Changes per second the binding's sync protocol moves from ``doc`` into a fresh
    document in this process: messages encoded and decoded as on the wire, no I/O."""
    return sync_rates(doc)["wall"]


def sync_rates(doc: Document) -> dict[str, float]:
    """:func:`sync_rate` by the clock (``wall``) and by this process's CPU time (``cpu``),
    which other work on the machine disturbs less."""
    n = len(doc.get_changes([]))
    c0 = time.process_time()
    t0 = time.perf_counter()
    _sync_into(doc, Document())
    took, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"wall": n / took, "cpu": n / max(cpu, 1e-9)}


def _sync_into(doc: Document, fresh: Document) -> float:
    """Run the sync protocol from ``doc`` into ``fresh`` in this process, messages encoded
    and decoded as on the wire; returns the seconds ``fresh`` spent receiving."""
    s_a, s_b = SyncState(), SyncState()
    receive = 0.0
    for _ in range(10_000):
        quiet = True
        msg = doc.generate_sync_message(s_a)
        if msg is not None:
            wire = msg.encode()
            t1 = time.perf_counter()
            fresh.receive_sync_message(s_b, Message.decode(wire))
            receive += time.perf_counter() - t1
            quiet = False
        msg = fresh.generate_sync_message(s_b)
        if msg is not None:
            doc.receive_sync_message(s_a, Message.decode(msg.encode()))
            quiet = False
        if quiet:
            break
    assert sorted(fresh.get_heads()) == sorted(doc.get_heads())
    return receive


def write_shards(items: list[dict[str, Any]], docs: int = 40) -> list[Document]:
    """The entries spread over ``docs`` documents as a month's shards, one change each."""
    ids = entry_ids(items)
    at = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    shards = [Document(actor_id=os.urandom(40)) for _ in range(docs)]
    for j, (item, entry_id) in enumerate(zip(items, ids, strict=True)):
        write_entry(shards[j % docs], item, entry_id, at)
    return shards


def catchup_floor(shards: list[Document]) -> dict[str, float]:
    """The least a receiver must do before the entries of ``shards`` are listable and
    searchable, in this process, with nothing of maia-node's own: the binding's receiving
    half of the sync protocol into a fresh document per shard (the sending half runs on the
    peer), reading each entry's fields back through the binding (text, kind, created_at,
    tags, its log's length: what a listing and a search show), and inserting them into
    SQLite with the search index's own schema (FTS5 and its tables, one transaction per
    shard, as a catch-up's shards arrive).

    No verification, durable storage, transport or Memory index: a floor, not a design.
    Its ``floor_s`` over the time of the binding's whole single-document sync of the same
    entries (the ceiling) is the highest "until searchable" ratio any receiver written over
    this binding and this index could reach (issue 17)."""
    from node.search.index import _SCHEMA  # the schema the node's search index creates

    receive = 0.0
    fresh_docs = []
    for doc in shards:
        fresh = Document()
        receive += _sync_into(doc, fresh)
        fresh_docs.append(fresh)
    t0 = time.perf_counter()
    shard_rows = []
    for fresh in fresh_docs:
        rows = []
        for entry_id, (_, obj) in zip(fresh.keys(ROOT), fresh.values(ROOT), strict=True):
            fields = dict(zip(fresh.keys(obj), fresh.values(obj), strict=True))
            tags = fresh.keys(fields["tags"][1])
            edits = fresh.length(fields["log"][1])
            rows.append((entry_id, fields["text"][0][1], fields["kind"][0][1],
                         fields["created_at"][0][1], tags, edits))
        shard_rows.append(rows)
    read = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(os.path.join(tmp, "search.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        t0 = time.perf_counter()
        first = 1
        for rows in shard_rows:
            part = list(enumerate(rows, first))
            first += len(rows)
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO docs(rowid, entry_id, shard, kind, author, created_at, updated_at,"
                " edits, tags, text) VALUES(?, ?, 'memory/note/2026-12/0', ?, ?, ?, ?, ?, ?, ?)",
                [(i, r[0], r[2], AUTHOR, r[3], r[3], r[5], "\x1f".join(r[4]), r[1])
                 for i, r in part])
            db.executemany("INSERT INTO fts(rowid, text, tags) VALUES(?, ?, ?)",
                           [(i, r[1], "\x1f".join(r[4])) for i, r in part])
            db.executemany("INSERT OR IGNORE INTO doc_tags VALUES(?, ?)",
                           [(t, i) for i, r in part for t in r[4]])
            db.execute("COMMIT")
        index = time.perf_counter() - t0
        db.close()
    return {"receive_s": receive, "read_s": read, "index_s": index,
            "floor_s": receive + read + index}


def durable_write_floor(items: list[dict[str, Any]], docs: int = 40, per_call: int = 1000,
                        where: str | None = None) -> dict[str, float]:
    """The least a durable write of these entries costs over this binding, in this process:
    the same transactions (one change per entry) spread over ``docs`` documents as a
    month's shards, each call's new changes read back (hash and bytes), and stored in LMDB,
    one synced transaction per ``per_call`` entries. No signature, id, check or index.
    ``best_ratio`` is the binding's write into one document (the ceiling) over this floor:
    the highest ratio a durable writer of one change per entry could reach (issue 17)."""
    import lmdb

    ids = entry_ids(items)
    at = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    _, ceiling = write_doc(items)
    with tempfile.TemporaryDirectory(dir=where) as tmp:  # ``where``: the disk measured
        env = lmdb.open(tmp, map_size=1 << 32)
        shards = [Document(actor_id=os.urandom(40)) for _ in range(docs)]
        t0 = time.perf_counter()
        for start in range(0, len(items), per_call):
            stored = []
            for k in range(docs):
                doc = shards[k]
                before = doc.get_heads()
                for j in range(start + k, min(start + per_call, len(items)), docs):
                    write_entry(doc, items[j], ids[j], at)
                stored += [(c.hash, c.raw_bytes) for c in doc.get_changes(before)]
            with env.begin(write=True) as txn:
                txn.cursor().putmulti(stored)
        floor = time.perf_counter() - t0
        env.close()
    return {"ceiling_s": ceiling, "floor_s": floor, "best_ratio": ceiling / floor}


def spread(values: list[float]) -> dict[str, float]:
    """Median, min, max and max/min of a series of figures."""
    lo, hi = min(values), max(values)
    return {"median": statistics.median(values), "min": lo, "max": hi,
            "spread": hi / lo if lo else float("inf"), "n": len(values)}


def fmt_spread(s: dict[str, float], fmt: str = "{:.2f}") -> str:
    return (f"{fmt.format(s['median'])} (min {fmt.format(s['min'])}, "
            f"max {fmt.format(s['max'])}, {s['n']} runs)")
