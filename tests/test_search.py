"""Memory search over real parts: a real LMDB store and Repo, Memory, the SQLite index and the
local WordLlama model from its wheel (SPEC-001 §7.5, SPEC-003 §12). Only the embedders that
misbehave on purpose are stand-ins: they play a hostile or broken model."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt.identity import create_mesh
from crdt.keys import DeviceKey
from crdt.store import Store
from node.memory import Memory
from node.search.embedder import Embedder, WordLlamaEmbedder
from node.search.index import SearchError, SearchIndex, SemanticUnavailable
from node.search.query import parse

DATA = Path(__file__).parent / "data" / "search_retrieval.json"
_MODEL: WordLlamaEmbedder | None = None
FIXTURE = HealthCheck.function_scoped_fixture  # the world is reused across examples on purpose


def local_model() -> WordLlamaEmbedder:
    global _MODEL
    if _MODEL is None:
        _MODEL = WordLlamaEmbedder()
    return _MODEL


class World:
    """A device's store, Memory and search index in one data dir."""

    def __init__(self, root: Path, embedder: Embedder | None) -> None:
        self.root = root
        self.store = Store(root)
        self.repo = create_mesh(self.store, DeviceKey.generate(), "test mesh", "laptop")
        self.memory = Memory(self.repo)
        self.index = self.open_index(embedder)

    def open_index(self, embedder: Embedder | None) -> SearchIndex:
        index = SearchIndex(self.root / "runtime" / "search", self.repo, embedder, self.memory)
        index.load_vectors()
        return index

    def settle(self) -> None:
        """What the feature's background task does: index changed shards, embed everything."""
        self.index.flush()
        while self.index.embed_pending():
            pass

    def close(self) -> None:
        self.index.close()
        self.store.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path, local_model())
    yield w
    w.close()


def load_set(w: World) -> tuple[list[dict[str, Any]], dict[str, str]]:
    data = json.loads(DATA.read_text())
    rows = w.memory.add_many(
        [{"text": e["text"], "kind": e["kind"], "tags": e["tags"]} for e in data["entries"]])
    by_text = {e["text"]: e["key"] for e in data["entries"]}
    return data["queries"], {r["id"]: by_text[r["text"]] for r in rows}


def recall_at_5(w: World, queries: list[dict[str, Any]], keys: dict[str, str], mode: str) -> float:
    total = 0.0
    for q in queries:
        got = {keys[e["id"]] for e in w.index.search(q["q"], mode=mode, limit=5)["entries"]}
        total += len(got & set(q["relevant"])) / len(q["relevant"])
    return total / len(queries)


def test_hybrid_beats_text_on_the_labelled_set(world: World) -> None:
    """SPEC-003 §12.2: on the shipped labelled set, hybrid recall@5 beats text-only."""
    queries, keys = load_set(world)
    assert len(keys) >= 200 and len(queries) >= 60
    world.settle()
    text = recall_at_5(world, queries, keys, "text")
    semantic = recall_at_5(world, queries, keys, "semantic")
    hybrid = recall_at_5(world, queries, keys, "hybrid")
    print(f"\nrecall@5 on {len(queries)} queries over {len(keys)} entries: "
          f"text {text:.3f}, semantic {semantic:.3f}, hybrid {hybrid:.3f}")
    assert hybrid > text
    assert text > 0.3  # the keyword queries are found by text alone


def test_rebuild_after_deleting_the_index_answers_the_same(tmp_path: Path) -> None:
    """SPEC-001 §7.5: deleting runtime/search loses nothing; the rebuild ranks the same."""
    w = World(tmp_path, local_model())
    queries, _ = load_set(w)
    w.settle()
    before = [[e["id"] for e in w.index.search(q["q"], limit=10)["entries"]] for q in queries]
    w.index.save_vectors()
    w.index.close()
    heads = {d: w.repo.heads(d) for d in w.store.doc_ids("memory")}
    shutil.rmtree(tmp_path / "runtime" / "search")
    w.index = w.open_index(local_model())
    assert w.index.dirty_shards() == len(heads)  # every shard is indexed again
    w.settle()
    after = [[e["id"] for e in w.index.search(q["q"], limit=10)["entries"]] for q in queries]
    assert after == before
    assert {d: w.repo.heads(d) for d in heads} == heads  # Memory untouched
    w.close()


def test_vector_file_is_reused_and_rebuilt_when_stale(tmp_path: Path) -> None:
    """SPEC-001 §7.5: the vector file is a cache of the stored vectors."""
    w = World(tmp_path, local_model())
    w.memory.add_many([{"text": f"note number {i} about herons"} for i in range(30)])
    w.settle()
    assert w.index.save_vectors()
    w.index.close()
    w.index = w.open_index(local_model())
    assert len(w.index.vecindex) == 30  # loaded from the file
    w.memory.add("one more about egrets")
    w.settle()  # vectors change; the saved file is now older than them
    w.index.close()  # closed without saving: a crash, as far as the file is concerned
    (tmp_path / "runtime" / "search" / "vectors.npz").write_bytes(b"garbage")
    w.index = w.open_index(local_model())
    assert len(w.index.vecindex) == 31  # rebuilt from the stored vectors, nothing re-embedded
    assert w.index.counts()["pending"] == 0
    w.close()


def test_a_deleted_entry_never_appears(world: World) -> None:
    """SPEC-001 §7.5: a search never returns an entry whose deletion this node stored."""
    keep = world.memory.add("the heron colony nests by the lake", tags=["birds"])
    gone = world.memory.add("the heron colony moved to the river", tags=["birds"])
    world.settle()
    world.memory.delete(gone["id"])  # no settle: the search itself must see the deletion
    for mode in ("text", "semantic", "hybrid"):
        ids = [e["id"] for e in world.index.search("heron colony", mode=mode)["entries"]]
        assert gone["id"] not in ids and keep["id"] in ids, mode
    assert world.index.search("heron", mode="text", tag="birds")["count"] == 1


@settings(max_examples=40, deadline=None, suppress_health_check=[FIXTURE])
@given(st.lists(st.tuples(st.sampled_from(["add", "delete", "edit"]), st.integers(0, 5)),
                min_size=1, max_size=12))
def test_results_are_always_live_entries(world: World, ops: list[tuple[str, int]]) -> None:
    """Property: after any sequence of adds, edits and deletes, every result is a live entry
    with its current text (SPEC-001 §7.5)."""
    live: dict[str, str] = {e["id"]: e["text"] for e in world.memory.list(limit=1000)}
    for op, n in ops:
        ids = sorted(live)
        if op == "add" or not ids:
            e = world.memory.add(f"kingfisher sighting number {n}")
            live[e["id"]] = e["text"]
        elif op == "delete":
            world.memory.delete(ids[n % len(ids)])
            live.pop(ids[n % len(ids)])
        else:
            e = world.memory.update(ids[n % len(ids)], text=f"kingfisher edited {n}")
            live[e["id"]] = e["text"]
        if n % 2:
            world.index.embed_pending()  # sometimes vectors lag, sometimes they are current
        for mode in ("text", "hybrid"):
            for e in world.index.search("kingfisher", mode=mode, limit=100)["entries"]:
                assert live.get(e["id"]) == e["text"]


def test_phrase_prefix_and_filters(world: World) -> None:
    """SPEC-003 §12.1, §12.2: phrases, prefixes and every filter."""
    a = world.memory.add("Swap the winter tyres at the garage", kind="note", tags=["car"])
    b = world.memory.add("The garage door is stuck again", kind="fact", tags=["home"])
    world.settle()
    ids = lambda **kw: [e["id"] for e in world.index.search(mode="text", **kw)["entries"]]  # noqa: E731
    assert ids(query='"winter tyres"') == [a["id"]]
    assert ids(query='"tyres winter"') == []  # a phrase keeps its order
    assert ids(query="tyr*") == [a["id"]]
    assert set(ids(query="garage")) == {a["id"], b["id"]}
    assert ids(query="garage", kind="fact") == [b["id"]]
    assert ids(query="garage", tag="car") == [a["id"]]
    me = world.repo.key.device_id
    assert set(ids(query="garage", device=me)) == {a["id"], b["id"]}
    assert ids(query="garage", device="someone-else") == []
    assert ids(query="garage", since="2999-01-01") == []
    assert set(ids(query="garage", until="2999-01-01")) == {a["id"], b["id"]}
    got = world.index.search("garage", mode="hybrid", tag="home")["entries"]
    assert [e["id"] for e in got] == [b["id"]]
    assert got[0]["tags"] == ["home"] and got[0]["author"] == me
    assert got[0]["updated_at"] >= got[0]["created_at"]


@settings(max_examples=200, deadline=None, suppress_health_check=[FIXTURE])
@given(st.text(min_size=1, max_size=200) | st.lists(st.sampled_from(
    ['"', "NEAR(", "AND", "OR", "NOT", "*", "^", ":", "(", ")", "text:", "-", "+", "{", "}",
     "NEAR/2", "heron", "'", "\\", "\x00", "é"]), min_size=1, max_size=12).map(" ".join))
def test_fts_syntax_in_a_query_never_raises(world: World, query: str) -> None:
    """SPEC-003 §12.2: no query is malformed; operators and stray quotes are text."""
    if not world.index.counts()["entries"]:
        world.memory.add('a heron said "NEAR" and OR NOT (text:) ^*')
    for mode in ("text", "hybrid", "semantic"):
        try:
            world.index.search(query, mode=mode)
        except SearchError:
            assert mode == "text" and parse(query).empty  # only "no word to search for"


def test_parse_quotes_every_term() -> None:
    assert parse('say "hello world" NEAR(a b) xyz*').terms == (
        '"hello world"', '"say"', '"NEAR"', '"a"', '"b"', '"xyz"*')
    assert parse("x*").terms == ('"x"',)  # a prefix needs 3 characters (tests/test_search_cost.py)
    assert parse('"unbalanced quote').terms == ('"unbalanced"', '"quote"')
    assert parse("***  ::: ").empty


class BadEmbedder:
    """A model whose answers are wrong in a chosen way (a hostile or broken cortex)."""

    def __init__(self, how: str, dim: int = 256) -> None:
        self.how = how
        self.dim = dim
        self.model_id = f"bad-{how}"
        self.calls = 0

    def embed(self, texts: list[str]) -> Any:
        self.calls += 1
        n = len(texts)
        good = local_model().embed(texts)
        if self.how == "wrong-dim":
            return np.ones((n, self.dim + 3), dtype=np.float32)
        if self.how == "wrong-count":
            return good[: max(0, n - 1)]
        if self.how == "nan":
            good[::2, 5] = np.nan  # every other row poisoned
            return good
        if self.how == "inf":
            good[:, 0] = np.inf
            return good
        if self.how == "zeros":
            return np.zeros((n, self.dim))
        if self.how == "garbage":
            return "not a vector"
        if self.how == "raises":
            raise ConnectionError("embedding cortex unreachable")
        raise AssertionError(self.how)


@pytest.mark.parametrize("how", ["wrong-dim", "wrong-count", "nan", "inf", "zeros", "garbage"])
def test_bad_vectors_are_skipped_and_memory_untouched(tmp_path: Path, how: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """SPEC-001 §7.5: a vector of the wrong size or not finite is a logged skip, never a
    crash; Memory is untouched and the entries are still found by text."""
    w = World(tmp_path, BadEmbedder(how))
    added = w.memory.add_many([{"text": f"a note on pelicans {i}"} for i in range(6)])
    heads = {d: w.repo.heads(d) for d in w.store.doc_ids("memory")}
    with caplog.at_level(logging.WARNING, logger="node.search.embedder"):
        w.settle()
    assert "skipped" in caplog.text
    counts = w.index.counts()
    assert counts["pending"] == 0  # not retried forever
    if how == "nan":
        assert counts["vectors"] == 3 and counts["skipped"] == 3
    else:
        assert counts["vectors"] == 0 and counts["skipped"] == 6
    assert w.index.search("pelicans", mode="text")["count"] == 6
    assert w.index.search("pelicans", mode="hybrid")["count"] == 6
    w.index.search("pelicans", mode="semantic")  # answers (possibly fewer), never raises
    assert {d: w.repo.heads(d) for d in heads} == heads
    assert {e["id"] for e in w.memory.list()} == {e["id"] for e in added}
    w.close()


def test_an_embedder_that_fails_is_retried_later(tmp_path: Path) -> None:
    """A transient failure (an unreachable cortex) stores nothing; the entry stays pending."""
    w = World(tmp_path, BadEmbedder("raises"))
    w.memory.add("a note on storks")
    w.index.flush()
    with pytest.raises(ConnectionError):
        w.index.embed_pending()
    assert w.index.counts()["pending"] == 1
    assert w.index.search("storks", mode="hybrid")["count"] == 1
    w.close()


def test_model_change_reembeds_without_touching_memory(tmp_path: Path) -> None:
    """SPEC-001 §7.5, SPEC-006 §13.6: switching models embeds again in the background while
    search goes on (by text for entries without a vector of the new model); the old model's
    vectors are kept, so switching back embeds nothing; Memory is not written."""
    w = World(tmp_path, local_model())
    w.memory.add_many([{"text": f"cormorants dry their wings {i}"} for i in range(5)])
    w.settle()
    heads = {d: w.repo.heads(d) for d in w.store.doc_ids("memory")}
    local_id = w.index.model_id
    other = BadEmbedder("nan")  # another model id; half its vectors are usable
    assert w.index.switch(other)
    assert w.index.counts()["pending"] == 5 and w.index.model_id == "bad-nan"
    assert w.index.search("cormorants", mode="hybrid")["count"] == 5  # by text meanwhile
    assert w.index.embed_pending(batch=2) == 2  # a slice at a time
    assert w.index.search("cormorants", mode="hybrid")["count"] == 5
    w.settle()
    assert other.calls >= 1 and w.index.counts()["vectors"] == 2  # rows 0, 2, 4 poisoned
    assert w.index.switch(local_model()) and w.index.model_id == local_id
    assert w.index.counts() == {"entries": 5, "vectors": 5, "skipped": 0, "pending": 0}
    assert w.index.search("cormorants", mode="semantic")["count"] == 5
    # a reopened index keeps both models' vectors (Runtime survives a restart)
    w.index.close()
    w.index = w.open_index(other)
    assert w.index.counts()["pending"] == 0
    assert {d: w.repo.heads(d) for d in heads} == heads
    w.close()


def test_only_the_most_recent_models_vectors_are_kept(tmp_path: Path) -> None:
    """SPEC-001 §7.5: the current model and the three used before it keep their vectors."""
    w = World(tmp_path, local_model())
    w.memory.add("a note on grebes")
    w.settle()
    local_id = w.index.model_id
    for how in ("nan", "inf", "zeros", "wrong-count"):
        w.index.switch(BadEmbedder(how))
        w.settle()
    w.index.switch(local_model())
    assert w.index.model_id == local_id and w.index.counts()["pending"] == 1  # dropped
    w.close()


def test_an_edit_reembeds_the_entry(world: World) -> None:
    e = world.memory.add("remember the ferry timetable")
    world.settle()
    world.memory.update(e["id"], text="the cathedral choir sings at noon")
    world.index.flush()
    assert world.index.counts()["pending"] == 1
    world.settle()
    top = world.index.search("church singing", mode="semantic", limit=1)["entries"]
    assert top[0]["id"] == e["id"] and top[0]["text"].startswith("the cathedral")


def test_no_embedder_means_text_only(tmp_path: Path) -> None:
    """SPEC-003 §12.3: without a model, hybrid answers the text ranking, semantic refuses."""
    w = World(tmp_path, None)
    w.memory.add("ospreys fish in the estuary")
    assert w.index.search("ospreys", mode="hybrid")["count"] == 1
    with pytest.raises(SemanticUnavailable):
        w.index.search("ospreys", mode="semantic")
    w.close()


def test_a_corrupt_database_is_rebuilt(tmp_path: Path) -> None:
    """SPEC-001 §7.5: a database that fails to open is deleted and rebuilt from Memory."""
    w = World(tmp_path, local_model())
    w.memory.add("grebes dance on the water")
    w.settle()
    w.index.close()
    db = tmp_path / "runtime" / "search" / "index.sqlite3"
    for extra in ("-wal", "-shm"):
        Path(str(db) + extra).unlink(missing_ok=True)
    db.write_bytes(b"this is not a database" * 100)
    w.index = w.open_index(local_model())
    assert w.index.search("grebes", mode="text")["count"] == 1
    w.close()


def test_the_int8_matrix_ranks_like_the_exact_float16_scan(world: World) -> None:
    """The in-memory int8 candidates, re-ranked with the stored float16 vectors, rank exactly
    as a full float16 scan does (the filtered path reads every matching vector)."""
    queries, _ = load_set(world)
    world.settle()
    for q in queries:
        fast = world.index.search(q["q"], mode="semantic", limit=10)["entries"]
        full = world.index.search(q["q"], mode="semantic", limit=10, since="2000-01-01")
        assert [e["id"] for e in fast] == [e["id"] for e in full["entries"]], q["q"]


def test_a_members_malformed_entry_is_indexed_safely(world: World) -> None:
    """A mesh member (or a bug) writes an entry whose fields have the wrong types; the index
    coerces them and keeps answering (SPEC-001 §7.5: a synced document is untrusted input)."""
    from automerge.core import ROOT, ObjType, ScalarType

    from node.memory import new_entry_id, shard_of

    entry_id = new_entry_id("note")

    def hostile(tx) -> None:
        obj = tx.put_object(ROOT, entry_id, ObjType.Map)
        tx.put(obj, "text", ScalarType.Int, 42)  # not a string
        tx.put(obj, "kind", ScalarType.Str, "note")
        tags = tx.put_object(obj, "tags", ObjType.Map)
        tx.put(tags, "fine", ScalarType.Boolean, True)
        tx.put(tags, "no\x1fsep", ScalarType.Boolean, True)  # holds the tag separator
        tx.put(tags, "off", ScalarType.Str, "yes")  # not True
        log_list = tx.put_object(obj, "log", ObjType.List)
        tx.insert(log_list, 0, ScalarType.Str, "not a record")

    world.memory.add("a plain note about plovers", tags=["fine"])
    world.repo.change(shard_of(entry_id), hostile)
    world.settle()
    got = world.index.search("plovers", mode="hybrid", tag="fine", limit=10)["entries"]
    assert len(got) == 2 and entry_id in {e["id"] for e in got}
    row = [e for e in world.index.search("x", mode="semantic", tag="fine", limit=10)["entries"]
           if e["id"] == entry_id]
    assert row and row[0]["text"] == "" and row[0]["tags"] == ["fine"]


class PoisonedEmbedder:
    """The local model, except that it fails on any text holding a trigger word."""

    dim = 256
    model_id = "poisoned"

    def embed(self, texts: list[str]) -> Any:
        if any("ZALGO" in t for t in texts):
            raise ValueError("the model choked")
        return local_model().embed(texts)


def test_an_entry_the_model_fails_on_does_not_block_the_others(tmp_path: Path) -> None:
    """A member can write any text: one the model fails on is skipped alone, and every other
    entry of its batch (and after it) is embedded."""
    w = World(tmp_path, PoisonedEmbedder())
    w.memory.add_many([{"text": f"terns dive for fish {i}"} for i in range(10)]
                      + [{"text": "ZALGO text that breaks the model"}])
    w.settle()
    counts = w.index.counts()
    assert counts == {"entries": 11, "vectors": 10, "skipped": 1, "pending": 0}
    assert w.index.search("seabirds fishing", mode="semantic")["count"] == 10
    w.close()


def test_counts_follow_edits_and_deletes(world: World) -> None:
    a = world.memory.add("avocets sweep the mud")
    b = world.memory.add("avocets nest on islands")
    world.settle()
    assert world.index.counts() == {"entries": 2, "vectors": 2, "skipped": 0, "pending": 0}
    world.memory.update(a["id"], text="avocets sweep the shallow mud")
    world.memory.delete(b["id"])
    world.index.flush()
    assert world.index.counts() == {"entries": 1, "vectors": 0, "skipped": 0, "pending": 1}
    world.settle()
    assert world.index.counts() == {"entries": 1, "vectors": 1, "skipped": 0, "pending": 0}
