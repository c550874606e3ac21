"""Cortex routing, piece by piece: config, frontal lobe, shapes, planning, cooldown, backend.

The backend tests call a real OpenAI-compatible server process (tests/fake_llm_server.py) through
real ``litellm``; everything else here is pure logic on real objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from node.config import ConfigError
from node.routing.backend import BackendError, LocalCortices, redact
from node.routing.config import Cortex, RoutingSettings, load_routing_config
from node.routing.errors import ContextTooLarge, UnknownCortex, UnsupportedInput
from node.routing.frontal_lobe import FrontalLobe
from node.routing.registry import Advertised, Host, Registry, parse_ad
from node.routing.router import Cooldowns, Router
from node.routing.shapes import (
    Garbage,
    clean_chunk,
    clean_response,
    estimate_prompt_tokens,
    needed_capabilities,
)
from tests.fake_llm_server import FakeLLM

SECRET = "sk-unit-" + hashlib.sha256(b"unit").hexdigest()[:24]


def user(text: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}]}


# -- configuration --------------------------------------------------------------------------------
def test_cortex_tables_parse_with_defaults() -> None:
    """SPEC-006 §2.1, §2.4: [cortex.<name>] tables become cortices; defaults fill the rest."""
    cfg = load_routing_config({
        "cortex": {
            "big": {"kind": "reasoning", "model": "ollama/llama3", "api_base": "http://h:11434"},
            "cloud": {"kind": "chat", "model": "anthropic/claude", "api_key_env": "ANTHROPIC_KEY",
                      "remote": True, "capabilities": ["text", "image"],
                      "context_window": 200000, "max_concurrency": 8},
        },
        "routing": {"default_kind": "reasoning", "cooldown_seconds": 5,
                    "keywords": {"creative": ["sonnet"]}},
    })
    big, cloud = cfg.cortices
    assert (big.name, big.kind, big.model, big.api_base) == (
        "big", "reasoning", "ollama/llama3", "http://h:11434")
    assert big.capabilities == {"text"} and big.max_concurrency == 4 and not big.remote
    assert big.context_window == 8192
    assert cloud.remote and cloud.api_key_env == "ANTHROPIC_KEY"
    assert cloud.capabilities == {"text", "image"} and cloud.context_window == 200000
    assert cfg.settings.default_kind == "reasoning" and cfg.settings.cooldown_seconds == 5
    assert cfg.settings.keywords["creative"] == ("sonnet",)
    assert "prove" in cfg.settings.keywords["reasoning"]  # kinds not named keep the built-ins


@pytest.mark.parametrize("field", ["api_key", "token", "secret", "password", "key"])
def test_an_inline_key_stops_the_node_without_echoing_it(field: str) -> None:
    """SPEC-006 §2.2, §9.1: a key written into config.toml is refused; the message names the
    table and field and never contains the value."""
    table = {"kind": "chat", "model": "openai/gpt-4o", field: SECRET}
    with pytest.raises(ConfigError) as err:
        load_routing_config({"cortex": {"cloud": table}})
    assert "cortex.cloud" in str(err.value) and field in str(err.value)
    assert "api_key_env" in str(err.value)
    assert SECRET not in str(err.value)


@pytest.mark.parametrize(
    ("table", "names"),
    [
        ({"kind": "poetry", "model": "m"}, "kind"),
        ({"kind": "chat"}, "model"),
        ({"kind": "chat", "model": "m", "api_key_env": "lower-case"}, "api_key_env"),
        ({"kind": "chat", "model": "m", "api_base": "ftp://x"}, "api_base"),
        ({"kind": "chat", "model": "m", "capabilities": ["smell"]}, "capabilities"),
        ({"kind": "chat", "model": "m", "max_concurrency": 0}, "max_concurrency"),
        ({"kind": "chat", "model": "m", "context_window": True}, "context_window"),
        ({"kind": "chat", "model": "m", "remote": "yes"}, "remote"),
        ({"kind": "chat", "model": "m", "colour": "blue"}, "colour"),
    ],
)
def test_a_wrong_cortex_value_is_refused_naming_the_key(table: dict, names: str) -> None:
    """SPEC-006 §2.3: a wrong type or value stops the node with a message naming the key."""
    with pytest.raises(ConfigError, match=names):
        load_routing_config({"cortex": {"c": table}})


def test_bad_names_and_routing_settings_are_refused() -> None:
    """SPEC-006 §2.1, §2.4: names are constrained ('auto' is reserved); [routing] is checked."""
    for name in ("auto", "Big", "has space", "x" * 64):
        with pytest.raises(ConfigError):
            load_routing_config({"cortex": {name: {"kind": "chat", "model": "m"}}})
    for routing in ({"default_kind": "x"}, {"cooldown_seconds": 0}, {"keywords": {"x": ["a"]}},
                    {"request_timeout": 601}, {"unknown": 1}):
        with pytest.raises(ConfigError):
            load_routing_config({"routing": routing})


def test_a_cortex_never_holds_its_key() -> None:
    """SPEC-006 §8.1, §9.1: the key is read from the environment at call time, and repr()
    shows names only."""
    cortex = Cortex("c", "chat", "openai/x", api_key_env="MAIA_UNIT_TEST_KEY")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MAIA_UNIT_TEST_KEY", SECRET)
        assert cortex.api_key() == SECRET and not cortex.key_missing()
        assert SECRET not in repr(cortex)
    assert cortex.key_missing()


# -- the frontal lobe -----------------------------------------------------------------------------
LOBE = FrontalLobe(RoutingSettings())


def test_rules_come_before_the_classifier() -> None:
    """SPEC-006 §5.1: hint, then image -> vision, audio -> audio, then keywords, then default."""
    image = user([{"type": "text", "text": "write a poem about this"},
                  {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}])
    assert (LOBE.decide(image).kind, LOBE.decide(image).rule) == ("vision", "image")
    audio = user([{"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}])
    assert LOBE.decide(audio).kind == "audio"
    assert LOBE.decide({**user("hi"), "modalities": ["text", "audio"]}).kind == "audio"
    hinted = {**image, "metadata": {"cortex_kind": "creative"}}
    assert (LOBE.decide(hinted).kind, LOBE.decide(hinted).rule) == ("creative", "hint")
    assert LOBE.decide(user("#salience is this the right order?")).kind == "salience"
    assert LOBE.decide(user("#nonsense prove it")).kind == "reasoning"  # unknown tag ignored
    assert (LOBE.decide(user("Please prove this theorem step by step")).rule) == "keywords"
    assert LOBE.decide(user("Please prove this theorem step by step")).kind == "reasoning"
    assert LOBE.decide(user("write me a short poem, a haiku")).kind == "creative"
    assert (LOBE.decide(user("hello there")).kind, LOBE.decide(user("hi")).rule) == (
        "chat", "default")


def test_the_classifier_is_configurable_and_ties_go_to_the_first_kind() -> None:
    """SPEC-006 §5.3, §2.4: [routing] keywords replace a kind's list; ties keep KINDS order;
    only whole words match, phrases match as substrings."""
    lobe = FrontalLobe(RoutingSettings(keywords={"creative": ("sonnet",),
                                                 "reasoning": ("proof",),
                                                 "salience": ("what matters",)},
                                       default_kind="chat"))
    assert lobe.decide(user("a sonnet")).kind == "creative"
    assert lobe.decide(user("a sonnet with a proof")).kind == "reasoning"  # tie: listed first
    assert lobe.decide(user("sonnets")).kind == "chat"  # whole words only
    assert lobe.decide(user("tell me what matters today")).kind == "salience"
    assert lobe.decide(user("write a poem")).kind == "chat"  # built-in list was replaced


def test_the_decision_reads_a_bounded_slice_of_the_prompt() -> None:
    """SPEC-006 §5.2, §5.3: a huge prompt costs no more than its first 4 KiB."""
    huge = user("hello " * 200_000 + " prove")
    started = time.perf_counter()
    decision = LOBE.decide(huge)
    assert decision.kind == "chat"  # "prove" lies beyond the 4 KiB the classifier reads
    assert time.perf_counter() - started < 0.05


# -- shapes ---------------------------------------------------------------------------------------
def test_chunks_are_rebuilt_from_known_fields() -> None:
    """SPEC-006 §4.6: a chunk keeps only OpenAI's fields; model becomes the cortex name."""
    raw = {"id": "c1", "object": "x", "created": 5, "model": "secret-upstream-name",
           "system_fingerprint": "fp", "provider_specific_fields": {"k": "v"},
           "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi",
                                               "provider_specific_fields": None},
                        "finish_reason": None, "logprobs": None}]}
    assert clean_chunk(raw, "big") == {
        "id": "c1", "object": "chat.completion.chunk", "created": 5, "model": "big",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"},
                     "finish_reason": None}],
    }
    answer = clean_response({"id": "r", "created": 1, "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok", "tool_calls": [
            {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
         "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 3, "cost": 1.5}}, "big")
    assert answer["model"] == "big" and answer["usage"] == {"prompt_tokens": 3}
    assert answer["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "f"


@pytest.mark.parametrize("raw", [
    "text", [1], {"choices": "no"}, {"choices": [1]}, {"choices": [{"delta": "x"}]},
    {"choices": [{"delta": {"content": 5}}]}, {"choices": [{"index": -1, "delta": {}}]},
    {"choices": [{"delta": {}}], "usage": {"total_tokens": "many"}},
    {"choices": [{"delta": {"tool_calls": "x"}}]},
])
def test_garbage_chunks_are_refused(raw: Any) -> None:
    """SPEC-006 §7.6: anything that is not a chat completion chunk is garbage."""
    with pytest.raises(Garbage):
        clean_chunk(raw, "big")


def test_prompt_estimate_and_needed_capabilities() -> None:
    """SPEC-006 §10.3: bytes / 4 plus 4 per message; image and audio parts are noticed."""
    body = {"messages": [{"role": "system", "content": "x" * 400},
                         {"role": "user", "content": [{"type": "text", "text": "é" * 100}]}]}
    assert estimate_prompt_tokens(body) == (400 + 200) // 4 + 8
    assert needed_capabilities(body) == {"text"}
    body["messages"][1]["content"].append({"type": "image_url", "image_url": {"url": "u"}})
    assert needed_capabilities(body) == {"text", "image"}


def test_redaction_hides_every_occurrence_and_clips() -> None:
    """SPEC-006 §9.1: error texts lose the key and stay short."""
    text = redact(f"bad key {SECRET} (was {SECRET})" + "x" * 1000, [SECRET, None, ""])
    assert SECRET not in text and text.count("***") == 2 and len(text) <= 300


def test_advertisements_are_validated() -> None:
    """SPEC-006 §3.3: a malformed advertisement is refused as a whole."""
    good = {"name": "big", "kind": "chat", "model": "m", "capabilities": ["text"],
            "context_window": 4096, "max_concurrency": 2, "remote": False, "healthy": True,
            "in_flight": 0}
    assert parse_ad({"t": "cx.ad", "v": 1, "cortices": [good]})[0].name == "big"
    from crdt.verify import Rejected

    for bad in ({**good, "name": "auto"}, {**good, "kind": "x"}, {**good, "in_flight": -1},
                {**good, "healthy": 1}, {**good, "capabilities": []}, "x"):
        with pytest.raises(Rejected):
            parse_ad({"t": "cx.ad", "v": 1, "cortices": [bad]})
    with pytest.raises(Rejected):
        parse_ad({"t": "cx.ad", "v": 2, "cortices": []})
    with pytest.raises(Rejected):
        parse_ad({"t": "cx.ad", "v": 1, "cortices": [good] * 65})


# -- planning and cooldown ------------------------------------------------------------------------
def ad(name: str, kind: str = "reasoning", *, remote: bool = False, window: int = 8192,
       in_flight: int = 0, caps: frozenset[str] = frozenset({"text"}),
       healthy: bool = True) -> Advertised:
    return Advertised(name, kind, "m", caps, window, 4, remote, healthy, in_flight)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_router(local: list[Cortex], peers: dict[bytes, tuple[float, list[Advertised]]],
                clock: Clock | None = None, **settings: Any) -> Router:
    conf = RoutingSettings(**settings)
    cortices = LocalCortices(local, conf)
    registry = Registry(b"me" * 16, "ME", "me", cortices)
    for key, (rtt, ads) in peers.items():
        registry.peers[key] = Host(key, key.decode()[:2].upper(), "", local=False,
                                   cortices={a.name: a for a in ads}, rtt_ms=rtt)
    manager = SimpleNamespace(connections=dict.fromkeys(peers, object()))
    return Router(registry, cortices, conf, peers=manager, clock=clock or time.monotonic)


def test_candidates_are_local_then_peers_by_latency_and_load_then_remote() -> None:
    """SPEC-006 §6.1: this node first; peers by rtt + 25 ms x load; remote cortices last."""
    router = make_router(
        [Cortex("big", "reasoning", "m")],
        {b"b" * 32: (2.0, [ad("big", in_flight=4)]),   # 2 + 25 = 27
         b"c" * 32: (9.0, [ad("big")]),                 # 9
         b"d" * 32: (1.0, [ad("big", remote=True)])},   # remote: last however fast
    )
    plan = router.plan({"model": "big", "messages": [{"role": "user", "content": "x"}]})
    assert [c.where for c in plan.candidates] == ["ME", "CC", "BB", "DD"]
    kind_plan = router.plan({"model": "cortex/reasoning",
                             "messages": [{"role": "user", "content": "x"}]})
    assert [c.where for c in kind_plan.candidates] == ["ME", "CC", "BB", "DD"]


def test_a_name_this_node_defines_is_answered_here_first() -> None:
    """SPEC-006 §6.5: this node's own remote cortex comes before a fast peer's namesake; a
    peer's namesake for another model is a conflict and never a candidate; one for the same
    model and kind follows."""
    peers = {b"b" * 32: (0.5, [ad("claude", "chat")]),  # same name, another kind: conflict
             b"c" * 32: (0.7, [Advertised("claude", "reasoning", "other", frozenset({"text"}),
                                          8192, 4, False, True, 0)]),  # another model: conflict
             b"d" * 32: (0.9, [ad("claude")])}  # the same cortex
    router = make_router([Cortex("claude", "reasoning", "m", remote=True)], peers)
    plan = router.plan({"model": "claude", "messages": [{"role": "user", "content": "x"}]})
    assert [c.where for c in plan.candidates] == ["ME", "DD"]
    assert {r["host"] for r in plan.reasons if r["reason"].startswith("name conflict")} == {
        "BB", "CC"}
    hosts = {h["device_id"]: h for h in router.models()[0]["maia"]["hosts"]}
    assert [hosts[d]["name_conflict"] for d in ("ME", "BB", "CC", "DD")] == [
        False, True, True, False]
    assert [c["device_id"] for c in router.models()[0]["maia"]["conflicts"]] == ["BB", "CC"]
    without = make_router([], peers).plan(
        {"model": "claude", "messages": [{"role": "user", "content": "x"}]})
    assert {c.where for c in without.candidates} == {"BB", "CC", "DD"}  # nothing defined here


def test_remote_fallback_for_a_name_comes_last_and_can_be_turned_off() -> None:
    """SPEC-006 §6.2: remote cortices of the same kind follow a name's own hosts."""
    peers = {b"b" * 32: (1.0, [ad("big")]), b"c" * 32: (1.0, [ad("cloud", remote=True)]),
             b"d" * 32: (1.0, [ad("other")])}
    body = {"model": "big", "messages": [{"role": "user", "content": "x"}]}
    plan = make_router([], peers).plan(body)
    assert [(c.where, c.cortex.name) for c in plan.candidates] == [("BB", "big"),
                                                                   ("CC", "cloud")]
    plan = make_router([], peers, remote_fallback=False).plan(body)
    assert [c.cortex.name for c in plan.candidates] == ["big"]


def test_unknown_unsupported_and_too_large_requests_fail_in_planning() -> None:
    """SPEC-006 §10.1 to §10.3: 404 with what exists, 400 for input a cortex cannot take,
    413 when no candidate's window holds the prompt; a smaller window is skipped otherwise."""
    router = make_router([], {b"b" * 32: (1.0, [ad("big", window=1024)]),
                              b"c" * 32: (1.0, [ad("wide", window=100_000)])})
    with pytest.raises(UnknownCortex) as err:
        router.plan({"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    assert {"big", "wide", "auto", "cortex/reasoning"} <= set(err.value.extra["available"])
    with pytest.raises(UnknownCortex):
        router.plan({"model": "cortex/dreaming", "messages": [{"role": "user", "content": "x"}]})
    image = [{"type": "image_url", "image_url": {"url": "u"}}]
    with pytest.raises(UnsupportedInput):
        router.plan({"model": "big", "messages": [{"role": "user", "content": image}]})
    long = "word " * 2000  # ~2,500 tokens
    with pytest.raises(ContextTooLarge) as too_large:
        router.plan({"model": "big", "messages": [{"role": "user", "content": long}]})
    assert too_large.value.extra["context_window"] == 1024
    plan = router.plan({"model": "cortex/reasoning",
                        "messages": [{"role": "user", "content": long}]})
    assert [c.cortex.name for c in plan.candidates] == ["wide"]
    assert any("context window" in r["reason"] for r in plan.reasons)


def test_auto_falls_back_to_the_default_kind_then_anything() -> None:
    """SPEC-006 §5.4: no cortex of the chosen kind -> default kind -> any capable cortex."""
    router = make_router([], {b"b" * 32: (1.0, [ad("talk", kind="chat")])})
    plan = router.plan(user("prove that 2 + 2 = 4 step by step"))
    assert plan.decision is not None and plan.decision.kind == "reasoning"
    assert [c.cortex.name for c in plan.candidates] == ["talk"]
    assert "default kind" in (plan.decision_header or "")


def test_cooldown_leaves_a_peer_out_then_lets_it_back() -> None:
    """SPEC-006 §6.3: a peer fault cools the whole peer; a backend fault only its cortex."""
    clock = Clock()
    cooldowns = Cooldowns(30, clock)
    cooldowns.fail(b"b", None, "garbage")
    cooldowns.fail(b"c", "big", "backend: 500")
    assert "garbage" in (cooldowns.blocked(b"b", "anything") or "")
    assert cooldowns.blocked(b"c", "big") is not None
    assert cooldowns.blocked(b"c", "small") is None
    clock.now += 31
    assert cooldowns.blocked(b"b", "anything") is None
    assert cooldowns.blocked(b"c", "big") is None

    router = make_router([], {b"b" * 32: (1.0, [ad("big")]), b"c" * 32: (5.0, [ad("big")])},
                         clock=clock)
    router.cooldowns.fail(b"b" * 32, None, "peer_lost")
    plan = router.plan({"model": "big", "messages": [{"role": "user", "content": "x"}]})
    assert [c.where for c in plan.candidates] == ["CC"]
    assert any("cooling down" in r["reason"] for r in plan.reasons)


def test_a_peer_that_reconnects_leaves_its_cooldowns_at_once() -> None:
    """SPEC-006 §6.3: the reason for a peer's cooldown (a drop, a timeout) ends with a new
    connection; its cooldowns are cleared, other peers' are kept."""
    clock = Clock()
    router = make_router([], {b"b" * 32: (1.0, [ad("big")]), b"c" * 32: (5.0, [ad("big")])},
                         clock=clock)
    router.cooldowns.fail(b"b" * 32, None, "peer_lost")
    router.cooldowns.fail(b"b" * 32, "big", "backend: 500")
    router.cooldowns.fail(b"c" * 32, "big", "backend: 500")
    router.peer_back(b"b" * 32)
    assert router.cooldowns.blocked(b"b" * 32, "big") is None
    assert router.cooldowns.blocked(b"c" * 32, "big") is not None
    plan = router.plan({"model": "big", "messages": [{"role": "user", "content": "x"}]})
    assert [c.where for c in plan.candidates] == ["BB"]


@pytest.mark.parametrize(("cooldown", "retry_after"), [(4.0, 4), (30.0, None)])
def test_no_route_says_when_a_retry_can_help(cooldown: float, retry_after: int | None) -> None:
    """SPEC-006 §10.4: the only host cools down for a few seconds: Retry-After is the seconds
    left; for longer, the client is told not to retry (retry false, no Retry-After)."""
    clock = Clock()
    router = make_router([], {b"b" * 32: (1.0, [ad("big")])}, clock=clock,
                         cooldown_seconds=cooldown)
    router.cooldowns.fail(b"b" * 32, None, "peer_lost")
    plan = router.plan({"model": "big", "messages": [{"role": "user", "content": "x"}]})
    assert plan.candidates == []
    err = router._no_route(plan, [])
    assert err.retry_after == retry_after and err.extra["retry"] is (retry_after is not None)
    assert ("retry in" in err.detail) is (retry_after is not None)


def test_an_offline_peer_s_cortices_are_kept_and_shown_not_chosen() -> None:
    """SPEC-006 §3.3, §4.7: when B's connection closes its cortex is no candidate, but
    /v1/models still lists it, unavailable, with B offline since then; B's next
    advertisement makes it a candidate again."""
    router = make_router([], {b"b" * 32: (1.0, [ad("big")])})
    key = b"b" * 32
    conn = SimpleNamespace(peer_key=key, peer_device_id="BB")
    router.registry._manager = SimpleNamespace(connections={})
    router.registry._disconnected(conn)
    router.peers.connections.pop(key)
    (entry,) = [m for m in router.models() if m["id"] == "big"]
    assert entry["maia"]["available"] is False
    (host,) = entry["maia"]["hosts"]
    assert host["online"] is False and host["last_seen"].endswith("Z")
    plan = router.plan({"model": "big", "messages": [{"role": "user", "content": "x"}]})
    assert plan.candidates == []
    assert "offline" in plan.reasons[0]["reason"] and "last seen" in plan.reasons[0]["reason"]
    router.peers.connections[key] = object()
    asyncio.run(router.registry._on_ad(SimpleNamespace(peer_key=key, peer_device_id="BB"), {
        "t": "cx.ad", "v": 1, "cortices": [{
            "name": "big", "kind": "reasoning", "model": "m", "capabilities": ["text"],
            "context_window": 8192, "max_concurrency": 4, "remote": False, "healthy": True,
            "in_flight": 0}]}))
    assert not router.registry.offline
    (entry,) = [m for m in router.models() if m["id"] == "big"]
    assert entry["maia"]["available"] is True and entry["maia"]["hosts"][0]["online"] is True
    plan = router.plan({"model": "big", "messages": [{"role": "user", "content": "x"}]})
    assert [c.where for c in plan.candidates] == ["BB"]


# -- the backend, against a real model server process ---------------------------------------------
def test_litellm_is_not_imported_when_the_node_or_the_cli_starts() -> None:
    """SPEC-006 §8.2: importing the node, the CLI (with every command module) and the routing
    feature loads neither litellm nor the openai SDK, nor httpx (the bounded embeddings client
    is imported with the first call: at start it cost the node ~3 MB of idle memory)."""
    code = ("import sys, node.cli, node.node, node.routing.feature, node.routing.routes; "
            "node.cli.build_parser(); print(sorted(m for m in ('litellm', 'openai', "
            "'tiktoken', 'httpx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"



@pytest.fixture(scope="module")
def fake() -> Any:
    with FakeLLM("unit", chunks=3) as server:
        yield server


async def collect(local: LocalCortices, name: str, stream: bool, text: str = "hi") -> list:
    body = {"messages": [{"role": "user", "content": text}]}
    return [event async for event in local.run(name, body, stream)]


async def test_local_cortex_streams_and_answers_through_litellm(fake: FakeLLM) -> None:
    """SPEC-006 §8.1: calls go through litellm to the api_base; chunks pass one by one."""
    local = LocalCortices([Cortex("u", "chat", "openai/u", api_base=fake.api_base)],
                          RoutingSettings())
    events = await collect(local, "u", True, "ping")
    litellm = await local.backend.ready()  # loaded by the call, configured to stay offline
    assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True" and litellm.telemetry is False
    chunks = [e[1] for e in events[:-1]]
    assert events[-1] == ("end", None)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "[unit] you said: ping #1 #2 #3"
    assert all(c["model"] == "u" for c in chunks)
    (kind, answer), = await collect(local, "u", False, "pong")
    assert kind == "end" and answer["choices"][0]["message"]["content"].startswith("[unit]")


async def test_garbage_from_the_model_fails_and_three_failures_make_it_unhealthy(
    fake: FakeLLM,
) -> None:
    """SPEC-006 §8.3, §7.6: a model answering garbage is a backend failure; after three in
    a minute the cortex is unhealthy (and advertised so) until the cooldown passes."""
    clock = Clock()
    changed: list[bool] = []
    local = LocalCortices([Cortex("u", "chat", "openai/u", api_base=fake.api_base)],
                          RoutingSettings(cooldown_seconds=10), clock=clock)
    local.on_health_change.append(lambda: changed.append(True))
    fake.control(mode="garbage")
    try:
        for stream in (True, False, True):
            with pytest.raises(BackendError) as err:
                await collect(local, "u", stream)
            assert err.value.code == "backend"
    finally:
        fake.control(mode="ok")
    assert changed and local.health("u") is not None
    assert local.advertised()[0]["healthy"] is False
    with pytest.raises(BackendError):
        await collect(local, "u", True)
    clock.now += 11
    assert local.health("u") is None
    assert (await collect(local, "u", False))[0][0] == "end"


async def test_a_missing_key_variable_makes_a_cortex_unhealthy_and_keys_stay_out_of_errors(
    fake: FakeLLM, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SPEC-006 §8.3, §9.1: unset key variable -> unhealthy; the key reaches the provider but
    never an error text."""
    cortex = Cortex("k", "chat", "openai/k", api_base=fake.api_base,
                    api_key_env="MAIA_UNIT_TEST_KEY")
    local = LocalCortices([cortex], RoutingSettings())
    monkeypatch.delenv("MAIA_UNIT_TEST_KEY", raising=False)
    assert "MAIA_UNIT_TEST_KEY" in (local.health("k") or "")
    assert local.advertised()[0]["healthy"] is False
    monkeypatch.setenv("MAIA_UNIT_TEST_KEY", SECRET)
    assert local.health("k") is None
    await collect(local, "k", False)
    seen = fake.stats()["auth_seen"]
    assert hashlib.sha256(f"Bearer {SECRET}".encode()).hexdigest() in seen
    fake.control(mode="error")
    try:
        with pytest.raises(BackendError) as err:
            await collect(local, "k", False)
    finally:
        fake.control(mode="ok")
    assert SECRET not in str(err.value) and SECRET not in err.value.detail


async def test_admission_is_bounded_and_the_window_is_checked_before_calling(
    fake: FakeLLM,
) -> None:
    """SPEC-006 §7.5, §10.3: beyond concurrency + 4 x concurrency waiting -> busy; an
    oversize prompt never reaches the model server."""
    local = LocalCortices(
        [Cortex("s", "chat", "openai/s", api_base=fake.api_base, max_concurrency=1,
                context_window=300)], RoutingSettings())
    before = fake.stats()["requests"]
    with pytest.raises(BackendError) as err:
        await collect(local, "s", False, "x" * 4000)
    assert err.value.code == "context_window"
    assert fake.stats()["requests"] == before
    fake.control(delay=0.5)
    try:
        calls = [asyncio.create_task(collect(local, "s", False)) for _ in range(6)]
        await asyncio.sleep(0.2)
        with pytest.raises(BackendError) as busy:
            await collect(local, "s", False)
        assert busy.value.code == "busy"
        for task in calls:
            task.cancel()
        for task in calls:
            with contextlib.suppress(BaseException):
                await task
    finally:
        fake.control(delay=0)
    assert local.in_flight("s") == 0
