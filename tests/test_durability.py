"""Crash safety and the layer rules: kill -9, deleting Runtime, format versions (SPEC-001)."""

from __future__ import annotations

import shutil
import threading
import time
import urllib.error

import lmdb
import pytest

from crdt.store import Store, StoreError
from tests.nodes import NodeProc, cli, wait_for


def _burst(node: NodeProc, stop: threading.Event, acked: list, kind: str) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        try:
            if kind == "profile":
                node.request("PATCH", "/v1/profile", {"display_name": f"name-{i}"}, timeout=2)
                acked.append(f"name-{i}")
            else:
                acked.append(node.add_memory(f"burst entry {i}")["id"])
        except (urllib.error.URLError, ConnectionError, OSError):
            return


@pytest.mark.parametrize("kind", ["profile", "memory"])
def test_kill9_during_write_burst_loses_no_acknowledged_write(mesh_factory, kind):
    """SPEC-001 §writes: every acknowledged write survives kill -9 and the store reopens."""
    (node,) = mesh_factory("solo")
    stop, acked = threading.Event(), []
    # One sequential writer for the profile (a register: acks are ordered), three for memory.
    n_writers = 1 if kind == "profile" else 3
    writers = [threading.Thread(target=_burst, args=(node, stop, acked, kind))
               for _ in range(n_writers)]
    for w in writers:
        w.start()
    wait_for(lambda: len(acked) >= 60, what="a burst of acknowledged writes")
    node.kill9()
    stop.set()
    for w in writers:
        w.join(5)
    assert acked
    node.start()
    if kind == "profile":
        name = node.request("GET", "/v1/profile")["display_name"]
        last = int(acked[-1].split("-")[1])
        # The last acknowledged write is there, or the one in flight when the node died.
        assert int(name.split("-")[1]) in (last, last + 1), (name, acked[-1])
    else:
        held = {e["id"] for e in node.entries()}
        missing = [a for a in acked if a not in held]
        assert not missing, f"{len(missing)} acknowledged entries lost"


def test_deleting_runtime_loses_nothing(mesh_factory):
    """SPEC-001 §runtime: wiping <data>/runtime loses no Identity or Memory; it is rebuilt."""
    (node,) = mesh_factory("solo")
    node.request("PATCH", "/v1/profile", {"display_name": "Ada", "timezone": "Europe/Paris"})
    ids = {node.add_memory(f"entry {i}", tags=["t"])["id"] for i in range(25)}
    node.stop()
    shutil.rmtree(node.data_dir / "runtime")
    node.start()
    assert node.request("GET", "/v1/profile") == {"display_name": "Ada",
                                                  "timezone": "Europe/Paris"}
    assert {e["id"] for e in node.entries()} == ids
    assert len(node.request("GET", "/v1/memory/search?q=entry&limit=100")["entries"]) == 25
    assert (node.data_dir / "runtime" / "api.token").exists()  # regenerated


def test_store_written_by_newer_version_is_refused(tmp_path):
    """SPEC-001 §formats: a store whose format is newer than the code refuses to open."""
    Store(tmp_path).close()
    env = lmdb.open(str(tmp_path / "memory"), max_dbs=10)
    with env.begin(write=True, db=env.open_db(b"meta")) as txn:
        txn.put(b"format_version", b"99")
    env.close()
    with pytest.raises(StoreError, match="newer maia-node"):
        Store(tmp_path)


def test_migration_hook_runs_once_in_order(tmp_path, monkeypatch):
    """SPEC-001 §formats: registered migrations run in order at open, then the format is bumped."""
    from crdt import store as store_mod

    Store(tmp_path).close()
    current = store_mod.format_version("runtime")
    ran = []

    def next_step(env, txn):
        ran.append(current + 1)
        txn.put(b"migrated", b"yes", db=env.open_db(b"kv", txn=txn))

    monkeypatch.setitem(
        store_mod.MIGRATIONS, "runtime", [*store_mod.MIGRATIONS["runtime"], next_step]
    )
    s = Store(tmp_path)
    assert s.layer_format("runtime") == current + 1 and ran == [current + 1]
    s.close()
    Store(tmp_path).close()
    assert ran == [current + 1]  # not again


def test_runtime_v1_index_is_migrated_and_rebuilt(mesh_factory):
    """SPEC-001 §formats: a format-1 Runtime store (old index layout) is migrated at start and
    the memory index rebuilt from the documents, losing nothing."""
    (node,) = mesh_factory("solo")
    ids = {node.add_memory(f"entry {i}")["id"] for i in range(5)}
    node.stop()
    env = lmdb.open(str(node.data_dir / "runtime"), max_dbs=10)
    with env.begin(write=True) as txn:
        meta, entries = env.open_db(b"meta", txn=txn), env.open_db(b"entries", txn=txn)
        txn.put(b"format_version", b"1", db=meta)
        txn.put(b"note-202611-OLDLAYOUT0", b"not a row of the new layout", db=entries)
    env.close()
    node.start()
    assert {e["id"] for e in node.entries()} == ids
    assert node.request("GET", "/v1/status")["layers"]["runtime"]["format_version"] == 2


def test_second_node_on_same_data_dir_is_refused(mesh_factory):
    """Two processes never write one store: the data-dir lock refuses the second."""
    (node,) = mesh_factory("solo")
    other = NodeProc(node.data_dir, "again")
    with pytest.raises(AssertionError, match="already running"):
        other.start(timeout=10)
    assert cli(node.data_dir, "memory", "add", "via the running node's API") == 0
    assert any(e["text"] == "via the running node's API" for e in node.entries())
    time.sleep(0)


def test_sigint_and_sigterm_stop_cleanly(mesh_factory):
    """SPEC-001 §writes: SIGINT/SIGTERM stop the node cleanly: exit 0, node.json removed."""
    import signal

    (node,) = mesh_factory("solo")
    node.add_memory("before stop")
    for sig in (signal.SIGINT, signal.SIGTERM):
        assert node.stop(sig) == 0, node.log()
        assert not (node.data_dir / "runtime" / "node.json").exists()
        assert "Node stopped." in node.log()
        node.start()
    assert [e["text"] for e in node.entries()] == ["before stop"]


def test_while_peers_changes_come_upkeep_compacts_one_document_a_pass(tmp_path):
    """Issue 14: a compaction is one step of the node's loop (a 1,250-entry shard: 25-40
    ms), and three in one upkeep pass made a live write from a peer wait behind them. The
    repository tells when a peer's change last applied (not a local one), and a pass can
    compact at most ``limit`` documents; the node's upkeep asks for one at a time and stops
    after the first while peers' changes came within COMPACT_QUIET."""
    import time

    from automerge.core import ROOT, ScalarType

    from node.memory import Memory
    from node.node import COMPACT_QUIET
    from tests.trust_helpers import Device, pump

    a = Device.found(tmp_path, "a")
    b = a.admit(tmp_path, "b")
    try:
        assert a.repo.peer_changed_at == float("-inf")
        Memory(a.repo).add_many([{"text": f"note {i}"} for i in range(40)])
        assert a.repo.peer_changed_at == float("-inf")  # local writes are not peers' changes
        Memory(b.repo).add_many([{"text": f"theirs {i}"} for i in range(40)])
        before = time.monotonic()
        pump(a, b)
        assert before <= a.repo.peer_changed_at <= time.monotonic()
        assert time.monotonic() - a.repo.peer_changed_at < COMPACT_QUIET
        a.repo.compact_after = 1
        for doc_id in a.repo.store.doc_ids("memory"):
            a.repo.open(doc_id)
            a.repo.change(doc_id, lambda tx: tx.put(ROOT, "touched", ScalarType.Int, 1))
        grown = [d for d in a.repo.loaded_ids() if a.store.doc_meta(d).pending >= 1]
        assert len(grown) >= 3
        assert len(a.repo.compact_loaded(limit=1)) == 1
        assert len(a.repo.compact_loaded(limit=2)) == 2
        assert len(a.repo.compact_loaded()) == len(grown) - 3
    finally:
        a.close()
        b.close()


def test_only_documents_in_memory_are_compacted(tmp_path):
    """Issue 18.8: upkeep folds the change log of documents already loaded, never loads one
    just to fold it (a long log costs several times the document's size at load), and the
    fold keeps every change: the document reloads with the same heads and content."""
    from automerge.core import ROOT, ScalarType, extract

    from crdt.documents import Repo
    from tests.trust_helpers import NOTE_DOC, Device

    device = Device.found(tmp_path, "laptop")
    repo = Repo(device.store, device.key, device.repo.mesh_id, compact_after=3)
    for i in range(5):
        repo.change(NOTE_DOC, lambda tx, i=i: tx.put(ROOT, f"k{i}", ScalarType.Int, i))
    heads = sorted(repo.heads(NOTE_DOC))
    repo.evict(NOTE_DOC)
    assert repo.compact_loaded() == []  # not in memory: left alone
    assert device.store.doc_meta(NOTE_DOC).pending == 5
    repo.open(NOTE_DOC)
    assert repo.compact_loaded() == [NOTE_DOC]
    assert device.store.doc_meta(NOTE_DOC).pending == 0
    repo.evict(NOTE_DOC)
    doc = repo.open(NOTE_DOC).doc
    assert sorted(doc.get_heads()) == heads
    assert {k: v for k, v in extract(doc, ROOT).items() if k.startswith("k")} == {
        f"k{i}": i for i in range(5)}
    device.close()


def test_a_compacted_copy_is_taken_before_a_memory_migration(tmp_path, monkeypatch):
    """SPEC-001 §5.7: before Identity or Memory is migrated, a compacted copy of the
    environment lands in pre-migration/<layer>-v<old>/; a migration that fails leaves the
    store as it was and the copy readable, and the next attempt migrates."""
    from automerge.core import ROOT, ScalarType

    from crdt import store as store_mod
    from tests.trust_helpers import NOTE_DOC, Device

    device = Device.found(tmp_path, "laptop")
    device.repo.change(NOTE_DOC, lambda tx: tx.put(ROOT, "kept", ScalarType.Str, "yes"))
    heads = device.repo.heads(NOTE_DOC)
    device.close()
    old = store_mod.format_version("memory")

    def broken(env, txn):
        raise RuntimeError("a bug in a migration")

    monkeypatch.setitem(store_mod.MIGRATIONS, "memory", [*store_mod.MIGRATIONS["memory"], broken])
    with pytest.raises(RuntimeError):
        Store(device.path)
    copy = device.path / "pre-migration" / f"memory-v{old}"
    assert (copy / "data.mdb").is_file()
    env = lmdb.open(str(copy), readonly=True, max_dbs=10, lock=False)
    with env.begin(db=env.open_db(b"docs", create=False)) as txn:
        assert txn.get(NOTE_DOC.encode()) is not None
    env.close()

    monkeypatch.setitem(store_mod.MIGRATIONS, "memory",
                        [*store_mod.MIGRATIONS["memory"][:-1], lambda env, txn: None])
    store = Store(device.path)
    assert store.layer_format("memory") == old + 1
    assert tuple(store.doc_meta(NOTE_DOC).heads) == tuple(heads)
    store.close()
    assert not (device.path / "pre-migration" / "identity-v1").exists()  # no migration there


def test_a_fresh_commit_that_holds_a_known_change_writes_nothing(tmp_path):
    """SPEC-001 001.9.6, issue 17: a local write skips looking up each new change's hash
    first (it was just made on a document loaded from this store, so none can be held).
    Should one be held all the same, the whole transaction is refused: nothing of it written,
    the log unchanged; a peer's delivery of the same changes (not fresh) stays idempotent."""
    from automerge.core import ROOT, ScalarType

    from crdt.batches import SignedBatch
    from crdt.chunks import parse_change
    from tests.trust_helpers import NOTE_DOC, Device

    device = Device.found(tmp_path, "laptop")
    try:
        for i in range(3):
            device.repo.change(NOTE_DOC, lambda tx, i=i: tx.put(ROOT, f"k{i}", ScalarType.Int, i))
        store = device.store
        meta = store.doc_meta(NOTE_DOC)
        held = device.repo.open(NOTE_DOC).doc.get_changes([])[-1]
        info = parse_change(bytes(held.raw_bytes))
        batch = SignedBatch.sign(device.key, device.repo.mesh_id, NOTE_DOC, [info.hash])
        heads = list(device.repo.heads(NOTE_DOC))
        with pytest.raises(StoreError):
            store.commit_many([(NOTE_DOC, [info], [batch], heads)], fresh=True)
        assert store.doc_meta(NOTE_DOC) == meta
        assert store.commit_many([(NOTE_DOC, [info], [batch], heads)])[NOTE_DOC] == meta
    finally:
        device.close()
