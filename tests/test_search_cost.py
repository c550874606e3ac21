"""What one search may cost (SPEC-003 §12.2, §12.4), over real parts: a real store, Memory, the
SQLite index and the search route served by a real loopback aiohttp server.

Found by an attacker's read: ``a* b* c* ... 4* zzqqxx`` cost ~2.9 s of CPU on 100k entries,
and 64 of them at once starved the loop's default thread pool that routing and embeddings use.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from crdt.identity import create_mesh
from crdt.keys import DeviceKey
from crdt.store import Store
from node.api import build_app
from node.api.problem import TYPE_OVERLOADED, TYPE_TIMEOUT
from node.memory import Memory
from node.search.index import QueryTimeout, SearchIndex
from node.search.query import MAX_PREFIX_TERMS, MIN_PREFIX, parse
from node.search.routes import MAX_SEARCHES, SEARCH_KEY, search_routes
from tests.test_api_errors import DictServices

TOKEN = secrets.token_urlsafe(32)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def index(tmp_path: Path) -> Iterator[SearchIndex]:
    store = Store(tmp_path)
    repo = create_mesh(store, DeviceKey.generate(), "cost", "laptop")
    memory = Memory(repo)
    memory.add_many([{"text": f"garage note {n} about tyres and the winter {n % 7}",
                      "kind": "note", "tags": []} for n in range(3000)])
    idx = SearchIndex(tmp_path / "runtime" / "search", repo, None, memory)
    idx.flush()
    try:
        yield idx
    finally:
        idx.close()
        store.close()


@asynccontextmanager
async def serve(index: SearchIndex) -> AsyncIterator[TestClient]:
    app = build_app(DictServices(), token=TOKEN, extra_tables=[search_routes])
    app[SEARCH_KEY] = index
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        yield client


def test_prefix_terms_need_three_characters_and_at_most_four_count() -> None:
    """SPEC-003 §12.2: a star on a word shorter than 3 characters, or past the fourth prefix
    term, is dropped: the word is searched as a plain word."""
    attack = " ".join(f"{c}*" for c in "abcdefghijklmnopqrstuvwxyz01234") + " zzqqxx"
    terms = parse(attack).terms
    assert not [t for t in terms if t.endswith("*")], terms
    assert '"a"' in terms and '"zzqqxx"' in terms
    many = parse("alpha* beta* gamma* delta* epsilon* zeta* tyr* ab* tyr*").terms
    assert [t for t in many if t.endswith("*")] == [
        '"alpha"*', '"beta"*', '"gamma"*', '"delta"*']
    assert '"epsilon"' in many and '"ab"' in many and '"tyr"' in many
    assert parse("tyr*").terms == ('"tyr"*',)
    assert (MIN_PREFIX, MAX_PREFIX_TERMS) == (3, 4)


def test_a_search_past_its_time_is_cut_off(index: SearchIndex) -> None:
    """SPEC-003 §12.4: SQLite's progress handler ends a query at the search's deadline, and
    the connection serves the next search as before."""
    index.time_limit = 0.0
    with pytest.raises(QueryTimeout):
        index.search("garage tyres", mode="text", limit=100)
    index.time_limit = 5.0
    assert index.search("garage tyres", mode="text", limit=5)["count"] == 5


async def test_a_search_that_waits_too_long_answers_503(index: SearchIndex) -> None:
    """SPEC-003 §12.4: a search waits for a reader connection only until its deadline, then
    answers a 503 `timeout` problem; the next search is served."""
    index.time_limit = 0.3
    async with serve(index) as client:
        with contextlib.ExitStack() as held:  # both readers busy with other queries
            held.enter_context(index._reading())
            held.enter_context(index._reading())
            started = time.monotonic()
            async with client.get("/v1/memory/search?q=garage&mode=text",
                                  headers=AUTH) as resp:
                body = await resp.json(content_type=None)
            assert resp.status == 503, body
            assert body["type"] == TYPE_TIMEOUT and "busy" in body["detail"]
            assert time.monotonic() - started < 3
        async with client.get("/v1/memory/search?q=garage&mode=text", headers=AUTH) as resp:
            assert resp.status == 200 and (await resp.json())["count"] == 20


async def test_searches_use_their_own_threads_and_a_burst_is_refused(
        index: SearchIndex) -> None:
    """SPEC-003 §12.4: with the loop's default pool taken (routing, embeddings), a search is
    still answered; past MAX_SEARCHES queued or running, a search gets 503 `overloaded`."""
    loop = asyncio.get_running_loop()
    default = ThreadPoolExecutor(max_workers=1)
    loop.set_default_executor(default)
    release = threading.Event()
    blocker = loop.run_in_executor(None, release.wait, 30)
    try:
        async with serve(index) as client:
            async with asyncio.timeout(5):
                async with client.get("/v1/memory/search?q=garage&mode=text",
                                      headers=AUTH) as resp:
                    assert resp.status == 200
            index.time_limit = 1.0
            with contextlib.ExitStack() as held:
                held.enter_context(index._reading())
                held.enter_context(index._reading())

                async def one() -> Any:
                    async with client.get("/v1/memory/search?q=garage&mode=text",
                                          headers=AUTH) as r:
                        return r.status, await r.json(content_type=None)
                answers = await asyncio.gather(*(one() for _ in range(MAX_SEARCHES + 8)))
            refused = [b for s, b in answers if s == 503 and b["type"] == TYPE_OVERLOADED]
            assert len(refused) >= 8, [s for s, _ in answers]
            assert all(s == 503 for s, _ in answers)  # the others waited for a reader: timeout
    finally:
        release.set()
        await blocker
        default.shutdown()


def test_a_member_s_huge_entries_come_back_cut(tmp_path: Path) -> None:
    """SPEC-003 §12.3, SPEC-004 §15.3: a member's synced entries may hold any length (the
    write cap binds only this node's writes); 8 MiB entries made one search answer ~800 MiB.
    The index keeps at most the write cap of a text, a search result at most 2,000 characters
    (``text_truncated``), and MCP's memory_get at most the write cap."""
    from automerge.core import ROOT, ObjType, ScalarType

    from node.mcp.tools import result
    from node.memory import new_entry_id, shard_of
    from node.memory.ids import MAX_TEXT
    from node.search.index import RESULT_TEXT

    store = Store(tmp_path)
    repo = create_mesh(store, DeviceKey.generate(), "cost", "laptop")
    memory = Memory(repo)
    memory.add("a short note about plovers")
    big = ("plover " * 150_000)[:1_000_000]  # 1 MB, four times the write cap
    for _ in range(4):
        entry_id = new_entry_id("note")

        def member(tx, entry_id=entry_id) -> None:
            obj = tx.put_object(ROOT, entry_id, ObjType.Map)
            tx.put(obj, "text", ScalarType.Str, big)
            tx.put(obj, "kind", ScalarType.Str, "note")
        repo.change(shard_of(entry_id), member)
    index = SearchIndex(tmp_path / "runtime" / "search", repo, None, memory)
    try:
        index.flush()
        found = index.search("plover", mode="text", limit=100)["entries"]
        assert len(found) == 5
        assert all(len(e["text"]) <= RESULT_TEXT for e in found)
        assert sorted(e["text_truncated"] for e in found) == [False] + [True] * 4
        longest = index._db.execute("SELECT max(length(text)) FROM docs").fetchone()[0]
        assert longest == MAX_TEXT
    finally:
        index.close()
        store.close()
    got = result({"id": "x", "text": big})
    assert len(got["text"]) == 262_144 and got["text_truncated"] is True
    assert result({"id": "x", "text": "short"})["text_truncated"] is False
