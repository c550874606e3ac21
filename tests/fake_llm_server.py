"""A stand-in for a model provider: a small OpenAI-compatible HTTP server, run as its own process.

It plays what Ollama, llama.cpp's server or a commercial API would be for a cortex, so routing
tests exercise real HTTP, real ``litellm`` and real node processes with only the model faked.
Answers are deterministic and name the server that produced them (``[name] ...``), so a test
can tell which host answered. Behaviour is set at start and can be changed while it runs:

- ``mode``: ``ok`` (answers), ``garbage`` (HTTP 200 with bytes that are not the API's shape),
  ``error`` (HTTP 500), ``hang`` (accepts and never answers), ``endless`` (a stream that never
  ends: a numbered chunk every ``delay`` seconds, forever), ``huge`` (an answer that never
  ends, up to 64 MB with no length: a JSON answer, or in a stream one SSE line that never
  ends; ``chat_sent`` in ``/stats`` counts the bytes the client took before it hung up),
  ``gzip`` (a small gzip body announced as such that inflates to 50 MB: a compression bomb);
- ``delay``: seconds to wait before each streamed chunk (and once before a whole answer);
- ``chunks``: how many extra numbered chunks a streamed answer carries after the greeting.
- ``hold_after``: a streamed answer stops after that many content pieces until ``/control
  {"release": true}`` (or 60 s): a test learns that a chunk was passed on before the rest of
  the answer existed from what it received, not from timings (0: no hold).
- ``text`` mode answers exactly ``answer`` (set at start or by ``/control``): a JSON object, or
  hostile text, for the consolidation job (SPEC-006 §12.3); ``facts`` mode plays an instant
  consolidation cortex: one fact per entry of ``new_entries`` in the request, citing it
  (markers in an entry's text steer it, see ``consolidation_facts``);
  ``scores`` mode plays a salience cortex (SPEC-006 §12.5.4): one score per fact of ``facts``
  in the request, 0.9 for a fact that says "important", else 0.2.

It also serves ``POST /v1/embeddings`` (an OpenAI-compatible embedding model of ``dim``
dimensions; each text's vector is derived from its SHA-256, so the same text always gets the
same vector). ``emb_mode`` picks a hostile answer: ``ok``, ``wrong_dim`` (one dimension
short), ``nan`` (a NaN in the first vector), ``inf``, ``strings`` (numbers as strings),
``too_many`` / ``too_few`` (one vector more / less than inputs), ``dup_index`` (every item
index 0), ``huge`` (a 24 MB answer: one vector of three million numbers), ``hang``, ``error``
(HTTP 500), ``html`` (not JSON).

Control and inspection (plain JSON, no auth: it only ever listens on loopback in tests):
``POST /control {"mode"?, "delay"?, "chunks"?, "answer"?, "hold_after"?, "release"?,
"emb_mode"?, "dim"?}``, ``GET /stats`` -> ``{"requests", "streams", "embeddings", "auth_seen":
[sha256 of each distinct Authorization value], "held": a stream waits for the release}``.

Run: ``python tests/fake_llm_server.py --name fb [--port 0] [--delay 0] [--mode ok]``; it
prints ``PORT <n>`` on stdout once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import hashlib
import json
import sys
import time
from typing import Any

from aiohttp import web

STATE = web.AppKey("state", dict)


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(
                p.get("text", "") for p in content
                if isinstance(p, dict) and p.get("type") == "text"
            )
    return ""


def answer_pieces(name: str, body: dict[str, Any], extra_chunks: int) -> list[str]:
    """The deterministic answer, split into the pieces a stream sends one per chunk."""
    said = _last_user_text(body)[:200]
    pieces = [f"[{name}] ", "you said: ", said]
    pieces += [f" #{i}" for i in range(1, extra_chunks + 1)]
    return pieces


CITE_UNKNOWN = "[cite-unknown]"
SUPERSEDE_NEWEST = "[supersede-newest]"


def consolidation_facts(body: dict[str, Any]) -> str:
    """The ``facts`` mode's answer: one fact per new entry it was given, citing that entry.
    Markers in an entry's text steer it: ``[cite-unknown]`` makes its fact cite an entry it
    was not given (the whole answer is then refused), ``[supersede-newest]`` makes its fact
    supersede the first current fact it was shown (the newest)."""
    try:
        request = json.loads(_last_user_text(body))
        given, current = request["new_entries"], request.get("current_facts") or []
    except (ValueError, KeyError, TypeError):
        return json.dumps({"facts": []})
    facts = []
    for e in given:
        fact: dict[str, Any] = {"text": f"fact: {e['text'][:120]}", "sources": [e["id"]]}
        if CITE_UNKNOWN in e["text"]:
            fact["sources"] = ["note-200001-AAAAAAAAAA"]
        if SUPERSEDE_NEWEST in e["text"] and current:
            fact["supersedes"] = current[0]["id"]
        facts.append(fact)
    return json.dumps({"facts": facts})


def salience_scores(body: dict[str, Any]) -> str:
    """The ``scores`` mode's answer: {"scores": [...]}, one per fact it was given."""
    try:
        facts = json.loads(_last_user_text(body))["facts"]
    except (ValueError, KeyError, TypeError):
        return json.dumps({"scores": []})
    return json.dumps({"scores": [0.9 if "important" in str(f) else 0.2 for f in facts]})


def _chunk(cid: str, model: str, delta: dict[str, Any], finish: str | None) -> bytes:
    obj = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


async def chat(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    state["requests"] += 1
    auth = request.headers.get("Authorization", "")
    digest = hashlib.sha256(auth.encode()).hexdigest()
    if digest not in state["auth_seen"]:
        state["auth_seen"].append(digest)
    body = await request.json()
    mode, delay, extra = state["mode"], state["delay"], state["chunks"]
    model = str(body.get("model", "fake"))
    cid = f"chatcmpl-{state['name']}-{state['requests']}"
    if mode == "hang":
        await asyncio.sleep(3600)
    if mode == "error":
        return web.json_response(
            {"error": {"message": "fake failure", "type": "server"}}, status=500
        )
    stream = bool(body.get("stream"))
    if mode in ("huge", "gzip"):
        return await _huge_chat(request, state, mode, stream)
    if mode == "garbage":
        if stream:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b"data: {not json at all\n\nthis is not an event stream\n\n")
            await resp.write(b"data: [1, 2, 3]\n\n")
            await resp.write_eof()
            return resp
        return web.Response(
            text="<html>definitely not a completion</html>", content_type="text/html"
        )
    if mode == "endless" and stream:
        state["streams"] += 1
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        n = 0
        with contextlib.suppress(ConnectionError):
            await resp.write(_chunk(cid, model, {"role": "assistant", "content": ""}, None))
            while True:
                n += 1
                await asyncio.sleep(delay)
                await resp.write(_chunk(cid, model, {"content": f" #{n}"}, None))
        return resp
    pieces = answer_pieces(state["name"], body, extra)
    state["last_user"] = _last_user_text(body)[:100_000]
    if mode == "text":
        pieces = [state["answer"]]
    elif mode == "facts":
        pieces = [consolidation_facts(body)]
    elif mode == "scores":
        pieces = [salience_scores(body)]
    if not stream:
        if delay:
            await asyncio.sleep(delay)
        text = "".join(pieces)
        return web.json_response({
            "id": cid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }],
            "usage": {"prompt_tokens": 5, "completion_tokens": len(pieces),
                      "total_tokens": 5 + len(pieces)},
        })
    state["streams"] += 1
    hold_after, state["release"] = state["hold_after"], asyncio.Event()
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-cache"})
    await resp.prepare(request)
    try:
        await resp.write(_chunk(cid, model, {"role": "assistant", "content": ""}, None))
        for n, piece in enumerate(pieces, 1):
            if delay:
                await asyncio.sleep(delay)
            state["held"] = n == hold_after  # set before the piece leaves: no race with it
            await resp.write(_chunk(cid, model, {"content": piece}, None))
            if state["held"]:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(state["release"].wait(), 60)
                state["held"] = False
        await resp.write(_chunk(cid, model, {}, "stop"))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
    except ConnectionError:
        pass  # the caller left mid-answer (a cancelled or killed client)
    return resp


async def _huge_chat(request: web.Request, state: dict[str, Any], mode: str,
                     stream: bool) -> web.StreamResponse:
    """A hostile chat model: an answer that never ends (chunked, no length) or a gzip bomb.
    A stream's is one ``data:`` line that never ends, so no SSE event is ever complete."""
    kind = "text/event-stream" if stream else "application/json"
    if mode == "gzip":
        head = b'data: {"choices": [' if stream else b'{"choices": ['
        return web.Response(body=gzip.compress(head + b" " * 50_000_000 + b"]}"),
                            headers={"Content-Encoding": "gzip", "Content-Type": kind})
    response = web.StreamResponse(headers={"Content-Type": kind})
    response.enable_chunked_encoding()
    await response.prepare(request)
    state["chat_sent"], state["chat_done"] = 0, False
    head = b'{"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": "'
    piece = b"ha" * 32_768
    try:
        await response.write(b"data: " + head if stream else head)
        while state["chat_sent"] < HUGE_CHAT_BYTES:
            await response.write(piece)
            state["chat_sent"] += len(piece)
    except (ConnectionError, RuntimeError):
        pass  # the client hung up: what a bounded client does
    finally:
        state["chat_done"] = True
    return response


def fake_vector(text: str, dim: int) -> list[float]:
    """A deterministic vector for ``text``: SHA-256 stretched to ``dim`` numbers in [-1, 1]."""
    out: list[float] = []
    counter = 0
    while len(out) < dim:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        out.extend((b - 127.5) / 127.5 for b in digest)
        counter += 1
    return out[:dim]


async def embeddings(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state["embeddings"] += 1
    body = await request.json()
    mode, dim = state["emb_mode"], state["dim"]
    inputs = body.get("input")
    inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
    state["inputs_seen"] += len(inputs)
    if mode == "hang":
        await asyncio.sleep(3600)
    if mode == "error":
        return web.json_response({"error": {"message": "fake failure"}}, status=500)
    if mode == "html":
        return web.Response(text="<html>no</html>", content_type="text/html")
    if mode in ("endless", "gzip"):
        return await _endless(request, state, mode)
    vectors: list[list[Any]] = [fake_vector(str(t), dim) for t in inputs]
    if mode == "wrong_dim":
        vectors = [v[:-1] for v in vectors]
    elif mode == "nan" and vectors:
        vectors[0][0] = float("nan")
    elif mode == "inf" and vectors:
        vectors[0][-1] = float("inf")
    elif mode == "strings":
        vectors = [[str(x) for x in v] for v in vectors]
    elif mode == "too_many":
        vectors.append(fake_vector("extra", dim))
    elif mode == "too_few":
        vectors = vectors[:-1]
    elif mode == "huge" and vectors:
        vectors[0] = [0.5] * 3_000_000
    data = [{"object": "embedding", "index": 0 if mode == "dup_index" else i, "embedding": v}
            for i, v in enumerate(vectors)]
    text = json.dumps({"object": "list", "data": data, "model": str(body.get("model", "")),
                       "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}})
    return web.Response(text=text, content_type="application/json")


ENDLESS_BYTES = 512 * 1024 * 1024
HUGE_CHAT_BYTES = 64 * 1024 * 1024  # enough to tell a bounded reader; an unbounded one survives


async def _endless(request: web.Request, state: dict[str, Any], mode: str) -> web.StreamResponse:
    """A hostile embedding server: a JSON answer that never ends (chunked, no length), up to
    512 MB, or (``gzip``) a small compressed body announced as gzip. ``emb_sent`` counts the
    bytes the client took before it hung up, so a test can tell it stopped reading."""
    if mode == "gzip":
        body = gzip.compress(b'{"object": "list", "data": [' + b" " * 50_000_000 + b"]}")
        return web.Response(body=body, headers={"Content-Encoding": "gzip",
                                                "Content-Type": "application/json"})
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    state["emb_sent"] = 0
    state["emb_done"] = False
    piece = b'{"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [' \
        + b"0.5, " * 13_000
    try:
        while state["emb_sent"] < ENDLESS_BYTES:
            await response.write(piece)
            state["emb_sent"] += len(piece)
    except (ConnectionError, RuntimeError):
        pass  # the client hung up: what a bounded client does
    finally:
        state["emb_done"] = True
    return response


async def control(request: web.Request) -> web.Response:
    state = request.app[STATE]
    changes = await request.json()
    for key in ("mode", "delay", "chunks", "answer", "hold_after", "emb_mode", "dim"):
        if key in changes:
            state[key] = changes[key]
    if changes.get("release"):
        state["release"].set()
    return web.json_response({k: state[k] for k in ("mode", "delay", "chunks", "hold_after",
                                                    "emb_mode", "dim")})


async def stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response(
        {k: state[k] for k in ("name", "requests", "streams", "auth_seen", "mode", "last_user",
                               "held", "embeddings", "inputs_seen", "emb_mode", "emb_sent",
                               "emb_done", "chat_sent", "chat_done")}
    )


def make_app(
    name: str, *, mode: str = "ok", delay: float = 0.0, chunks: int = 0, dim: int = 8,
    emb_mode: str = "ok",
) -> web.Application:
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app[STATE] = {"name": name, "mode": mode, "delay": delay, "chunks": chunks,
                  "requests": 0, "streams": 0, "auth_seen": [], "answer": "",
                  "last_user": "", "hold_after": 0, "held": False, "release": asyncio.Event(),
                  "dim": dim, "emb_mode": emb_mode, "embeddings": 0, "inputs_seen": 0,
                  "emb_sent": 0, "emb_done": True, "chat_sent": 0, "chat_done": True}
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/control", control)
    app.router.add_get("/stats", stats)
    return app


async def serve(args: argparse.Namespace) -> None:
    app = make_app(args.name, mode=args.mode, delay=args.delay, chunks=args.chunks,
                   dim=args.dim)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=1024)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


class FakeLLM:
    """Test-side handle: starts this module as a separate process and talks to it."""

    def __init__(self, name: str, *, mode: str = "ok", delay: float = 0.0, chunks: int = 0,
                 dim: int = 8):
        self.name = name
        self.args = ["--name", name, "--mode", mode, "--delay", str(delay), "--chunks", str(chunks),
                     "--dim", str(dim)]
        self.proc: Any = None
        self.port = 0

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeLLM:
        import subprocess

        self.proc = subprocess.Popen(
            [sys.executable, __file__, *self.args], stdout=subprocess.PIPE, text=True
        )
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"fake model server {self.name} did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.proc = None

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                     method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def control(self, **changes: Any) -> dict[str, Any]:
        return self._call("POST", "/control", changes)

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/stats")

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", default="ok",
                        choices=["ok", "garbage", "error", "hang", "endless", "text", "facts",
                                 "scores", "huge", "gzip"])
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=0)
    parser.add_argument("--dim", type=int, default=8)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
