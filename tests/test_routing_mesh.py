"""Three real nodes route model requests (SPEC-006): a cortex on B answers requests made at A.

A hosts nothing. B hosts ``big`` (reasoning, small context window) and ``eyes`` (vision) on a
local model server; C hosts ``cloud``, a remote provider whose key lives only in the
environment. The model servers are the one faked part: OpenAI-compatible HTTP servers run as
their own processes (tests/fake_llm_server.py) and name themselves in every answer.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.fake_llm_server import FakeLLM
from tests.nodes import cli_out, make_mesh, wait_for
from tests.routing_helpers import Mesh, chat, configure, models, wait_for_cortices

pytestmark = pytest.mark.slow

KEY_ENV = "MAIA_TEST_PROVIDER_KEY"
KEY = "sk-maia-test-" + secrets.token_hex(20)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root: Path = tmp_path_factory.mktemp("routing")
    fb, fc = FakeLLM("fb", chunks=5).start(), FakeLLM("fc", chunks=5).start()
    a, b, c = make_mesh(root, ["a", "b", "c"])
    configure(b, cortex={
        "big": {"kind": "reasoning", "model": "openai/big", "api_base": fb.api_base,
                "context_window": 1024},
        "eyes": {"kind": "vision", "model": "openai/eyes", "api_base": fb.api_base,
                 "capabilities": ["text", "image"]},
    })
    configure(c, cortex={
        "cloud": {"kind": "reasoning", "model": "openai/cloud", "api_base": fc.api_base,
                  "api_key_env": KEY_ENV, "remote": True, "context_window": 4096},
    })
    for node in (a, b, c):
        node.env[KEY_ENV] = KEY  # in every node's environment; only C's cortex uses it
    try:
        for node in (a, b, c):
            node.start()
        b.add_peer(a)
        c.add_peer(a)
        c.add_peer(b)
        wait_for_cortices(a, {"big", "eyes", "cloud"})
        ids = {n.name: n.device_id() for n in (a, b, c)}
        yield Mesh(a, b, c, fb, fc, ids)
    finally:
        for node in (a, b, c):
            node.stop()
        fb.stop()
        fc.stop()


def problem(answer) -> dict:
    assert answer.headers["content-type"].startswith("application/problem+json")
    return answer.json()


def test_a_request_at_a_is_answered_by_b(mesh: Mesh) -> None:
    """SPEC-006 §4.1, §4.3, §6.1, §7.1, §8.1: the cortex lives only on B; A forwards over the
    peer channel, B's litellm calls its model server, and the header names B."""
    answer = chat(mesh.a, "big", "hello from a")
    assert answer.status == 200, answer.body
    assert answer.host == mesh.ids["b"]
    assert answer.headers["x-maia-cortex"] == "big"
    body = answer.json()
    assert body["object"] == "chat.completion" and body["model"] == "big"
    assert answer.text() == "[fb] you said: hello from a #1 #2 #3 #4 #5"
    # the same request at B itself runs locally
    local = chat(mesh.b, "big", "hello from b")
    assert local.host == mesh.ids["b"] and local.text().startswith("[fb] you said: hello from b")


def test_streaming_arrives_in_order_chunk_by_chunk(mesh: Mesh) -> None:
    """SPEC-006 §4.4, §8.1: SSE chunks in the backend's order, then [DONE]; each chunk is
    passed on as it comes: the backend stops after "[fb] " until the client has received it,
    so an answer buffered anywhere on the way (B's call, the peer channel, A's reply) never
    reaches the client and the call times out. (It compared arrival times, which a loaded
    machine bunches together.)"""
    seen_while_held = []

    def release(answer) -> None:
        if len(answer.events) == 2:  # the role chunk and "[fb] "
            seen_while_held.append(mesh.fb.stats()["held"])
            mesh.fb.control(release=True)

    mesh.fb.control(delay=0.05, hold_after=1)
    try:
        answer = chat(mesh.a, "big", "stream please", stream=True, on_event=release)
    finally:
        mesh.fb.control(delay=0, hold_after=0, release=True)
    assert answer.status == 200 and answer.host == mesh.ids["b"]
    assert answer.headers["content-type"].startswith("text/event-stream")
    events = answer.events
    assert events[-1][2] == "[DONE]" and all(e[1] == "message" for e in events)
    pieces = [json.loads(d)["choices"][0]["delta"].get("content") for _, _, d in events[:-1]]
    assert pieces == ["", "[fb] ", "you said: ", "stream please", " #1", " #2", " #3", " #4",
                      " #5", None]
    assert seen_while_held == [True], "the first text came after the backend went on"


class LeftEarly(Exception):
    pass


def test_a_client_leaving_mid_stream_cancels_the_call_on_the_host(mesh: Mesh) -> None:
    """SPEC-006 §7.2 (cancel), SPEC-003 §9.6: the client hangs up after two chunks of a slow
    stream; A cancels the call on B, which frees its slot long before the model would have
    finished (about 7 s; the 4 s bound leaves room for a loaded machine)."""

    def hang_up(answer) -> None:
        if len(answer.events) == 2:
            raise LeftEarly

    def b_in_flight() -> int:
        return models(mesh.b)["big"]["maia"]["hosts"][0]["in_flight"]

    mesh.fb.control(delay=1.0)
    try:
        with pytest.raises(LeftEarly):
            chat(mesh.a, "big", "never mind", stream=True, on_event=hang_up)
        assert b_in_flight() == 1
        left = time.monotonic()
        wait_for(lambda: b_in_flight() == 0, timeout=10, what="B to drop the call")
        assert time.monotonic() - left < 4.0
    finally:
        mesh.fb.control(delay=0)
    assert chat(mesh.a, "big", "after").status == 200


def test_models_at_a_lists_the_cortices_of_b_and_c(mesh: Mesh) -> None:
    """SPEC-006 §3.2, §4.7: /v1/models at A lists what B and C host, where, and the aliases;
    advertisements carry no api_base."""
    listed = models(mesh.a)
    assert {"big", "eyes", "cloud", "auto", "cortex/reasoning", "cortex/vision"} <= set(listed)
    assert [h["device_id"] for h in listed["big"]["maia"]["hosts"]] == [mesh.ids["b"]]
    assert [h["device_id"] for h in listed["cloud"]["maia"]["hosts"]] == [mesh.ids["c"]]
    assert listed["cloud"]["maia"]["remote"] is True
    assert listed["eyes"]["maia"]["capabilities"] == ["image", "text"]
    assert listed["big"]["maia"]["hosts"][0]["healthy"] is True
    text = json.dumps(listed)
    assert mesh.fb.api_base not in text and mesh.fc.api_base not in text and KEY_ENV not in text


def test_the_official_openai_client_works_unchanged(mesh: Mesh) -> None:
    """SPEC-006 §4.1: the openai package with base_url=<node>/v1 and the node token as its
    key lists models, completes and streams."""
    client = openai.OpenAI(base_url=f"{mesh.a.base}/v1", api_key=mesh.a.token, max_retries=0)
    assert {"big", "cloud"} <= {m.id for m in client.models.list()}
    raw = client.chat.completions.with_raw_response.create(
        model="big", messages=[{"role": "user", "content": "via openai"}])
    assert raw.headers["x-maia-cortex-host"] == mesh.ids["b"]
    completion = raw.parse()
    assert completion.choices[0].message.content.startswith("[fb] you said: via openai")
    stream = client.chat.completions.create(
        model="cloud", messages=[{"role": "user", "content": "via openai, streamed"}],
        stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "[fc] you said: via openai, streamed #1 #2 #3 #4 #5"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{mesh.a.base}/v1", api_key="wrong" * 8,
                      max_retries=0).models.list()


def test_auto_and_kind_requests_follow_the_frontal_lobe(mesh: Mesh) -> None:
    """SPEC-006 §4.3, §5.1, §6.1: an image goes to the vision cortex; a proof to reasoning,
    where B's local model comes before C's remote one; cortex/<kind> picks by kind."""
    image = [{"type": "text", "text": "what is this?"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
    answer = chat(mesh.a, "auto", raw=json.dumps(
        {"model": "auto", "messages": [{"role": "user", "content": image}]}).encode())
    assert answer.status == 200, answer.body
    assert answer.headers["x-maia-cortex"] == "eyes"
    assert answer.headers["x-maia-decision"] == "vision; image"
    proof = chat(mesh.a, "auto", "prove the theorem step by step")
    assert (proof.headers["x-maia-cortex"], proof.host) == ("big", mesh.ids["b"])
    assert proof.headers["x-maia-decision"] == "reasoning; keywords"
    by_kind = chat(mesh.a, "cortex/vision", "look")
    assert by_kind.headers["x-maia-cortex"] == "eyes"


def test_unknown_cortex_is_a_404_listing_what_exists(mesh: Mesh) -> None:
    """SPEC-006 §10.1: a model that names nothing reachable -> 404 problem with the list."""
    answer = chat(mesh.a, "no-such-cortex")
    assert answer.status == 404
    body = problem(answer)
    assert body["type"] == "urn:maia-node:problem:unknown-cortex"
    assert {"big", "eyes", "cloud", "auto"} <= set(body["available"])
    assert chat(mesh.a, "cortex/dreaming").status == 404


def test_malformed_bodies_are_400(mesh: Mesh) -> None:
    """SPEC-006 §10.2, §4.2 (SPEC-003 §8.3, §8.4): broken JSON, a missing field, a wrong type
    or an unknown field -> 400 problem, and no model server is called."""
    before = mesh.fb.stats()["requests"] + mesh.fc.stats()["requests"]
    bad = [
        b'{"model": "big", "messages": [',
        json.dumps({"model": "big"}).encode(),
        json.dumps({"model": "big", "messages": []}).encode(),
        json.dumps({"model": "big", "messages": [{"role": "user", "content": 5}]}).encode(),
        json.dumps({"model": "big", "messages": [{"role": "wizard", "content": "x"}]}).encode(),
        json.dumps({"model": "big", "messages": [{"role": "user", "content": "x"}],
                    "temperature": 9}).encode(),
        json.dumps({"model": "big", "messages": [{"role": "user", "content": "x"}],
                    "api_base": "http://evil.example/v1"}).encode(),
    ]
    for raw in bad:
        answer = chat(mesh.a, "", raw=raw)
        assert answer.status == 400, (raw, answer.status)
        assert problem(answer)["type"] in ("urn:maia-node:problem:malformed-json",
                                           "urn:maia-node:problem:validation")
    image = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]
    unsupported = chat(mesh.a, "", raw=json.dumps(
        {"model": "big", "messages": [{"role": "user", "content": image}]}).encode())
    assert unsupported.status == 400
    assert problem(unsupported)["type"] == "urn:maia-node:problem:unsupported-input"
    assert mesh.fb.stats()["requests"] + mesh.fc.stats()["requests"] == before


def test_a_prompt_over_the_context_window_is_413_before_any_provider_is_called(
    mesh: Mesh,
) -> None:
    """SPEC-006 §10.3: big takes 1,024 tokens and its remote fallback 4,096; a ~12k-token
    prompt is refused at A with 413, and neither model server sees a request."""
    before = (mesh.fb.stats()["requests"], mesh.fc.stats()["requests"])
    for stream in (False, True):
        answer = chat(mesh.a, "big", "token " * 8000, stream=stream)
        assert answer.status == 413
        body = problem(answer)
        assert body["type"] == "urn:maia-node:problem:context-window"
        assert body["estimated_tokens"] > 4096 and body["context_window"] == 1024
    assert (mesh.fb.stats()["requests"], mesh.fc.stats()["requests"]) == before
    # between the two windows: B is skipped, the remote fallback with the larger window answers
    medium = chat(mesh.a, "big", "token " * 1200)
    assert medium.status == 200 and medium.host == mesh.ids["c"]
    assert mesh.fb.stats()["requests"] == before[0]


def test_the_provider_key_never_leaves_the_environment(mesh: Mesh) -> None:
    """SPEC-006 §9.1, §2.2: C's remote cortex uses the key (the provider saw it), yet it is in
    no node log, no /v1/status, no /v1/models and no file of any data dir, synced documents
    included."""
    answer = chat(mesh.a, "cloud", "use the key")
    assert answer.status == 200 and answer.host == mesh.ids["c"]
    mesh.fc.control(mode="error")  # a failing provider: error texts must not carry it either
    try:
        assert chat(mesh.c, "cloud", "fail please").status == 503
    finally:
        mesh.fc.control(mode="ok")
    digest = hashlib.sha256(f"Bearer {KEY}".encode()).hexdigest()
    assert digest in mesh.fc.stats()["auth_seen"]
    time.sleep(0.5)  # let the logs flush
    for node in (mesh.a, mesh.b, mesh.c):
        assert KEY not in node.log(), f"the key is in {node.name}'s log"
        assert KEY not in json.dumps(node.request("GET", "/v1/status"))
        assert KEY not in json.dumps(node.request("GET", "/v1/models"))
        for path in Path(node.data_dir).rglob("*"):
            if path.is_file():
                assert KEY.encode() not in path.read_bytes(), f"the key is in {path}"


def test_status_shows_what_a_node_hosts(mesh: Mesh) -> None:
    """SPEC-006 §3.1, §3.2: /v1/status has the routing section: hosted cortices with health,
    and which peers host what (runtime state)."""
    status = mesh.b.request("GET", "/v1/status")["routing"]
    assert [c["name"] for c in status["hosted"]] == ["big", "eyes"]
    assert all(c["health"] == "ok" for c in status["hosted"])
    assert "api_base" not in json.dumps(status)
    a_status = mesh.a.request("GET", "/v1/status")["routing"]
    assert a_status["peers_hosting"][mesh.ids["b"]] == ["big", "eyes"]
    assert a_status["peers_hosting"][mesh.ids["c"]] == ["cloud"]


def test_cli_cortex_list_and_ask(mesh: Mesh) -> None:
    """SPEC-006 §11.1: maia cortex list shows what runs where; maia ask streams an answer."""
    listing = cli_out(mesh.a.data_dir, "cortex", "list")
    lines = {line.split()[0]: line for line in listing.splitlines()[1:]}
    assert {"big", "eyes", "cloud"} <= set(lines)
    assert mesh.ids["b"][:7] in lines["big"] and mesh.ids["c"][:7] in lines["cloud"]
    assert "(remote)" in lines["cloud"]
    out = cli_out(mesh.a.data_dir, "ask", "hello from the shell", "--cortex", "big")
    assert out.strip() == "[fb] you said: hello from the shell #1 #2 #3 #4 #5"
