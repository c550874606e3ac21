"""The node settles its heap so full collections stay short (node/heap.py, issue 14).

A node hosting a cortex holds ~450,000 container objects once litellm is in, and each full
collection walked all of them: 220-285 ms with the event loop stopped, the worst samples of
live propagation during a consolidation run. Objects frozen at the settle points are skipped
by every later collection.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from node.heap import freeze_settled
from node.routing.backend import LiteLLMBackend
from node.routing.config import Cortex
from tests.fake_llm_server import FakeLLM


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    """Each test starts and ends with nothing frozen in this test process."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def _collected(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects())


def test_objects_alive_when_settled_are_skipped_by_collections() -> None:
    long_lived = [{"shard": i} for i in range(100)]
    assert _collected(long_lived)
    frozen = freeze_settled("test")
    assert frozen >= 100 and gc.get_freeze_count() == frozen
    assert not _collected(long_lived)
    young = [{"after": 1}]
    assert _collected(young)  # made since: still collected, its cycles still reclaimed


def test_litellm_s_first_answer_settles_the_heap() -> None:
    """The objects litellm builds on its first answer are frozen with it; nothing is frozen
    before (the import alone froze what existed then, which this test process thawed)."""
    with FakeLLM("heap") as fake:
        cortex = Cortex("chat", "chat", "openai/fake", api_base=fake.api_base, timeout=30)
        backend = LiteLLMBackend()
        body = {"messages": [{"role": "user", "content": "hello"}]}

        async def ask_twice() -> tuple[int, int]:
            await backend.ready()
            gc.unfreeze()  # what the import froze
            await backend.complete(cortex, body)
            first = gc.get_freeze_count()
            gc.unfreeze()
            await backend.complete(cortex, body)
            return first, gc.get_freeze_count()

        first, second = asyncio.run(ask_twice())
    assert first > 10_000  # litellm's models and everything else alive then
    assert second == 0  # once per backend: later answers do not freeze their garbage


def test_a_bulk_write_runs_without_collections_and_restores_the_collector(tmp_path) -> None:
    """Issue 17: ``Memory.add_many`` pauses cyclic collection for its one call (a tenth of
    its CPU went to young and full passes over the caller's objects); nested and threaded
    pauses resume it only when the last ends, and never turn on a collector that was off."""
    import threading

    from node.heap import gc_paused
    from node.memory import Memory
    from tests.trust_helpers import Device

    seen: list[bool] = []
    device = Device.found(tmp_path, "laptop")
    memory = Memory(device.repo)
    real = device.repo.change_many

    def watched(*a, **k):
        seen.append(gc.isenabled())
        return real(*a, **k)

    device.repo.change_many = watched  # type: ignore[method-assign]
    try:
        assert gc.isenabled()
        memory.add_many([{"text": f"note {i}"} for i in range(50)])
        assert seen == [False] and gc.isenabled()

        inside = threading.Event()
        release = threading.Event()

        def other() -> None:
            with gc_paused():
                inside.set()
                release.wait(5)

        t = threading.Thread(target=other)
        t.start()
        assert inside.wait(5)
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the thread's pause still runs
        release.set()
        t.join()
        assert gc.isenabled()

        gc.disable()
        try:
            with gc_paused():
                pass
            assert not gc.isenabled()  # it was off before: left off
        finally:
            gc.enable()
    finally:
        device.close()
