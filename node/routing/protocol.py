"""Model requests and their answers over the authenticated peer channel (SPEC-006 §7).

Both roles live here. As **requester**, a node opens a :class:`PeerStream` (a ``req`` message)
and reads ``chunk`` / ``end`` / ``err`` messages for it; as **host**, it runs a peer's ``req``
on its :class:`~node.routing.backend.LocalCortices` and sends the answer back. Messages travel
in ``cx`` frames through a per-peer :class:`Outbox` that paces frames (200/s, burst 400) and
puts whatever queued meanwhile into the next frame, so heavy traffic batches instead of
tripping the peer's flood limit. Everything is bounded; a peer that answers out of shape is
treated as failed (``garbage``), and a closed connection fails every stream on it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator

from crdt import Rejected

from ..api.middleware import Limits, json_bound_errors, json_pointer
from ..transport import TransportError
from .backend import BackendError, Event, LocalCortices
from .config import MAX_EMBED_CHARS, MAX_EMBED_INPUTS
from .errors import BLAME_NONE, BLAME_PEER, HOST_CODES, AttemptFailed
from .schemas import CHAT_SCHEMA, RESERVED_BODY_KEYS
from .shapes import Garbage, clean_chunk, clean_response

if TYPE_CHECKING:
    from ..mesh.peers import PeerConnection, PeerManager

log = logging.getLogger(__name__)

FRAME_RATE = 200.0
FRAME_BURST = 400.0
MAX_BATCH = 256
MAX_PENDING = 4096
STREAM_QUEUE = 1024
MAX_SERVED_PER_PEER = 256
MAX_SID = 2**53
KEEPALIVE = 15.0  # a host says "still working" this often until its first chunk (§7.2)
IDLE_LIMIT = 60.0  # SPEC-003 §7.2: no stream sits silent longer


_peer_chat_validator: Any = None


def _chat_body_problem(body: dict[str, Any]) -> str | None:
    """Why a peer's chat body is not one this node's own route would accept, or None.

    A member's node is trusted with the prompt, not with the shape of what reaches the model:
    without this check a peer could pass ``n`` = 10,000, a huge ``max_tokens`` or tools the
    route refuses straight to this node's backend (SPEC-006 §7.8). So the body is held to the
    same JSON bounds and the same schema as ``POST /v1/chat/completions`` (schemas.CHAT_SCHEMA),
    less the fields the requester removes (``model``, ``stream``, ``metadata``)."""
    global _peer_chat_validator
    if _peer_chat_validator is None:
        schema = {**CHAT_SCHEMA, "required": ["messages"], "properties": {
            k: v for k, v in CHAT_SCHEMA["properties"].items() if k not in RESERVED_BODY_KEYS}}
        _peer_chat_validator = Draft202012Validator(schema)
    try:
        for error in json_bound_errors(body, Limits()):
            return f"{error['path'] or 'body'}: {error['message']}"
        if not _finite(body):  # the route's JSON parser refuses NaN and Infinity
            return "a number is NaN or infinite"
        for err in _peer_chat_validator.iter_errors(body):
            return f"{json_pointer(err.absolute_path) or 'body'}: {err.message}"
    except Exception as exc:  # e.g. a map key that is not a string (msgpack allows them)
        return f"the body is not JSON-shaped ({type(exc).__name__})"
    return None


def _finite(value: Any) -> bool:
    """No NaN or infinity anywhere in ``value`` (msgpack carries them; JSON does not).
    Iterative, so a deep value costs no stack."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return False
        if isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return True


def _body_problem(op: Any, body: dict[str, Any], stream: bool) -> str | None:
    """Why a peer's request body does not have the shape its ``op`` needs (SPEC-006 §7.2)."""
    if op == "chat":
        return _chat_body_problem(body)
    if op == "embed":
        items = body.get("input")
        if (not stream and isinstance(items, list) and 1 <= len(items) <= MAX_EMBED_INPUTS
                and all(isinstance(t, str) and 0 < len(t) <= MAX_EMBED_CHARS for t in items)):
            return None
        return "body.input must be 1 to 256 strings, not streamed"
    return f"unknown op {str(op)[:20]!r}"


class Outbox:
    """Paced, batching sender of ``cx`` frames to one peer (§7.4, §7.5)."""

    def __init__(
        self, conn: PeerConnection, *, rate: float = FRAME_RATE, burst: float = FRAME_BURST
    ) -> None:
        self.conn = conn
        self.rate, self.burst = rate, burst
        self._tokens, self._at = burst, time.monotonic()
        self._pending: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self.frames_sent = 0
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"cx-outbox-{conn.peer_device_id}"
        )

    async def put(self, msg: dict[str, Any]) -> None:
        """Queue a message; waits while the peer's queue is full (backpressure)."""
        while len(self._pending) >= MAX_PENDING:
            self._space.clear()
            await self._space.wait()
        self.put_nowait(msg)

    def put_nowait(self, msg: dict[str, Any]) -> None:
        """Queue a control message (cancel, err) that must not wait."""
        self._pending.append(msg)
        self._wake.set()

    async def _take_token(self) -> None:
        while True:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await asyncio.sleep((1 - self._tokens) / self.rate)

    async def _run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._pending:
                    await self._take_token()
                    n = min(len(self._pending), MAX_BATCH)
                    batch = [self._pending.popleft() for _ in range(n)]
                    if len(self._pending) < MAX_PENDING:
                        self._space.set()
                    await self.conn.send({"t": "cx", "m": batch})
                    self.frames_sent += 1
        except TransportError as exc:
            log.debug("outbox to %s stopped: %s", self.conn.peer_device_id, exc)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        self._space.set()


class PeerStream:
    """The requester's view of one call on a peer: an async iterator of answer events."""

    def __init__(
        self, proto: RoutingProtocol, conn: PeerConnection, sid: int, cortex: str, stream: bool,
        first_timeout: float, clean_end: Callable[[Any], Any] | None = None,
    ) -> None:
        self.proto, self.conn, self.sid = proto, conn, sid
        self.cortex, self.stream = cortex, stream
        self.clean_end = clean_end  # an embeddings answer's check (SPEC-006 §13.4)
        self.first_timeout = first_timeout
        self._items: deque[dict[str, Any] | AttemptFailed] = deque()
        self._ready = asyncio.Event()
        self._heard = False
        self.finished = False

    # called from the peer's reader loop: never blocks
    def deliver(self, msg: dict[str, Any]) -> None:
        if self.finished:
            return
        if len(self._items) >= STREAM_QUEUE:
            self._items.clear()
            self.fail(AttemptFailed("overflow", "the answer arrived faster than it was read",
                                    BLAME_NONE))
            self.proto.cancel(self)
            return
        self._items.append(msg)
        self._ready.set()

    def fail(self, exc: AttemptFailed) -> None:
        self._items.append(exc)
        self._ready.set()

    def __aiter__(self) -> PeerStream:
        return self

    async def __anext__(self) -> Event:
        if self.finished:
            raise StopAsyncIteration
        while True:
            await self._wait_for_item()
            item = self._items.popleft()
            if isinstance(item, AttemptFailed):
                self._finish()
                raise item
            self._heard = True
            if item.get("k") != "wait":  # "still working": it only proves the peer is alive
                break
        try:
            return self._event(item)
        except Garbage as exc:
            self._finish()
            self.proto.cancel(self)
            self.proto.on_fault(self.conn.peer_key, f"answered garbage: {exc}")
            raise AttemptFailed(
                "garbage", f"the peer answered garbage: {exc}", BLAME_PEER
            ) from None

    async def _wait_for_item(self) -> None:
        """Wait for the next message: the first within first_timeout, then within 60 s."""
        if self._items:
            return
        limit = IDLE_LIMIT if self._heard else self.first_timeout
        try:
            async with asyncio.timeout(limit):
                while not self._items:
                    self._ready.clear()
                    await self._ready.wait()
        except TimeoutError:
            self._finish()
            self.proto.cancel(self)
            raise AttemptFailed("timeout", f"the peer sent nothing for {limit:g} s",
                                BLAME_PEER) from None

    def _event(self, msg: dict[str, Any]) -> Event:
        kind = msg.get("k")
        if kind == "chunk" and self.stream:
            return ("chunk", clean_chunk(msg.get("d"), self.cortex))
        if kind == "end":
            if self.stream:
                if "r" in msg:
                    raise Garbage("an end message of a stream carries an answer")
                self._finish()
                return ("end", None)
            if self.clean_end is not None:
                answer = self.clean_end(msg.get("r"))
            else:
                answer = clean_response(msg.get("r"), self.cortex)
            self._finish()
            return ("end", answer)
        if kind == "err":
            code, detail = msg.get("code"), msg.get("detail", "")
            if code not in HOST_CODES or not isinstance(detail, str):
                raise Garbage("an error message with an unknown code")
            self._finish()
            raise AttemptFailed(code, detail[:300], HOST_CODES[code])
        raise Garbage(f"unexpected message {str(kind)[:20]!r}")

    def _finish(self) -> None:
        self.finished = True
        self.proto.forget(self)

    async def aclose(self) -> None:
        """Stop reading; a call still running on the host is cancelled."""
        if not self.finished:
            self.finished = True
            self.proto.cancel(self)
            self.proto.forget(self)


class RoutingProtocol:
    """The ``cx`` frame kind: requester streams and hosted calls, per connection."""

    def __init__(
        self, local: LocalCortices, on_fault: Callable[[bytes, str], None] = lambda k, w: None
    ) -> None:
        self.local = local
        self.on_fault = on_fault
        self._streams: dict[tuple[PeerConnection, int], PeerStream] = {}
        self._serving: dict[tuple[PeerConnection, int], asyncio.Task] = {}
        self._outboxes: dict[PeerConnection, Outbox] = {}
        self._next_sid = 0
        self.served = 0

    def attach(self, manager: PeerManager) -> None:
        manager.register("cx", self._on_frame)
        manager.on_disconnected.append(self._disconnected)

    def outbox(self, conn: PeerConnection) -> Outbox:
        box = self._outboxes.get(conn)
        if box is None:
            box = self._outboxes[conn] = Outbox(conn)
        return box

    # -- requester ----------------------------------------------------------------------------
    async def open(
        self, conn: PeerConnection, cortex: str, body: dict[str, Any], stream: bool,
        first_timeout: float = IDLE_LIMIT, *, op: str = "chat",
        clean_end: Callable[[Any], Any] | None = None,
    ) -> PeerStream:
        """Ask the peer to run ``cortex``; it must say something within ``first_timeout``.
        ``op="embed"`` asks for embeddings; ``clean_end`` then checks the answer (§13.4)."""
        if conn.closed.is_set():
            raise AttemptFailed("peer_lost", "the connection to the peer is closed", BLAME_PEER)
        self._next_sid = self._next_sid % (MAX_SID - 1) + 1
        ps = PeerStream(self, conn, self._next_sid, cortex, stream, first_timeout, clean_end)
        self._streams[(conn, ps.sid)] = ps
        msg = {"k": "req", "s": ps.sid, "cortex": cortex, "body": body, "stream": stream}
        if op != "chat":
            msg["op"] = op
        await self.outbox(conn).put(msg)
        return ps

    def cancel(self, ps: PeerStream) -> None:
        if not ps.conn.closed.is_set() and ps.conn in self._outboxes:
            self._outboxes[ps.conn].put_nowait({"k": "cancel", "s": ps.sid})

    def forget(self, ps: PeerStream) -> None:
        self._streams.pop((ps.conn, ps.sid), None)

    # -- the frame ----------------------------------------------------------------------------
    async def _on_frame(self, conn: PeerConnection, frame: dict[str, Any]) -> None:
        messages = frame.get("m")
        if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_BATCH:
            self.on_fault(conn.peer_key, "a cx frame without a valid message list")
            raise Rejected("malformed", "cx: m must be a list of 1 to 256 messages")
        for msg in messages:
            sid = msg.get("s") if isinstance(msg, dict) else None
            if isinstance(sid, bool) or not isinstance(sid, int) or not 0 < sid < MAX_SID:
                self.on_fault(conn.peer_key, "a cx message without a valid stream id")
                raise Rejected("malformed", "cx: a message without a valid stream id")
            kind = msg.get("k")
            if kind == "req":
                self._start_call(conn, sid, msg)
            elif kind == "cancel":
                task = self._serving.get((conn, sid))
                if task is not None:
                    task.cancel()
            else:
                ps = self._streams.get((conn, sid))
                if ps is not None:  # else: a late answer to a stream we already left
                    ps.deliver(msg)

    def _disconnected(self, conn: PeerConnection) -> None:
        for key, ps in list(self._streams.items()):
            if key[0] is conn:
                ps.fail(AttemptFailed("peer_lost", "the connection to the peer closed",
                                      BLAME_PEER))
                del self._streams[key]
        for key, task in list(self._serving.items()):
            if key[0] is conn:
                task.cancel()
        box = self._outboxes.pop(conn, None)
        if box is not None:
            asyncio.get_running_loop().create_task(box.close())

    # -- host ---------------------------------------------------------------------------------
    def _start_call(self, conn: PeerConnection, sid: int, msg: dict[str, Any]) -> None:
        box = self.outbox(conn)
        cortex, body, stream = msg.get("cortex"), msg.get("body"), msg.get("stream")
        op = msg.get("op", "chat")
        if not isinstance(cortex, str) or not isinstance(body, dict) or not isinstance(
                stream, bool):
            box.put_nowait({"k": "err", "s": sid, "code": "malformed",
                            "detail": "req needs cortex, stream and body.messages (chat) or "
                                      "body.input, 1 to 256 strings (embed)"})
            return
        problem = _body_problem(op, body, stream)
        if problem is not None:
            log.info("refused a %s request from %s: %s", str(op)[:20], conn.peer_device_id,
                     problem[:200])
            box.put_nowait({"k": "err", "s": sid, "code": "malformed",
                            "detail": f"the request body is refused: {problem}"[:300]})
            return
        if (conn, sid) in self._serving:
            box.put_nowait({"k": "err", "s": sid, "code": "malformed",
                            "detail": "this stream id is already running"})
            return
        if sum(1 for c, _ in self._serving if c is conn) >= MAX_SERVED_PER_PEER:
            box.put_nowait({"k": "err", "s": sid, "code": "busy",
                            "detail": "too many calls from this peer at once"})
            return
        task = asyncio.get_running_loop().create_task(
            self._serve(conn, box, sid, cortex, body, stream, op), name=f"cx-serve-{sid}"
        )
        self._serving[(conn, sid)] = task
        task.add_done_callback(lambda _t: self._serving.pop((conn, sid), None))

    async def _serve(
        self, conn: PeerConnection, box: Outbox, sid: int, cortex: str,
        body: dict[str, Any], stream: bool, op: str = "chat",
    ) -> None:
        self.served += 1
        box.put_nowait({"k": "wait", "s": sid})
        keepalive = asyncio.get_running_loop().create_task(self._keepalive(box, sid))
        try:
            async with contextlib.aclosing(self.local.run(cortex, body, stream, op)) as events:
                async for kind, payload in events:
                    keepalive.cancel()
                    if kind == "chunk":
                        await box.put({"k": "chunk", "s": sid, "d": payload})
                    elif payload is None:
                        await box.put({"k": "end", "s": sid})
                    else:
                        await box.put({"k": "end", "s": sid, "r": payload})
        except BackendError as exc:
            box.put_nowait({"k": "err", "s": sid, "code": exc.code, "detail": exc.detail})
        except asyncio.CancelledError:
            pass  # the requester cancelled or left; it expects nothing more
        except Exception:
            log.exception("serving a %s call for %s failed", cortex, conn.peer_device_id)
            box.put_nowait({"k": "err", "s": sid, "code": "internal",
                            "detail": "internal error on the host; see its log"})
        finally:
            keepalive.cancel()

    @staticmethod
    async def _keepalive(box: Outbox, sid: int) -> None:
        """Until the first chunk: tell the requester the call is alive (§7.2 ``wait``)."""
        while True:
            await asyncio.sleep(KEEPALIVE)
            box.put_nowait({"k": "wait", "s": sid})

    async def stop(self) -> None:
        for task in list(self._serving.values()):
            task.cancel()
        for box in list(self._outboxes.values()):
            await box.close()
        self._outboxes.clear()
