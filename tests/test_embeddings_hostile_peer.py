"""SPEC-006 §13.4, §13.6, §7.2 against a hostile member: a peer written by hand (tests/hostile.py)
advertises an embedding cortex and answers embeddings calls with packed vectors that are out of
shape. Node A must answer 502, cool the peer down, keep its memory searchable by text and never
write Memory; as host, A refuses embeddings requests out of bounds.
"""

from __future__ import annotations

import asyncio
import json
import struct
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from crdt.keys import DeviceKey
from tests.hostile import hostile_peer
from tests.nodes import NodeProc, make_mesh, wait_for
from tests.routing_helpers import configure, endorse_member, models, wait_for_cortices

EVIL_AD = {"t": "cx.ad", "v": 1, "cortices": [{
    "name": "evil", "kind": "embedding", "model": "m", "capabilities": ["text"],
    "context_window": 8192, "max_concurrency": 4, "remote": False, "healthy": True,
    "in_flight": 0, "dimensions": 2}]}


@dataclass
class Lone:
    a: NodeProc
    member: DeviceKey
    mesh_id: bytes
    certs: list[bytes]


@pytest.fixture(scope="module")
def lone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lone]:
    root = tmp_path_factory.mktemp("embeddings-hostile")
    (a,) = make_mesh(root, ["a"])
    member, mesh_id, certs = endorse_member(a, "odd-peer")
    configure(a, routing={"cooldown_seconds": 1, "first_chunk_timeout": 3})
    a.start()
    try:
        yield Lone(a, member, mesh_id, [*certs])
    finally:
        a.stop()


def is_req(frame: Any) -> bool:
    return isinstance(frame, dict) and frame.get("t") == "cx" and any(
        m.get("k") == "req" for m in frame["m"])


def embed(node: NodeProc, body: Any) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(node.base + "/v1/embeddings", data=json.dumps(body).encode(),
                                 method="POST")
    req.add_header("Authorization", f"Bearer {node.token}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def floats(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


GARBAGE = [
    {"n": 1, "dim": 2, "vectors": floats(0.5)},  # too short
    {"n": 1, "dim": 2, "vectors": floats(float("nan"), 1.0)},
    {"n": 1, "dim": 2, "vectors": floats(float("inf"), 1.0)},
    {"n": 2, "dim": 2, "vectors": floats(1.0, 2.0, 3.0, 4.0)},  # one vector too many
    {"n": 1, "dim": 3, "vectors": floats(1.0, 2.0, 3.0)},  # another length than advertised
    {"n": 1, "dim": 2, "vectors": [1.0, 2.0]},  # not the packed form
    {"n": True, "dim": 2, "vectors": floats(1.0, 2.0)},
    "vectors",
    None,
]


async def test_a_members_garbage_vectors_are_refused(lone: Lone) -> None:
    """SPEC-006 §13.4, §6.3: each packed answer out of shape fails the call (502
    `bad-upstream`, the peer cancelled and cooled down); a sound one is accepted."""
    a = lone.a
    async with hostile_peer(a.peer_port, lone.member, lone.mesh_id, lone.certs) as peer:
        await peer.send(EVIL_AD)
        await asyncio.to_thread(wait_for_cortices, a, {"evil"})
        for bad in GARBAGE:
            await asyncio.to_thread(
                wait_for, lambda: not models(a)["evil"]["maia"]["hosts"][0]["cooling_down"],
                10.0, 0.1, "the peer's cooldown to end")
            call = asyncio.create_task(asyncio.to_thread(
                embed, a, {"model": "evil", "input": "probe"}))
            req = await peer.next_frame(is_req)
            msg = next(m for m in req["m"] if m["k"] == "req")
            assert msg["op"] == "embed" and msg["body"] == {"input": ["probe"]}
            await peer.send({"t": "cx", "m": [{"k": "end", "s": msg["s"], "r": bad}]})
            status, answer = await call
            assert status == 502, (bad, answer)
            assert answer["type"] == "urn:maia-node:problem:bad-upstream"
            assert "garbage" in (await asyncio.to_thread(models, a))["evil"]["maia"][
                "hosts"][0]["cooling_down"]
        await asyncio.to_thread(
            wait_for, lambda: not models(a)["evil"]["maia"]["hosts"][0]["cooling_down"],
            10.0, 0.1, "the peer's cooldown to end")
        call = asyncio.create_task(asyncio.to_thread(
            embed, a, {"model": "evil", "input": "probe"}))
        req = await peer.next_frame(is_req)
        sid = next(m for m in req["m"] if m["k"] == "req")["s"]
        await peer.send({"t": "cx", "m": [{"k": "end", "s": sid, "r": {
            "n": 1, "dim": 2, "vectors": floats(0.6, 0.8), "tokens": 1}}]})
        status, answer = await call
        assert status == 200 and answer["model"] == "evil", answer
        assert answer["data"][0]["embedding"] == pytest.approx([0.6, 0.8], abs=1e-6)


async def test_a_host_refuses_embeddings_requests_out_of_bounds(lone: Lone) -> None:
    """SPEC-006 §7.2, §13.5 as host: a peer's `op: embed` request with too many inputs, an
    empty or overlong one, a non-string, a stream, for a chat cortex or an unknown op is
    answered `err malformed` (or `unknown_cortex`), never run."""
    a = lone.a
    async with hostile_peer(a.peer_port, lone.member, lone.mesh_id, lone.certs) as peer:
        bodies = [
            {"input": ["x"] * 257}, {"input": []}, {"input": [""]}, {"input": ["x" * 16_385]},
            {"input": [5]}, {"input": "x"}, {"messages": []},
        ]
        reqs = [{"k": "req", "s": 100 + i, "cortex": "wordllama", "stream": False,
                 "body": body, "op": "embed"} for i, body in enumerate(bodies)]
        reqs.append({"k": "req", "s": 200, "cortex": "wordllama", "stream": True,
                     "body": {"input": ["x"]}, "op": "embed"})
        reqs.append({"k": "req", "s": 201, "cortex": "wordllama", "stream": False,
                     "body": {"input": ["x"]}, "op": "mine bitcoin"})
        reqs.append({"k": "req", "s": 202, "cortex": "wordllama", "stream": False,
                     "body": {"input": ["x"]}, "op": "embed"})
        await peer.send({"t": "cx", "m": reqs})
        want = {r["s"] for r in reqs}
        got: dict[int, dict] = {}
        while want - set(got):
            frame = await peer.next_frame(lambda f: isinstance(f, dict) and f.get("t") == "cx")
            for m in frame["m"]:
                if m.get("k") == "err":
                    got[m["s"]] = m
        for sid in want - {202}:
            assert got[sid]["code"] == "malformed", got[sid]
        # the local default is never served to a peer (§13.1): every node has its own
        assert got[202]["code"] == "unknown_cortex"
    status, _ = embed(a, {"model": "wordllama", "input": "still fine"})
    assert status == 200


def _search_status(node: NodeProc) -> dict[str, Any]:
    return node.request("GET", "/v1/status")["search"]


async def test_search_with_a_hostile_members_model_stays_text_searchable(lone: Lone) -> None:
    """SPEC-006 §13.6: A has no embedding cortex, so it embeds with the member's; the member
    answers garbage to every batch: A's entries stay pending and found by text, Memory gets
    exactly the entries written, the node stays up."""
    a = lone.a
    # a live link (it answers liveness), whose model answers garbage
    async with hostile_peer(a.peer_port, lone.member, lone.mesh_id, lone.certs,
                            keepalive=True) as peer:
        await peer.send(EVIL_AD)
        await asyncio.to_thread(wait_for, lambda: _search_status(a)["model"] ==
                                "cortex:evil/m/2", 30.0, 0.1, "a to embed with evil")
        added = await asyncio.to_thread(a.add_memory, "a wren nests in the woodpile")
        req = await peer.next_frame(is_req)  # the embedding worker's batch
        sid = next(m for m in req["m"] if m["k"] == "req")["s"]
        await peer.send({"t": "cx", "m": [{"k": "end", "s": sid, "r": {
            "n": 1, "dim": 2, "vectors": floats(float("nan"), 0.0)}}]})
        await asyncio.to_thread(
            wait_for, lambda: "embedding with cortex:evil/m/2 failed" in a.log(), 30.0, 0.2,
            "the refused batch to be logged")
        found = await asyncio.to_thread(
            a.request, "GET", "/v1/memory/search?" + urllib.parse.urlencode(
                {"q": "wren woodpile", "mode": "hybrid"}))
        assert [e["id"] for e in found["entries"]] == [added["id"]]
        assert _search_status(a)["pending"] >= 1
        assert [e["id"] for e in a.entries() if "wren" in e["text"]] == [added["id"]]
    # the member left: A falls back to the local default and embeds the entry
    await asyncio.to_thread(wait_for, lambda: _search_status(a)["model"].startswith(
        "wordllama-") and _search_status(a)["pending"] == 0, 60.0, 0.2,
        "a to embed with the local default once the member is gone")
