"""SPEC-006 §6.5, §6.6 on real nodes: a name this node defines is answered here, and one answer is
bounded in chunks, bytes and time whatever its backend does.

A defines ``claude`` as a paid remote provider; its peer B advertises a local cortex of the same
name, closer and cheaper by the router's score. A's requests for ``claude`` must stay on A (the
owner pays for and trusts that provider with the prompt), and A shows B's claim as a conflict.
A's other cortices are backed by model servers that stream forever, slowly, or at length.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_llm_server import FakeLLM
from tests.nodes import NodeProc, make_mesh, wait_for
from tests.routing_helpers import chat, configure, models, wait_for_cortices

pytestmark = pytest.mark.slow

FAKES: dict[str, FakeLLM] = {}  # the model servers of the module's pair, by name


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProc, NodeProc]]:
    root: Path = tmp_path_factory.mktemp("routing-bounds")
    fakes = {
        "fa": FakeLLM("fa"), "fb": FakeLLM("fb"),
        "fast": FakeLLM("fast", mode="endless", delay=0.005),
        "slow": FakeLLM("slow", mode="endless", delay=0.5),
        "wordy": FakeLLM("wordy", chunks=1000),
        "huge": FakeLLM("huge", mode="huge"),
        "bomb": FakeLLM("bomb", mode="gzip"),
        "bhuge": FakeLLM("bhuge", mode="huge"),
    }
    for f in fakes.values():
        f.start()
    a, b = make_mesh(root, ["a", "b"])
    configure(a, cortex={
        "claude": {"kind": "reasoning", "model": "openai/paid", "api_base": fakes["fa"].api_base,
                   "remote": True},
        "endless": {"kind": "chat", "model": "openai/e", "api_base": fakes["fast"].api_base},
        "slow": {"kind": "chat", "model": "openai/s", "api_base": fakes["slow"].api_base},
        "wordy": {"kind": "chat", "model": "openai/w", "api_base": fakes["wordy"].api_base},
        "huge": {"kind": "chat", "model": "openai/h", "api_base": fakes["huge"].api_base},
        "bomb": {"kind": "chat", "model": "openai/g", "api_base": fakes["bomb"].api_base},
    }, routing={"max_answer_chunks": 20, "max_answer_seconds": 2, "max_answer_bytes": 4096})
    configure(b, cortex={
        "claude": {"kind": "chat", "model": "openai/local-pretender",
                   "api_base": fakes["fb"].api_base},
        "b-huge": {"kind": "chat", "model": "openai/bh", "api_base": fakes["bhuge"].api_base},
    })
    try:
        a.start()
        b.start()
        b.add_peer(a)
        wait_for(lambda: len(models(a)["claude"]["maia"]["hosts"]) == 2,
                 what="a to see b's claude")
        wait_for_cortices(a, {"endless", "slow", "wordy", "b-huge"})
        # A loads litellm in the background after start; on a slow machine that can outlast
        # the 2 s answer bound set here. One plain answer waits for it, so the bounds below
        # measure the backends, not the import.
        assert chat(a, "claude", "warm up", timeout=120).status == 200
        FAKES.update(fakes)
        yield a, b
    finally:
        a.stop()
        b.stop()
        for f in fakes.values():
            f.stop()


def test_the_node_that_defines_a_name_answers_it(pair) -> None:
    """SPEC-006 §6.5, §4.7, §11.1: A's own remote `claude` answers A's requests, never B's
    local namesake; /v1/models and `maia cortex list` show B's claim as a conflict."""
    a, b = pair
    a_id, b_id = a.device_id(), b.device_id()
    for stream in (False, True):
        answer = chat(a, "claude", "my private prompt", stream=stream)
        assert answer.status == 200, answer.body
        assert answer.host == a_id
        assert answer.text().startswith("[fa] ")
    info = models(a)["claude"]["maia"]
    assert (info["kind"], info["model"], info["remote"]) == ("reasoning", "openai/paid", True)
    assert [c["device_id"] for c in info["conflicts"]] == [b_id]
    assert info["conflicts"][0]["model"] == "openai/local-pretender"
    by_host = {h["device_id"]: h for h in info["hosts"]}
    assert not by_host[a_id]["name_conflict"] and by_host[b_id]["name_conflict"]
    # on B, which defines its own claude, the same rule keeps B's requests on B
    assert chat(b, "claude", "hi").host == b_id
    out = subprocess.run(
        [sys.executable, "-m", "node.cli", "--data-dir", str(a.data_dir), "cortex", "list"],
        capture_output=True, text=True, timeout=60, check=True).stdout
    assert "NAME CONFLICT" in out and "Name conflict" in out, out


def _error(answer) -> dict:
    assert answer.status == 200
    assert answer.events, answer.body
    *_, (_, event, data) = answer.events
    assert event == "error", answer.events[-3:]
    assert all(d != "[DONE]" for _, _, d in answer.events)
    return json.loads(data)["error"]


def test_an_endless_stream_is_cut_at_max_answer_chunks(pair) -> None:
    """SPEC-006 §6.6, §4.5: a backend that streams forever is cut after 20 chunks with one
    error event (code answer_limit) and no [DONE]."""
    a, _ = pair
    answer = chat(a, "endless", "go on forever", stream=True, timeout=20)
    error = _error(answer)
    assert error["code"] == "answer_limit" and "max_answer_chunks" in error["message"]
    assert len([e for e in answer.events if e[1] == "message"]) <= 20


def test_a_slow_endless_stream_is_cut_at_max_answer_seconds(pair) -> None:
    """SPEC-006 §6.6: a chunk every 0.5 s never trips the idle limit; the 2 s total does."""
    a, _ = pair
    answer = chat(a, "slow", "take your time", stream=True, timeout=20)
    error = _error(answer)
    assert error["code"] == "answer_limit" and "max_answer_seconds" in error["message"]
    assert answer.events[-1][0] - answer.events[0][0] < 4


def test_answers_over_max_answer_bytes_are_refused(pair) -> None:
    """SPEC-006 §6.6, §10.5: a 6 KB answer, over 4096 bytes: a stream ends with an error
    event; a plain answer is a 502 problem of type answer-limit."""
    a, _ = pair
    error = _error(chat(a, "wordy", "say a lot", stream=True))
    assert error["code"] == "answer_limit"
    plain = chat(a, "wordy", "say a lot")
    assert plain.status == 502, plain.body
    problem = plain.json()
    assert problem["type"] == "urn:maia-node:problem:answer-limit"
    assert problem["max_answer_bytes"] == 4096
    assert plain.headers["content-type"].startswith("application/problem+json")


def test_a_huge_or_compressed_answer_is_cut_at_max_answer_bytes(pair) -> None:
    """SPEC-006 §8.4, §6.6, §10.5: a model server answering without end (a JSON answer, or one
    SSE line that never ends) or with a gzip bomb is read only up to max_answer_bytes (4096
    here): each request, plain or streamed, answers 502 answer-limit, the server sees the node
    hang up long before its 64 MB are sent, and the node still answers."""
    a, _ = pair
    for name in ("huge", "bomb"):
        for stream in (False, True):
            answer = chat(a, name, "say everything", stream=stream, timeout=60)
            assert answer.status == 502, (name, stream, answer.status, answer.body[:300])
            problem = answer.json()
            assert problem["type"] == "urn:maia-node:problem:answer-limit", problem
            assert problem["max_answer_bytes"] == 4096
            if name == "huge":
                wait_for(lambda: FAKES["huge"].stats()["chat_done"], timeout=10,
                         what="the huge server to see the node hang up")
                assert FAKES["huge"].stats()["chat_sent"] < 32 * 1024 * 1024
    assert chat(a, "claude", "still here?").status == 200


def test_a_peer_that_cut_its_models_answer_says_so(pair) -> None:
    """SPEC-006 §8.4, §7.2 (`err answer_limit`), §6.6: B hosts a cortex whose server answers
    without end; B stops at its own max_answer_bytes (16 MiB by default) and tells A, which
    answers 502 answer-limit (not a 503 for a peer answering garbage) and leaves (B, b-huge)
    out for cooldown_seconds."""
    a, _ = pair
    answer = chat(a, "b-huge", "say everything", stream=True, timeout=60)
    assert answer.status == 502, (answer.status, answer.body[:300])
    assert answer.json()["type"] == "urn:maia-node:problem:answer-limit"
    wait_for(lambda: FAKES["bhuge"].stats()["chat_done"], timeout=10,
             what="the server to see b hang up")
    assert FAKES["bhuge"].stats()["chat_sent"] < 48 * 1024 * 1024
    again = chat(a, "b-huge", "say everything")
    assert again.status == 503 and "cooling down" in again.body.decode(), again.body[:300]
    assert FAKES["bhuge"].stats()["requests"] == 1
