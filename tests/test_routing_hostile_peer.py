"""SPEC-006 §6.4 and §7.2 against a rogue member: a peer written by hand (tests/hostile.py).

As requester, node A must not let a peer hold a stream open with ``wait`` messages that never
turn into a chunk; as host, A must hold a peer's request body to the schema and bounds of its
own ``/v1/chat/completions`` and to its own cortex's capabilities before its model sees it.
Only the model provider is faked (tests/fake_llm_server.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator

import pytest

from tests.fake_llm_server import FakeLLM
from tests.nodes import make_mesh, wait_for
from tests.routing_helpers import (
    BIG_AD,
    Lone,
    chat,
    configure,
    endorse_member,
    is_msg,
    wait_for_cortices,
)

pytestmark = pytest.mark.slow

REQUEST_TIMEOUT = 3




@pytest.fixture(scope="module")
def lone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lone]:
    """Node A with a remote text-only cortex of its own, and an endorsed member key."""
    root = tmp_path_factory.mktemp("routing-rogue")
    fa = FakeLLM("fa").start()
    (a,) = make_mesh(root, ["a"])
    member, mesh_id, certs = endorse_member(a, "rogue")
    configure(a, routing={"cooldown_seconds": 1, "first_chunk_timeout": 2,
                          "request_timeout": REQUEST_TIMEOUT},
              cortex={"cloud-a": {"kind": "reasoning", "model": "openai/cloud-a",
                                  "api_base": fa.api_base, "remote": True}})
    try:
        a.start()
        # litellm loads in the background after start, possibly for longer than the 3 s
        # request_timeout set here: ask until it answers
        wait_for(lambda: chat(a, "cloud-a", "warm up").status == 200, timeout=120,
                 what="a's cortex to answer")
        yield Lone(a, a.device_id(), fa, member, mesh_id, certs)
    finally:
        a.stop()
        fa.stop()


async def test_a_peer_sending_only_wait_cannot_hold_a_stream(lone: Lone) -> None:
    """SPEC-006 §6.4, §6.2, §6.3: a member advertises big, accepts the stream and then sends
    `wait` every 0.5 s and never a chunk. A gives up on it after request_timeout (3 s), tells
    it to cancel, and falls back to its own remote cortex: the client gets an answer, and the
    peer is in cooldown."""
    a = lone.a
    async with lone.peer() as peer:
        await peer.send(BIG_AD)
        await asyncio.to_thread(wait_for_cortices, a, {"big"})
        started = time.monotonic()
        call = asyncio.create_task(asyncio.to_thread(chat, a, "big", "hi", stream=True,
                                                     timeout=30))
        req = await peer.next_frame(is_msg("req"))
        sid = next(m["s"] for m in req["m"] if m["k"] == "req")

        async def keep_waiting() -> None:
            while True:
                await peer.send({"t": "cx", "m": [{"k": "wait", "s": sid}]})
                await asyncio.sleep(0.5)

        waiting = asyncio.create_task(keep_waiting())
        try:
            answer = await call
            took = time.monotonic() - started
            await peer.next_frame(is_msg("cancel", sid))
        finally:
            waiting.cancel()
            with contextlib.suppress(BaseException):
                await waiting
    assert answer.status == 200, answer.body
    assert answer.host == lone.a_id and answer.text() == "[fa] you said: hi"
    assert REQUEST_TIMEOUT - 0.5 <= took < REQUEST_TIMEOUT + 5, took


CHAT = {"messages": [{"role": "user", "content": "from the peer"}]}
IMAGE = {"role": "user", "content": [
    {"type": "text", "text": "what is this"},
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}
REFUSED = [  # what A's own route refuses (400), sent by a peer straight to A as host
    {**CHAT, "n": 10_000},
    {**CHAT, "max_tokens": 0},
    {**CHAT, "max_tokens": "lots"},
    {**CHAT, "temperature": math.nan},
    {**CHAT, "tools": {"not": "a list"}},
    {**CHAT, "tools": [{"type": "function"}] * 129},
    {**CHAT, "stop": ["a", "b", "c", "d", "e"]},
    {**CHAT, "api_base": "http://169.254.169.254/"},  # not an OpenAI field
    {**CHAT, "model": "other"},  # the requester removes model, stream and metadata
    {"messages": []},
    {"messages": [{"role": "root", "content": "x"}]},
    {"messages": [{"role": "user", "content": "x", "extra": 1}]},
    {"messages": [{"role": "user", "content": "x" * 262_145}]},
]


async def test_a_host_holds_a_peers_request_to_its_own_route(lone: Lone) -> None:
    """SPEC-006 §7.8 (and §7.2, §4.2, §10.2) as host: a peer's `req` body that A's own
    /v1/chat/completions would refuse is answered `err malformed`, and image input to A's
    text-only cortex `err bad_request`; A's model is never called for them. A sound request
    from the same peer is answered."""
    fa = lone.fa
    before = fa.stats()["requests"]
    reqs = [{"k": "req", "s": 100 + i, "cortex": "cloud-a", "stream": i % 2 == 0, "body": body}
            for i, body in enumerate(REFUSED)]
    reqs.append({"k": "req", "s": 300, "cortex": "cloud-a", "stream": False,
                 "body": {"messages": [IMAGE]}})
    reqs.append({"k": "req", "s": 301, "cortex": "cloud-a", "stream": False,
                 "body": {**CHAT, "n": 1, "max_tokens": 50}})
    async with lone.peer() as peer:
        await peer.send({"t": "cx", "m": reqs})
        got: dict[int, dict] = {}
        want = {r["s"] for r in reqs}
        while want - set(got):
            frame = await peer.next_frame(lambda f: isinstance(f, dict) and f.get("t") == "cx")
            for m in frame["m"]:
                if m.get("k") in ("err", "end"):
                    got[m["s"]] = m
    for r in reqs[:len(REFUSED)]:
        m = got[r["s"]]
        assert (m["k"], m.get("code")) == ("err", "malformed"), (r["body"], m)
    assert (got[300]["k"], got[300].get("code")) == ("err", "bad_request"), got[300]
    assert "image" in got[300]["detail"]
    assert got[301]["k"] == "end", got[301]
    assert got[301]["r"]["choices"][0]["message"]["content"] == "[fa] you said: from the peer"
    assert fa.stats()["requests"] == before + 1  # only the sound request reached the model
