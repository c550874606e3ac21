"""The search index kept up entry by entry equals one rebuilt from Memory (SPEC-001 §7.5).

A local write through Memory names the entries it wrote, and the index reads those alone
instead of every entry of the shard (issue 17: at 100,000 entries a shard holds ~2,500). This
is only right if nothing else changed the shard meanwhile; these properties drive real
devices (real LMDB stores, repositories and the sync protocol, tests/trust_helpers.py)
through random adds, edits, deletes, supersedes, restores, writes that bypass Memory, merges
from a second device and evictions, and compare the index with one rebuilt from scratch,
down to FTS5's own term list.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from automerge.core import ROOT, ObjType, ScalarType
from hypothesis import given, settings
from hypothesis import strategies as st

from node.memory import EntryNotFound, Memory, now_iso, shard_of
from node.search.index import SearchIndex
from tests.trust_helpers import Device, pump

WORDS = ["heron", "egret", "plover", "tern", "avocet", "stilt", "curlew", "dunlin"]
OPS = ("add", "add_many", "edit", "tag", "delete", "supersede", "restore", "raw", "remote",
       "both", "flush", "evict", "memflush")


def snapshot(index: SearchIndex) -> dict[str, Any]:
    """Everything the index answers from, keyed by entry id (row ids differ after a rebuild):
    the rows, the tag table, the shards' heads, the counters and FTS5's term instances."""
    db: sqlite3.Connection = index._db
    ids = dict(db.execute("SELECT rowid, entry_id FROM docs"))
    rows = sorted(db.execute(
        "SELECT entry_id, shard, kind, author, created_at, updated_at, edits, tags, text, "
        "session, agent FROM docs"))
    tags = sorted((t, ids[d]) for t, d in db.execute("SELECT tag, doc FROM doc_tags"))
    shards = sorted(db.execute("SELECT doc_id, heads FROM shards"))
    db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.vocab USING fts5vocab(main, fts, "
               "instance)")
    terms = sorted((t, ids.get(d, f"missing row {d}"), c, o)
                   for t, d, c, o in db.execute("SELECT term, doc, col, offset FROM temp.vocab"))
    db.execute("DROP TABLE temp.vocab")
    return {"rows": rows, "tags": tags, "shards": shards, "terms": terms,
            "entries": index.counts()["entries"]}


def rebuilt(device: Device, where: Path) -> dict[str, Any]:
    fresh = SearchIndex(where, device.repo, None)
    try:
        fresh.flush()
        return snapshot(fresh)
    finally:
        fresh.close()


def count_reads(index: SearchIndex) -> list[str]:
    """The ids the index reads through the binding from now on, one per read."""
    read: list[str] = []
    real = SearchIndex._read_entry

    def counting(doc, entry_id, *rest):
        read.append(entry_id)
        return real(doc, entry_id, *rest)

    index._read_entry = counting  # type: ignore[method-assign]
    return read


def raw_edit(memory: Memory, entry_id: str, text: str) -> None:
    """A write that bypasses Memory (as consolidation's pins do): a signed change with a log
    record, so only the shard's notice tells the index."""

    def edit(tx: Any) -> None:
        obj = tx.get(ROOT, entry_id)[1]
        tx.put(obj, "text", ScalarType.Str, text)
        log_list = tx.get(obj, "log")[1]
        rec = tx.insert_object(log_list, tx.length(log_list), ObjType.Map)
        tx.put(rec, "at", ScalarType.Str, now_iso())
        tx.put(rec, "op", ScalarType.Str, "raw")

    memory.repo.change(shard_of(entry_id), edit)


def step(op: str, n: int, mine: Memory, theirs: Memory, a: Device, b: Device) -> None:
    words = " ".join(WORDS[(n + i) % len(WORDS)] for i in range(1 + n % 4))
    live = sorted(e["id"] for e in mine.list(limit=10_000, include_superseded=True))
    target = live[n % len(live)] if live else None
    try:
        if op == "add" or target is None:
            mine.add(f"{words} seen {n}", tags=[WORDS[n % len(WORDS)]])
        elif op == "add_many":
            mine.add_many([{"text": f"{words} flock {i}", "kind": ("note", "fact")[i % 2],
                            "tags": WORDS[i % 3 : i % 3 + 2]} for i in range(n % 5 + 1)])
        elif op == "edit":
            mine.update(target, text=f"{words} edited {n}")
        elif op == "tag":
            mine.update(target, add_tags=[WORDS[n % len(WORDS)]], remove_tags=[WORDS[0]])
        elif op == "delete":
            mine.delete(target)
        elif op == "supersede":
            mine.supersede(target, f"{words} corrected {n}")
        elif op == "restore":
            superseded = [e["id"] for e in mine.list(limit=10_000, include_superseded=True)
                          if e.get("superseded_by")]
            if superseded:
                mine.unsupersede(superseded[n % len(superseded)])
        elif op == "raw":
            raw_edit(mine, target, f"{words} raw {n}")
        elif op in ("remote", "both"):
            # the other device edits an entry this one holds (or adds one); with "both", it
            # edits another entry of the target's shard, and this device then writes to the
            # target before any pass: the merge must not pass for part of the local write
            pump(a, b)
            other = target
            pairs = [(x, y) for x in live for y in live if x < y and shard_of(x) == shard_of(y)]
            if op == "both" and pairs:
                target, other = pairs[n % len(pairs)]
            try:
                theirs.update(other, text=f"{words} theirs {n}")
            except EntryNotFound:
                theirs.add(f"{words} from the other device {n}")
            pump(a, b)
            if op == "both":
                mine.update(target, text=f"{words} mine after theirs {n}")
    except (EntryNotFound, ValueError):
        pass  # superseded already, nothing to change: the write is refused, nothing happens


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 40)), min_size=1,
                max_size=30))
def test_incremental_index_equals_a_rebuild(ops: list[tuple[str, int]]) -> None:
    """SPEC-001 §7.5: after any mix of local writes (named or not), merges from a peer,
    passes and evictions, the index holds exactly what a rebuild from Memory holds."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        a = Device.found(root, "a")
        b = a.admit(root, "b")
        mine, theirs = Memory(a.repo), Memory(b.repo)
        index = SearchIndex(root / "search-a", a.repo, None, mine)
        try:
            for op, n in ops:
                if op == "flush":
                    index.flush()  # sometimes between writes, so named entries pile up
                elif op == "evict":
                    a.repo.evict_idle(0.0)  # the eviction hook indexes the shard
                elif op == "memflush":
                    mine.flush_index()  # Memory's pass hands its reads on (scan_listeners)
                else:
                    step(op, n, mine, theirs, a, b)
                    if n % 3 == 0:
                        index.flush()  # the feature's pass, between some writes
            index.flush()
            assert index.dirty_shards() == 0
            assert snapshot(index) == rebuilt(a, root / f"rebuilt-{len(ops)}")
        finally:
            index.close()
            a.close()
            b.close()


def test_a_named_write_reads_only_its_entries(tmp_path: Path) -> None:
    """A write through Memory to an indexed shard of many entries reads the entries it
    wrote, not the shard (the POST latency of issue 17); a merge is still read whole."""
    a = Device.found(tmp_path, "a")
    b = a.admit(tmp_path, "b")
    mine, theirs = Memory(a.repo), Memory(b.repo)
    index = SearchIndex(tmp_path / "search", a.repo, None, mine)
    try:
        first = mine.add_many([{"text": f"curlew {i}", "kind": "note"} for i in range(300)])
        index.flush()
        shard = shard_of(first[0]["id"])
        read = count_reads(index)
        same_shard = next(e["id"] for e in first if shard_of(e["id"]) == shard)
        mine.update(same_shard, text="curlew moved")
        index.flush()
        assert read == [same_shard]
        assert [e["id"] for e in index.search("moved", mode="text")["entries"]] == [same_shard]
        read.clear()
        theirs_row = None
        pump(a, b)
        for e in theirs.list(limit=1000):
            if shard_of(e["id"]) == shard:
                theirs_row = theirs.update(e["id"], text="curlew changed over there")
                break
        assert theirs_row is not None
        pump(a, b)
        index.flush()
        in_shard = sum(1 for e in first if shard_of(e["id"]) == shard)
        assert in_shard > 1 and len(read) == in_shard  # a merge names nothing: read whole
        assert [e["id"] for e in index.search("there", mode="text")["entries"]] == [
            theirs_row["id"]]
    finally:
        index.close()
        a.close()
        b.close()


def test_a_local_write_after_a_merge_still_reads_the_merge(tmp_path: Path) -> None:
    """A peer's change to one entry of a shard, then a local write to another entry of it
    before the index's pass: the local write names one entry, but the shard is read whole,
    so the peer's edit is indexed too (what a wrong shortcut would lose)."""
    a = Device.found(tmp_path, "a")
    b = a.admit(tmp_path, "b")
    mine, theirs = Memory(a.repo), Memory(b.repo)
    index = SearchIndex(tmp_path / "search", a.repo, None, mine)
    try:
        live = sorted(e["id"] for e in mine.add_many([{"text": f"stilt {i}"} for i in range(20)]))
        index.flush()
        ours, peers = next((x, y) for x in live for y in live
                           if x < y and shard_of(x) == shard_of(y))
        pump(a, b)
        theirs.update(peers, text="stilt walked over there")
        pump(a, b)
        mine.update(ours, text="stilt walked here")
        index.flush()
        assert {e["id"] for e in index.search("walked", mode="text")["entries"]} == {ours, peers}
        assert snapshot(index) == rebuilt(a, tmp_path / "rebuilt")
    finally:
        index.close()
        a.close()
        b.close()


def test_odd_entries_a_member_writes_index_as_a_rebuild_does(tmp_path: Path) -> None:
    """Found by a review of Memory's hand-off to the search index (SPEC-001 §7.5): a log
    record whose `at` is Automerge Text (read as a string by a rebuild, once dropped by the
    hand-off), and an entry put under another shard's id (its UNIQUE id made the whole shard
    fail to index, on every pass). After Memory's pass, the index equals a rebuild and the
    shard's honest entries are found."""
    a = Device.found(tmp_path, "a")
    mine = Memory(a.repo)
    index = SearchIndex(tmp_path / "search", a.repo, None, mine)
    try:
        honest = mine.add_many([{"text": f"avocet {i}", "kind": "note"} for i in range(40)])
        index.flush()
        target = honest[0]["id"]
        shard = shard_of(target)
        elsewhere = next(e["id"] for e in honest if shard_of(e["id"]) != shard)

        def odd(tx: Any) -> None:
            obj = tx.get(ROOT, target)[1]
            log_list = tx.get(obj, "log")[1]
            rec = tx.insert_object(log_list, tx.length(log_list), ObjType.Map)
            text = tx.put_object(rec, "at", ObjType.Text)
            for i, char in enumerate("9999-12-31T00:00:00Z"):  # the binding has no splice
                tx.insert(text, i, ScalarType.Str, char)
            tx.put(obj, "text", ScalarType.Str, "avocet with a text stamp")
            stray = tx.put_object(ROOT, elsewhere, ObjType.Map)  # another shard's id
            tx.put(stray, "text", ScalarType.Str, "stray avocet")
            tx.put(stray, "kind", ScalarType.Str, "note")

        a.repo.change(shard, odd)
        mine.flush_index()  # Memory's pass hands its reads on (scan_listeners)
        index.flush()
        assert index.dirty_shards() == 0
        assert snapshot(index) == rebuilt(a, tmp_path / "rebuilt")
        found = [e["id"] for e in index.search("avocet", mode="text", limit=100)["entries"]]
        assert sorted(found) == sorted(e["id"] for e in honest)
    finally:
        index.close()
        a.close()


def test_a_consolidation_group_is_read_by_its_entries(tmp_path: Path) -> None:
    """Issue 14 (SPEC-001 §7.5): a consolidation group's facts and their signed fields are
    named to the search index, which reads those entries alone, not their shards (a whole
    fact shard re-read on each group held the event loop 100-190 ms while live writes
    waited); the index still equals a rebuild."""
    from node.consolidation.answer import Proposal
    from node.consolidation.config import ConsolidationConfig
    from node.consolidation.job import Consolidator, Group, RunReport, Staged, fact_id_in_bucket

    a = Device.found(tmp_path, "a")
    mine = Memory(a.repo)
    index = SearchIndex(tmp_path / "search", a.repo, None, mine)
    try:
        notes = mine.add_many([{"text": f"dunlin note {i}", "kind": "note"} for i in range(40)])
        older = mine.add_many([{"id": fact_id_in_bucket(b % 2), "text": f"old fact {b} stilt",
                                "kind": "fact"} for b in range(120)])
        index.flush()
        job = Consolidator(mine, None, ConsolidationConfig(cortex="c"))
        group = Group(0.0)
        target = older[1]["id"]  # bucket 1: another shard than the new facts'
        group.facts = [Staged(fact_id_in_bucket(0), Proposal(
            f"new fact {i} avocet", (notes[i]["id"],), target if i == 0 else None, ()),
            "c", "m", None) for i in range(10)]
        group.seen = [n["id"] for n in notes[:10]]
        group.entries = 10
        read = count_reads(index)
        report = RunReport(False)
        job._write(group, report)
        index.flush()
        # the supersede mark waits for the owner's accept (SPEC-006 006.12.4.1): not written
        assert sorted(set(read)) == sorted(s.id for s in group.facts)
        assert snapshot(index) == rebuilt(a, tmp_path / "fresh")
        found = index.search("avocet", mode="text", limit=50)["entries"]
        assert sorted(h["id"] for h in found) == sorted(s.id for s in group.facts)
    finally:
        index.close()
        a.close()


def test_memory_s_slice_of_a_peer_s_shard_is_read_once(tmp_path: Path, monkeypatch) -> None:
    """SPEC-001 §7.5, SPEC-005 §7.7: when Memory indexes a slice of a shard peers keep
    changing (it hears of the change first), the search index takes Memory's reads and does
    not mark the shard to read again itself (before, it heard of the change after the scan
    and read the whole shard once more)."""
    from crdt.sync import PeerSync
    from node.consolidation.job import fact_id_in_bucket
    from node.memory import entries
    from tests.trust_helpers import _deliver

    monkeypatch.setattr(entries, "REMOTE_INDEX_BACKLOG", 30)
    a = Device.found(tmp_path, "a")
    b = a.admit(tmp_path, "b")
    mine, theirs = Memory(a.repo), Memory(b.repo)
    index = SearchIndex(tmp_path / "search", b.repo, None, theirs)  # after Memory, as in a node
    try:
        first = mine.add_many([{"id": fact_id_in_bucket(0), "text": "start", "kind": "fact"}])
        shard = shard_of(first[0]["id"])
        pump(a, b)
        theirs.flush_index()
        index.flush()
        sa, sb = PeerSync(a.repo, b.key.public_key), PeerSync(b.repo, a.key.public_key)
        sliced = False
        for i in range(80):
            mine.add_many([{"id": fact_id_in_bucket(0), "text": f"egret {i}", "kind": "fact"}])
            while _deliver(sa, sb, b, shard) + _deliver(sb, sa, a, shard):
                pass
            if shard not in theirs._dirty:  # Memory indexed a slice just now
                sliced = True
                break
        assert sliced
        assert shard not in index._dirty
        assert index._heads.get(shard) == sorted(b.repo.heads(shard))
        assert len(index.search("egret", mode="text", limit=200)["entries"]) == i + 1
    finally:
        index.close()
        a.close()
        b.close()


def test_an_id_shaped_key_of_no_memory_kind_does_not_hide_the_shard(tmp_path: Path) -> None:
    """A member signs, into a memory shard, a map under a key shaped like an entry id whose
    kind is no memory kind (``zzz-202612-...``). The index's shard check called
    ``shard_of`` on it, which refuses such an id: the whole shard failed to index, on every
    pass (after Memory's pass) or for good (a whole-shard read: its mark was dropped), and
    its honest entries were not found. The key is skipped, as any key that is no entry id."""
    a = Device.found(tmp_path, "a")
    mine = Memory(a.repo)
    index = SearchIndex(tmp_path / "search", a.repo, None, mine)
    try:
        honest = mine.add_many([{"text": f"godwit {i}", "kind": "note"} for i in range(40)])
        index.flush()
        shard = shard_of(honest[0]["id"])
        mates = sorted(e["id"] for e in honest if shard_of(e["id"]) == shard)

        def odd(tx: Any) -> None:
            stray = tx.put_object(ROOT, "zzz-202612-AAAAAAAAAA", ObjType.Map)
            tx.put(stray, "text", ScalarType.Str, "stray godwit")
            obj = tx.get(ROOT, mates[0])[1]
            tx.put(obj, "text", ScalarType.Str, "godwit edited beside the stray key")
            log_list = tx.get(obj, "log")[1]  # an edit is a log record (its count is read)
            rec = tx.insert_object(log_list, tx.length(log_list), ObjType.Map)
            tx.put(rec, "op", ScalarType.Str, "edit")

        a.repo.change(shard, odd)
        index.flush()  # the shard read whole by the index itself
        assert index.dirty_shards() == 0
        found = {e["id"]: e["text"] for e in
                 index.search("godwit", mode="text", limit=100)["entries"]}
        assert sorted(found) == sorted(e["id"] for e in honest)
        assert found[mates[0]] == "godwit edited beside the stray key"
        mine.flush_index()  # and after Memory's pass, which hands its reads on
        index.flush()
        assert index.dirty_shards() == 0
        assert snapshot(index) == rebuilt(a, tmp_path / "rebuilt")
    finally:
        index.close()
        a.close()
