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
import statistics
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
    fresh = Document()
    s_a, s_b = SyncState(), SyncState()
    c0 = time.process_time()
    t0 = time.perf_counter()
    for _ in range(10_000):
        quiet = True
        msg = doc.generate_sync_message(s_a)
        if msg is not None:
            fresh.receive_sync_message(s_b, Message.decode(msg.encode()))
            quiet = False
        msg = fresh.generate_sync_message(s_b)
        if msg is not None:
            doc.receive_sync_message(s_a, Message.decode(msg.encode()))
            quiet = False
        if quiet:
            break
    took, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert sorted(fresh.get_heads()) == sorted(doc.get_heads())
    return {"wall": n / took, "cpu": n / max(cpu, 1e-9)}


def spread(values: list[float]) -> dict[str, float]:
    """Median, min, max and max/min of a series of figures."""
    lo, hi = min(values), max(values)
    return {"median": statistics.median(values), "min": lo, "max": hi,
            "spread": hi / lo if lo else float("inf"), "n": len(values)}


def fmt_spread(s: dict[str, float], fmt: str = "{:.2f}") -> str:
    return (f"{fmt.format(s['median'])} (min {fmt.format(s['min'])}, "
            f"max {fmt.format(s['max'])}, {s['n']} runs)")
