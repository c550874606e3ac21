"""SPEC-006 §13: the embedding cortex kind, POST /v1/embeddings routed like chat, hostile
embedding models, and memory search following the chosen embedding cortex (SPEC-001 §7.5).

Units first (configuration, advertisements, the answer checks with hypothesis, real ``litellm``
against the fake model server in every hostile mode); then real node processes: A and B paired,
B hosting an embedding cortex served by the fake server (the only fake part).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from crdt import Rejected
from node.config import ConfigError
from node.routing.backend import BackendError, LiteLLMBackend
from node.routing.config import Cortex, load_routing_config
from node.routing.embedding_shapes import pack, unpack, vectors_from_openai
from node.routing.registry import parse_ad
from node.routing.shapes import Garbage
from tests.fake_llm_server import FakeLLM, fake_vector
from tests.mcp_helpers import call
from tests.nodes import NodeProc, cli_out, make_mesh, wait_for
from tests.routing_helpers import configure, models
from tests.sessions_helpers import api, register

PROBLEM = "application/problem+json"


# -- configuration and advertisements (006.2.1 to 006.2.3, 006.3.2) ---------------------------

def test_an_embedding_cortex_needs_its_dimensions() -> None:
    """SPEC-006 §2.1, §13.2: `kind = "embedding"` requires `dimensions` (1..4096), text only;
    `dimensions` on a chat cortex and a cortex named `wordllama` are refused."""
    ok = load_routing_config({"cortex": {"emb": {
        "kind": "embedding", "model": "openai/e", "dimensions": 768}}})
    assert ok.cortices[0].dimensions == 768 and ok.cortices[0].kind == "embedding"
    for table, needle in (
        ({"emb": {"kind": "embedding", "model": "openai/e"}}, "dimensions is required"),
        ({"emb": {"kind": "embedding", "model": "openai/e", "dimensions": 0}}, "dimensions"),
        ({"emb": {"kind": "embedding", "model": "openai/e", "dimensions": 5000}}, "dimensions"),
        ({"emb": {"kind": "embedding", "model": "openai/e", "dimensions": True}}, "dimensions"),
        ({"emb": {"kind": "embedding", "model": "openai/e", "dimensions": 8,
                  "capabilities": ["text", "image"]}}, "capabilities"),
        ({"c": {"kind": "chat", "model": "openai/c", "dimensions": 8}}, "only for kind"),
        ({"wordllama": {"kind": "embedding", "model": "openai/e", "dimensions": 8}},
         "wordllama"),
    ):
        with pytest.raises(ConfigError, match=needle):
            load_routing_config({"cortex": table})
    with pytest.raises(ConfigError, match="default_kind"):
        load_routing_config({"routing": {"default_kind": "embedding"}})


def _ad(**item: Any) -> dict[str, Any]:
    base = {"name": "emb", "kind": "embedding", "model": "openai/e", "capabilities": ["text"],
            "context_window": 8192, "max_concurrency": 4, "remote": False, "healthy": True,
            "in_flight": 0}
    return {"t": "cx.ad", "v": 1, "cortices": [base | item]}


def test_an_advertised_embedding_cortex_carries_valid_dimensions() -> None:
    """SPEC-006 §3.2, §3.3: `dimensions` travels in cx.ad; an embedding cortex without it (or
    out of range) makes the advertisement invalid."""
    assert parse_ad(_ad(dimensions=1536))[0].dimensions == 1536
    for bad in ({}, {"dimensions": 0}, {"dimensions": "8"}, {"dimensions": 10_000},
                {"dimensions": True}):
        with pytest.raises(Rejected):
            parse_ad(_ad(**bad))


# -- the answer checks (006.12.4) ------------------------------------------------------------

def _answer(vectors: list[list[Any]], **extra: Any) -> dict[str, Any]:
    return {"object": "list", "model": "m", "usage": {"prompt_tokens": 3},
            "data": [{"object": "embedding", "index": i, "embedding": v}
                     for i, v in enumerate(vectors)]} | extra


def test_a_valid_answer_is_accepted_in_index_order() -> None:
    answer = _answer([[1.0, 2.0], [3, 4.5]])
    answer["data"].reverse()  # items may come in any order; the index says where they go
    mat, tokens = vectors_from_openai(answer, 2, 2)
    assert mat.tolist() == [[1.0, 2.0], [3.0, 4.5]] and tokens == 3
    back, _ = unpack(pack(mat, tokens), 2, 2)
    assert back.tolist() == mat.tolist()


@pytest.mark.parametrize("answer", [
    _answer([[1.0, 2.0]]),  # too few
    _answer([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]]),  # too many
    _answer([[1.0], [1.0, 2.0]]),  # wrong size
    _answer([[math.nan, 1.0], [1.0, 2.0]]),  # NaN
    _answer([[math.inf, 1.0], [1.0, 2.0]]),  # infinity
    _answer([[1e39, 1.0], [1.0, 2.0]]),  # beyond float32
    _answer([["1.0", 1.0], [1.0, 2.0]]),  # a string
    _answer([[True, 1.0], [1.0, 2.0]]),  # a boolean
    _answer([[None, 1.0], [1.0, 2.0]]),  # null
    _answer([[[1.0], 1.0], [1.0, 2.0]]),  # nested
    {"data": [{"index": 0, "embedding": [1.0, 2.0]}, {"index": 0, "embedding": [1.0, 2.0]}]},
    {"data": [{"index": 5, "embedding": [1.0, 2.0]}, {"index": 0, "embedding": [1.0, 2.0]}]},
    {"data": "vectors"}, {"nothing": 1}, [], "garbage", None,
])
def test_an_answer_out_of_shape_is_refused(answer: Any) -> None:
    """SPEC-006 §13.4: anything but one finite vector of the right length per input."""
    with pytest.raises(Garbage):
        vectors_from_openai(answer, 2, 2)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["data", "index", "embedding", "usage", "object", "x"]), inner,
        max_size=4),
    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(answer=_JSON, n=st.integers(1, 3), dim=st.integers(1, 3))
def test_any_answer_is_either_valid_or_garbage(answer: Any, n: int, dim: int) -> None:
    """SPEC-006 §13.4, hypothesis: whatever a model answers, the check returns exactly an
    (n, dim) finite float32 matrix or raises Garbage, never anything else."""
    try:
        mat, tokens = vectors_from_openai(answer, n, dim)
    except Garbage:
        return
    assert mat.shape == (n, dim) and mat.dtype == np.float32 and np.isfinite(mat).all()
    assert isinstance(tokens, int)


@settings(max_examples=300, deadline=None)
@given(answer=st.dictionaries(st.sampled_from(["n", "dim", "vectors", "tokens"]),
                              st.none() | st.booleans() | st.integers(-2, 10)
                              | st.binary(max_size=64), max_size=4),
       n=st.integers(1, 3), dim=st.integers(1, 3))
def test_a_peers_packed_answer_is_either_valid_or_garbage(answer: Any, n: int,
                                                           dim: int) -> None:
    """SPEC-006 §13.4: the compact form from a peer is checked the same way on arrival."""
    try:
        mat, _ = unpack(answer, n, dim)
    except Garbage:
        return
    assert mat.shape == (n, dim) and np.isfinite(mat).all()


# -- real litellm against a hostile model server ----------------------------------------------

@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLLM]:
    with FakeLLM("fe", dim=8) as f:
        yield f


BAD_ANSWERS = ["wrong_dim", "nan", "inf", "strings", "too_many", "too_few", "dup_index", "huge"]


def _backend_embed(f: FakeLLM, mode: str, timeout: float = 5.0) -> Any:
    f.control(emb_mode=mode)
    cortex = Cortex("emb", "embedding", "openai/fake-emb", api_base=f.api_base,
                    timeout=timeout, dimensions=8)
    return asyncio.run(LiteLLMBackend().embed(cortex, ["one", "two"]))


def test_the_backend_checks_a_real_answer(fake: FakeLLM) -> None:
    """SPEC-006 §13.2: an embedding cortex is called with litellm.aembedding; the answer is
    checked and packed."""
    mat, _ = unpack(_backend_embed(fake, "ok"), 2, 8)
    assert mat.tolist() == np.asarray([fake_vector("one", 8), fake_vector("two", 8)],
                                      dtype=np.float32).tolist()


@pytest.mark.parametrize("mode", BAD_ANSWERS)
def test_a_hostile_answer_is_a_bad_answer_not_a_crash(fake: FakeLLM, mode: str) -> None:
    """SPEC-006 §13.4: the wrong size, NaN, infinity, strings, too many or too few vectors,
    indexes twice, a 24 MB answer: the call fails as `bad_answer` (a clean error)."""
    with pytest.raises(BackendError) as caught:
        _backend_embed(fake, mode)
    assert caught.value.code == "bad_answer", caught.value


def test_an_endless_answer_is_cut_at_max_answer_bytes(fake: FakeLLM) -> None:
    """SPEC-006 §6.6, §13.4: a hostile embedding server answers without end (chunked, no
    length, up to 512 MB). The node stops reading at the router's max_answer_bytes (here
    1 MB) and fails the call as `bad_answer`; the server sees the client hang up long
    before the end (litellm alone read every byte into memory first)."""
    refused = _refused_embedding(fake, "endless", timeout=60.0)
    assert refused.code == "bad_answer" and "max_answer_bytes" in refused.detail
    deadline = time.monotonic() + 60
    while not fake.stats()["emb_done"] and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = fake.stats()
    assert stats["emb_done"]
    assert stats["emb_sent"] < 64 * 1024 * 1024  # socket buffers, not the whole 512 MB


def test_a_compressed_answer_is_refused(fake: FakeLLM) -> None:
    """A gzip bomb (a small body announced as gzip, 50 MB once inflated) is refused before it
    is inflated: the node asked for an uncompressed answer, whose size it can count."""
    refused = _refused_embedding(fake, "gzip", timeout=30.0)
    assert refused.code == "bad_answer" and "compressed" in refused.detail


def _refused_embedding(fake: FakeLLM, mode: str, timeout: float) -> BackendError:
    """The error of one embedding call to the fake server in ``mode``, answers held to 1 MB."""
    fake.control(emb_mode=mode)
    cortex = Cortex("emb", "embedding", "openai/fake-emb", api_base=fake.api_base,
                    timeout=timeout, dimensions=8)
    with pytest.raises(BackendError) as caught:
        asyncio.run(LiteLLMBackend().embed(cortex, ["one"], max_bytes=1024 * 1024))
    return caught.value


@pytest.mark.parametrize("mode,code", [("error", "backend"), ("html", "backend"),
                                       ("hang", "timeout")])
def test_a_broken_model_server_is_a_clean_failure(fake: FakeLLM, mode: str, code: str) -> None:
    """SPEC-006 §13.4: an HTTP 500, a page that is not JSON, no answer within `timeout`."""
    with pytest.raises(BackendError) as caught:
        _backend_embed(fake, mode, timeout=1.0)
    assert caught.value.code in (code, "bad_answer"), caught.value


# -- real nodes -------------------------------------------------------------------------------

EMB_ID = "cortex:emb/openai/fake-emb/8"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory,
         fake: FakeLLM) -> Iterator[tuple[NodeProc, NodeProc, FakeLLM]]:
    root: Path = tmp_path_factory.mktemp("embeddings")
    a, b = make_mesh(root, ["a", "b"])
    configure(b, cortex={"emb": {"kind": "embedding", "model": "openai/fake-emb",
                                 "api_base": fake.api_base, "dimensions": 8, "timeout": 5}},
              routing={"cooldown_seconds": 1})
    # A cools B's cortex down when a hostile test makes it answer garbage: 1 s, not the
    # default 20 s, so the next test (any order) finds it answering again
    configure(a, routing={"cooldown_seconds": 1})
    fake.control(emb_mode="ok")
    try:
        a.start()
        b.start()
        b.add_peer(a)
        wait_for(lambda: "emb" in models(a), timeout=30, what="a to see b's embedding cortex")
        yield a, b, fake
    finally:
        a.stop()
        b.stop()


def embed(node: NodeProc, body: Any, *, token: str | None = None,
          raw: bytes | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(node.base + "/v1/embeddings", data=data, method="POST")
    req.add_header("Authorization", f"Bearer {token or node.token}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read()), {
                k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), {
            k.lower(): v for k, v in exc.headers.items()}


def test_the_local_default_answers_in_openais_shape(pair) -> None:
    """SPEC-006 §13.1, §13.5: every node answers `wordllama`: OpenAI's shape, one unit vector of
    256 numbers per input, the same vector for the same text."""
    a, _, _ = pair
    status, one, headers = embed(a, {"model": "wordllama", "input": "the heron waits"})
    assert status == 200, one
    assert one["object"] == "list" and one["model"] == "wordllama"
    assert set(one["usage"]) == {"prompt_tokens", "total_tokens"}
    assert headers["x-maia-cortex"] == "wordllama"
    assert headers["x-maia-cortex-host"] == a.device_id()
    (item,) = one["data"]
    assert item["object"] == "embedding" and item["index"] == 0
    assert len(item["embedding"]) == 256
    assert abs(sum(x * x for x in item["embedding"]) - 1.0) < 1e-3
    status, many, _ = embed(a, {"model": "wordllama", "input": ["x", "the heron waits", "y"],
                                "encoding_format": "float"})
    assert status == 200 and [d["index"] for d in many["data"]] == [0, 1, 2]
    assert many["data"][1]["embedding"] == item["embedding"]  # deterministic


@pytest.mark.parametrize("body,status", [
    ({"model": "wordllama", "input": []}, 400),
    ({"model": "wordllama", "input": ["a"] * 10_000}, 400),
    ({"model": "wordllama", "input": ["a"] * 257}, 400),
    ({"model": "wordllama", "input": "x" * 16_385}, 400),
    ({"model": "wordllama", "input": ""}, 400),
    ({"model": "wordllama", "input": 5}, 400),
    ({"model": "wordllama", "input": [1, 2]}, 400),
    ({"model": "wordllama", "input": [[1, 2]]}, 400),
    ({"model": "wordllama", "input": None}, 400),
    ({"model": "wordllama", "input": {"a": 1}}, 400),
    ({"model": 3, "input": "a"}, 400),
    ({"input": "a"}, 400),
    ({"model": "wordllama", "input": "a", "dimensions": 64}, 400),
    ({"model": "wordllama", "input": "a", "encoding_format": "base64"}, 400),
    ({"model": "nobody", "input": "a"}, 404),
    ({"model": "auto", "input": "a"}, 400),
    ({"model": "cortex/chat", "input": "a"}, 400),
])
def test_bad_input_is_a_problem(pair, body: Any, status: int) -> None:
    """SPEC-006 §13.5, SPEC-003 §8.4: bounds and types are 4xx problem+json, never 5xx."""
    a, _, _ = pair
    got, answer, headers = embed(a, body)
    assert got == status, answer
    assert headers["content-type"].startswith(PROBLEM) and answer["status"] == status


def test_a_huge_body_is_refused_before_it_is_read(pair) -> None:
    """SPEC-003 §7.1: a 1 MB string goes over the body bound: 413, not a model call."""
    a, _, _ = pair
    got, answer, headers = embed(a, None, raw=json.dumps(
        {"model": "wordllama", "input": "x" * 1_100_000}).encode())
    assert got == 413 and headers["content-type"].startswith(PROBLEM), answer


def test_a_chat_request_never_reaches_an_embedding_cortex(pair) -> None:
    """SPEC-006 §13.2: `wrong-kind` both ways."""
    a, _, _ = pair
    status, answer, _ = api(a, "POST", "/v1/chat/completions", {
        "model": "emb", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 400 and answer["type"] == "urn:maia-node:problem:wrong-kind", answer
    status, answer, _ = api(a, "POST", "/v1/chat/completions", {
        "model": "cortex/embedding", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 400 and answer["type"] == "urn:maia-node:problem:wrong-kind", answer


def test_a_session_needs_models_ask(pair, tmp_path: Path) -> None:
    """SPEC-003 §6.7: a session token without `models:ask` is refused (403 problem+json)."""
    a, _, _ = pair
    reader = register(a, tmp_path, scopes=["memory:read"])
    status, answer, headers = embed(a, {"model": "wordllama", "input": "hi"},
                                    token=reader["token"])
    assert status == 403 and headers["content-type"].startswith(PROBLEM)
    assert answer["type"] == "urn:maia-node:problem:insufficient-scope"
    assert answer["scope"] == "models:ask"
    asker = register(a, tmp_path, scopes=["models:ask"])
    status, _, _ = embed(a, {"model": "wordllama", "input": "hi"}, token=asker["token"])
    assert status == 200


def test_a_reaches_bs_embedding_cortex_through_the_peer(pair) -> None:
    """SPEC-006 §13.3, §7.2 (`op: embed`): A has no embedding cortex of its own; `emb` and
    `cortex/embedding` on A are answered by B's model over the peer channel, with exactly the
    vectors B's model gives."""
    a, b, fake = pair
    fake.control(emb_mode="ok")
    before = fake.stats()["embeddings"]
    expected = [fake_vector("alpha", 8), fake_vector("beta", 8)]
    for model in ("emb", "cortex/embedding"):
        # b's cortex may still be cooling down from a hostile test before: the search
        # features of both nodes embed in the background through it too, and one of their
        # requests sent while the fake was hostile can fail after it was set back to "ok"
        _, answer, headers = wait_for(
            lambda m=model: (got := embed(a, {"model": m, "input": ["alpha", "beta"]}))[0] == 200
            and got[1]["model"] == "emb" and got, timeout=30,
            what=f"{model} answered by b's cortex once out of a hostile test's cooldown")
        assert answer["model"] == "emb"
        assert headers["x-maia-cortex-host"] == b.device_id()
        got = [d["embedding"] for d in answer["data"]]
        assert np.allclose(got, np.asarray(expected, dtype=np.float32))
    assert fake.stats()["embeddings"] >= before + 2
    listed = models(a)
    assert listed["emb"]["maia"]["kind"] == "embedding"
    assert listed["emb"]["maia"]["dimensions"] == 8
    assert "cortex/embedding" in listed
    local = listed["wordllama"]["maia"]  # every node's own (SPEC-006 §13.1, §4.7)
    assert local["kind"] == "embedding" and local["dimensions"] == 256
    assert local["local_default"] is True and local["hosts"][0]["device_id"] == a.device_id()


def _search(node: NodeProc, q: str, **params: Any) -> dict[str, Any]:
    return node.request("GET", "/v1/memory/search?" + urllib.parse.urlencode(
        {"q": q, **params}))


def _search_status(node: NodeProc) -> dict[str, Any]:
    return node.request("GET", "/v1/status")["search"]


def _memory_heads(node: NodeProc) -> dict[str, Any]:
    docs = node.request("GET", "/v1/documents?limit=500")["documents"]
    return {d["id"]: d["heads"] for d in docs if d["id"].startswith("memory/")}


def test_search_follows_the_chosen_cortex_and_never_writes_memory(pair) -> None:
    """SPEC-006 §13.6, SPEC-001 §7.5: B embeds with its own cortex, A with B's (through the
    peer); switching B back to the local default re-embeds in the background while search goes
    on, and Memory's heads do not move."""
    a, b, fake = pair
    fake.control(emb_mode="ok")
    texts = [f"the ferry leaves pier {i} at dawn" for i in range(12)]
    b.request("POST", "/v1/memory/import", {"entries": [{"text": t} for t in texts]})
    for node in (b, a):
        wait_for(lambda n=node: _search_status(n)["model"] == EMB_ID, timeout=60,
                 what=f"{node.name} to embed with b's cortex")
        wait_for(lambda n=node: (s := _search_status(n))["entries"] >= 12
                 and s["pending"] == 0, timeout=60, what=f"{node.name} to embed every entry")
        found = _search(node, texts[3], mode="semantic", limit=1)
        assert found["model"] == EMB_ID
        assert found["entries"][0]["text"] == texts[3]  # its own vector: cosine 1
    heads = _memory_heads(b)
    assert heads

    # Switch B back to the local default: its own cortex is gone from its config.
    b.stop()
    configure(b, cortex={})
    b.start()
    b.add_peer(a)
    wait_for(lambda: _search_status(b)["model"].startswith("wordllama-"), timeout=60,
             what="b to embed with the local default again")
    answer = _search(b, "ferry pier dawn", mode="hybrid")  # answers while re-embedding
    assert answer["count"] >= 1
    wait_for(lambda: _search_status(b)["pending"] == 0, timeout=90, what="b to re-embed")
    found = _search(b, "ferry pier dawn", mode="semantic")
    assert found["model"].startswith("wordllama-") and found["count"] >= 1
    assert _memory_heads(b) == heads  # switching models never touches Memory
    # A loses B's cortex too (B no longer hosts it) and falls back to the local default.
    wait_for(lambda: _search_status(a)["model"].startswith("wordllama-"), timeout=60,
             what="a to fall back to the local default")
    # Restore B's cortex for the tests that follow.
    b.stop()
    configure(b, cortex={"emb": {"kind": "embedding", "model": "openai/fake-emb",
                                 "api_base": fake.api_base, "dimensions": 8, "timeout": 5}})
    b.start()
    b.add_peer(a)
    wait_for(lambda: "emb" in models(a), timeout=30, what="a to see emb again")
    wait_for(lambda: _search_status(b)["model"] == EMB_ID and _search_status(b)["pending"] == 0,
             timeout=60, what="b back on its cortex with its kept vectors")


@pytest.mark.parametrize("mode", ["wrong_dim", "nan", "too_few", "strings", "hang"])
def test_a_hostile_cortex_never_breaks_search_or_memory(pair, mode: str) -> None:
    """SPEC-006 §13.4, §13.6: while B's embedding model answers garbage (or nothing), entries
    stay pending and are found by text, Memory is untouched, /v1/embeddings answers 502 (503 or
    504 for a model that does not answer), and once the model is sound again they are embedded."""
    a, b, fake = pair
    wait_for(lambda: _search_status(b)["model"] == EMB_ID, timeout=60, what="b on its cortex")
    fake.control(emb_mode="ok")  # out of the 1 s cooldown a case before may have left
    wait_for(lambda: embed(b, {"model": "emb", "input": ["probe"]})[0] == 200, timeout=30,
             what="b's cortex answering again")
    fake.control(emb_mode=mode)
    word = f"kestrel{mode.replace('_', '')}"
    added = b.request("POST", "/v1/memory", {"text": f"a {word} hovers over the field"})
    heads = _memory_heads(b)
    status, answer, headers = embed(b, {"model": "emb", "input": ["probe"]})
    assert headers["content-type"].startswith(PROBLEM)
    assert status == (502 if mode != "hang" else 503) or status in (502, 503, 504), answer
    if mode != "hang":
        assert status == 502 and answer["type"] == "urn:maia-node:problem:bad-upstream"
    # cortex/embedding falls back to the local default (§13.3)
    status, answer, _ = embed(a, {"model": "cortex/embedding", "input": ["probe"]})
    assert status == 200 and answer["model"] == "wordllama", answer
    found = _search(b, word, mode="hybrid")
    assert [e["id"] for e in found["entries"]] == [added["id"]]
    assert _search_status(b)["pending"] >= 1
    assert _memory_heads(b) == heads
    fake.control(emb_mode="ok")
    wait_for(lambda: _search_status(b)["pending"] == 0, timeout=90,
             what="b to embed the entry once the model is sound")
    assert _memory_heads(b) == heads
    assert b.request("GET", "/health", auth=False) is not None


def test_search_results_carry_session_and_agent(pair, tmp_path: Path) -> None:
    """SPEC-003 §12.3: an entry an agent session wrote carries its `session` and `agent` in
    search results; one the owner wrote carries null."""
    a, _, _ = pair
    writer = register(a, tmp_path, agent="codex", scopes=["memory:read", "memory:write"])
    status, added, _ = api(a, "POST", "/v1/memory", {"text": "the osprey nest is on pylon 7"},
                           token=writer["token"])
    assert status == 201, added
    a.add_memory("the osprey left in october")
    found = _search(a, "osprey", mode="text")
    by_text = {e["text"]: e for e in found["entries"]}
    mine = by_text["the osprey nest is on pylon 7"]
    assert mine["session"] == writer["session_id"] and mine["agent"] == "codex"
    owner = by_text["the osprey left in october"]
    assert owner["session"] is None and owner["agent"] is None
    # maia memory search: the same fields in --json, and the agent in the human listing
    listed = json.loads(cli_out(a.data_dir, "memory", "search", "osprey", "pylon", "--json",
                                 "--mode", "text"))
    assert (listed[0]["session"], listed[0]["agent"]) == (writer["session_id"], "codex")
    human = cli_out(a.data_dir, "memory", "search", "osprey", "pylon", "--mode", "text")
    assert "by codex" in human and writer["session_id"][:12] in human


async def test_mcp_memory_search_carries_session_and_agent(pair, tmp_path: Path) -> None:
    """SPEC-003 §12.3 through MCP (SPEC-004 §15): `memory_search` results name the session and
    agent that wrote an entry."""
    a, _, _ = pair
    writer = register(a, tmp_path, agent="gemini", scopes=["memory:read", "memory:write"])
    status, added, _ = api(a, "POST", "/v1/memory", {"text": "the bittern booms at dusk"},
                           token=writer["token"])
    assert status == 201, added
    headers = {"Authorization": f"Bearer {writer['token']}"}
    async with (httpx2.AsyncClient(headers=headers) as hc,
                Client(streamable_http_client(a.base + "/v1/mcp", http_client=hc)) as client):
        failed, found = await call(client, "memory_search", query="bittern booms", mode="text")
    assert not failed, found
    top = found["results"][0]
    assert top["id"] == added["id"]
    assert (top["session"], top["agent"]) == (writer["session_id"], "gemini")
