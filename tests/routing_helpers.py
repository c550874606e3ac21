"""Helpers for the routing tests: configure cortices on a node, call its OpenAI routes.

Calls go over plain HTTP (``http.client``), so a test sees statuses, headers and SSE events
exactly as any client would, including when each event arrived.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import time
from dataclasses import dataclass, field
from typing import Any

from crdt.identity import open_repo, record_certs
from crdt.keys import DeviceKey
from crdt.roster import new_endorsement
from crdt.store import Store
from node.config import NodeConfig
from tests.fake_llm_server import FakeLLM
from tests.hostile import HostilePeer, hostile_peer
from tests.nodes import NodeProc, wait_for


def configure(node: NodeProc, **tables: Any) -> None:
    """Write config.toml tables (e.g. cortex={...}, routing={...}) before the node starts."""
    path = node.data_dir / "config.toml"
    cfg = NodeConfig.load(path)
    cfg.extra.update(tables)
    cfg.save(path)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    events: list[tuple[float, str, str]] = field(default_factory=list)  # (at, event, data)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def host(self) -> str | None:
        return self.headers.get("x-maia-cortex-host")

    def text(self) -> str:
        """The answer's text: the message (plain) or the deltas joined (stream)."""
        if not self.events:
            return self.json()["choices"][0]["message"]["content"]
        out = []
        for _, event, data in self.events:
            if event == "message" and data != "[DONE]":
                for choice in json.loads(data)["choices"]:
                    out.append(choice["delta"].get("content") or "")
        return "".join(out)


def chat(
    node: NodeProc, model: str, text: str = "hello", *, stream: bool = False,
    timeout: float = 30.0, raw: bytes | None = None, on_event: Any = None, **extra: Any,
) -> Answer:
    """POST /v1/chat/completions; ``on_event(answer)`` runs after each SSE event."""
    body = raw if raw is not None else json.dumps(
        {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream,
         **extra}
    ).encode()
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=timeout)
    try:
        conn.request("POST", "/v1/chat/completions", body=body, headers={
            "Authorization": f"Bearer {node.token}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        answer = Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()})
        if resp.status != 200 or not answer.headers.get("content-type", "").startswith(
            "text/event-stream"
        ):
            answer.body = resp.read()
            return answer
        event, data = "message", []
        for line in resp:
            line = line.decode().rstrip("\r\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line and data:
                answer.events.append((time.monotonic(), event, "\n".join(data)))
                if on_event is not None:
                    on_event(answer)
                event, data = "message", []
        return answer
    finally:
        conn.close()


def models(node: NodeProc) -> dict[str, dict[str, Any]]:
    return {m["id"]: m for m in node.request("GET", "/v1/models")["data"]}


def wait_for_cortices(node: NodeProc, names: set[str], timeout: float = 20.0) -> None:
    wait_for(lambda: names <= set(models(node)), timeout=timeout,
             what=f"{node.name} to see cortices {sorted(names)}")


@dataclass
class Mesh:
    """Three routing nodes and the two fake model servers behind B and C."""

    a: NodeProc
    b: NodeProc
    c: NodeProc
    fb: FakeLLM
    fc: FakeLLM
    ids: dict[str, str]


def endorse_member(node: NodeProc, name: str) -> tuple[DeviceKey, bytes, list[bytes]]:
    """A new member key endorsed in ``node``'s roster while it is stopped (a hostile peer's
    key in the tests): the key, the mesh id and every certificate, as a member presents them."""
    founder = DeviceKey.load(node.data_dir / "keys" / "device.key")
    member = DeviceKey.generate()
    store = Store(node.data_dir)
    try:
        repo = open_repo(store, founder)
        mesh_id = repo.mesh_id
        record_certs(repo, [new_endorsement(founder, mesh_id, member.public_key, name)])
        return member, mesh_id, [c.encode() for c in repo.roster.certs.values()]
    finally:
        store.close()


#: A peer's advertisement of one reasoning cortex named ``big``.
BIG_AD = {"t": "cx.ad", "v": 1, "cortices": [{
    "name": "big", "kind": "reasoning", "model": "m", "capabilities": ["text"],
    "context_window": 8192, "max_concurrency": 4, "remote": False, "healthy": True,
    "in_flight": 0}]}


def is_msg(kind: str, sid: int | None = None) -> Any:
    """A matcher for a ``cx`` frame carrying a message of ``kind`` (for stream ``sid``)."""
    def match(frame: Any) -> bool:
        return isinstance(frame, dict) and frame.get("t") == "cx" and any(
            m.get("k") == kind and (sid is None or m.get("s") == sid) for m in frame["m"])
    return match


@dataclass
class Lone:
    """One routing node A with its own cortex behind ``fa`` and a member key a test uses as a
    hostile peer (``endorse_member``)."""

    a: NodeProc
    a_id: str
    fa: FakeLLM
    member: DeviceKey
    mesh_id: bytes
    certs: list[bytes]

    def peer(self) -> contextlib.AbstractAsyncContextManager[HostilePeer]:
        """A connection to A as the member, kept alive while a test takes its time."""
        return hostile_peer(self.a.peer_port, self.member, self.mesh_id, self.certs,
                            keepalive=True)
