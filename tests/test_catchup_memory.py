"""A catch-up loads, applies and evicts shards in turn, and indexes each before it goes
(issue 17, SPEC-005 §7.7): the documents held in memory do not grow with the number of shards
caught up, and the caught-up entries are listable without loading any shard again.

Real stores, real repositories, the real sync protocol (tests/trust_helpers.py); verification
is unchanged: every change still passes a signed batch by a roster member (SPEC-005 §6.1).
"""

from __future__ import annotations

from pathlib import Path

from crdt.documents import MAX_REMOTE_LOADED
from node.memory import Memory
from tests.trust_helpers import Device, pump


def _items(n: int) -> list[dict]:
    kinds = ("note", "fact", "conversation", "journal", "skill")
    return [{"text": f"entry {i} walnut", "kind": kinds[i % 5], "tags": ["t"]} for i in range(n)]


def test_a_catch_up_holds_few_documents_and_leaves_every_entry_listable(
    tmp_path: Path,
) -> None:
    a = Device.found(tmp_path, "a")
    b = a.admit(tmp_path, "b")
    try:
        added = Memory(a.repo).add_many(_items(400))  # 5 kinds x 8 buckets: up to 40 shards
        shards = [d for d in a.store.doc_ids("memory")]
        assert len(shards) > 3 * MAX_REMOTE_LOADED
        memory_b = Memory(b.repo)
        most = 0

        def watch(doc_id: str, local: bool) -> None:
            nonlocal most
            most = max(most, len(b.repo.loaded_ids()))

        b.repo.subscribe(watch)
        pump(a, b)
        assert sorted(b.store.doc_ids("memory")) == sorted(shards)
        # the identity document, the shard being applied and the ones still in the exchange
        assert most <= MAX_REMOTE_LOADED + 2, most
        loads = []
        real_load = b.repo._load
        b.repo._load = lambda doc_id: loads.append(doc_id) or real_load(doc_id)
        listed = memory_b.list(query="walnut", limit=1000)
        assert sorted(e["id"] for e in listed) == sorted(e["id"] for e in added)
        assert loads == [], "evicted shards were indexed before they left memory"
    finally:
        a.close()
        b.close()
