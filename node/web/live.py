"""Live events for the web page: document changes and peer connections, fanned out to SSE streams.

The hub listens to the node (``repo.subscribe`` and the peer manager's connect/disconnect
callbacks) and hands each open stream a small, coalesced set of pending events. Nothing slow
happens in the listeners: they only record "this changed" and wake the streams, so a sync
burst of thousands of changes costs the node a dict write per change, and each stream sends at
most one event per document per interval (SPEC-003 §11.7).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from crdt import device_id

from ..api.problem import Problem

if TYPE_CHECKING:
    from crdt import Repo

    from ..mesh.peers import PeerConnection, PeerManager

log = logging.getLogger(__name__)

MAX_STREAMS = 16
HEARTBEAT_SECONDS = 15.0
COALESCE_SECONDS = 0.25
MAX_PENDING = 1000
RETRY_MS = 2000
CLOSED_POLL_SECONDS = 0.2  # how soon a client that closed its stream frees its place
TYPE_OVERLOADED = "urn:maia-node:problem:overloaded"


class Stream:
    """One open event stream: its pending events and what wakes it."""

    def __init__(self, owner: str | None) -> None:
        self.owner = owner  # the browser login's label, or None for a bearer-token client
        self.pending: dict[tuple[str, str], dict[str, Any]] = {}
        self.overflowed = False
        self.closed = False
        self.wake = asyncio.Event()

    def push(self, kind: str, key: str, data: dict[str, Any]) -> None:
        if self.overflowed:
            return
        if len(self.pending) >= MAX_PENDING and (kind, key) not in self.pending:
            # Too much to list one by one: tell the page to reload everything instead.
            self.pending.clear()
            self.overflowed = True
        else:
            self.pending[(kind, key)] = data
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()

    def take(self) -> list[tuple[str, dict[str, Any]]]:
        if self.overflowed:
            self.overflowed = False
            self.pending.clear()
            return [("resync", {})]
        events = [(kind, data) for (kind, _), data in self.pending.items()]
        self.pending.clear()
        return events


class LiveHub:
    """Fan-out of node events to at most ``max_streams`` open streams."""

    def __init__(
        self,
        *,
        max_streams: int = MAX_STREAMS,
        heartbeat: float = HEARTBEAT_SECONDS,
        coalesce: float = COALESCE_SECONDS,
    ) -> None:
        self.max_streams = max_streams
        self.heartbeat = heartbeat
        self.coalesce = coalesce
        self.streams: set[Stream] = set()
        self._detach: list[Callable[[], None]] = []
        self.closing = False

    # -- wiring to the node ----------------------------------------------------------------------
    def attach(self, repo: Repo, peers: PeerManager) -> None:
        repo.subscribe(self._on_doc)
        peers.on_connected.append(self._on_connected)
        peers.on_disconnected.append(self._on_disconnected)
        self._detach = [
            lambda: repo.unsubscribe(self._on_doc),
            lambda: _remove(peers.on_connected, self._on_connected),
            lambda: _remove(peers.on_disconnected, self._on_disconnected),
        ]

    def close(self) -> None:
        """Stop listening and end every stream (the node is stopping)."""
        self.closing = True
        for undo in self._detach:
            undo()
        self._detach = []
        for stream in list(self.streams):
            stream.close()

    def end_owner(self, owner: str) -> None:
        """End the streams a browser login opened (it logged out or expired)."""
        for stream in list(self.streams):
            if stream.owner == owner:
                stream.close()

    def publish(self, kind: str, key: str, data: dict[str, Any]) -> None:
        for stream in self.streams:
            stream.push(kind, key, data)

    def _on_doc(self, doc_id: str, local: bool) -> None:
        self.publish("doc", doc_id, {"doc": doc_id, "local": local})

    def _on_connected(self, conn: PeerConnection) -> None:
        self._peer(conn, True)

    def _on_disconnected(self, conn: PeerConnection) -> None:
        self._peer(conn, False)

    def _peer(self, conn: PeerConnection, connected: bool) -> None:
        dev = device_id(conn.peer_key)
        self.publish("peer", dev, {"device_id": dev, "connected": connected})

    # -- one stream ------------------------------------------------------------------------------
    def open(self, owner: str | None) -> Stream:
        if self.closing:
            raise Problem(503, "Node stopping", "the node is stopping",
                          headers={"Retry-After": "5"})
        if len(self.streams) >= self.max_streams:
            raise Problem(
                503, "Too many live streams",
                f"this node serves at most {self.max_streams} live streams at once; "
                "close another page or retry later",
                type=TYPE_OVERLOADED, headers={"Retry-After": "5"},
            )
        stream = Stream(owner)
        self.streams.add(stream)
        return stream

    async def serve(
        self, request: web.Request, owner: str | None, still_valid: Callable[[], bool]
    ) -> web.StreamResponse:
        """Answer ``request`` with an SSE stream until the client, the login or the node goes."""
        stream = self.open(owner)
        watcher = asyncio.create_task(_watch_client(request, stream), name="live-client")
        try:
            response = web.StreamResponse(
                headers={"Content-Type": "text/event-stream; charset=utf-8",
                         "X-Accel-Buffering": "no"},
            )
            await response.prepare(request)
            await response.write(f"retry: {RETRY_MS}\n: maia-node live events\n\n".encode())
            await self._pump(stream, response, still_valid)
            return response
        except ConnectionError:
            log.debug("live stream client left")  # nothing to answer it with
            return response
        finally:
            watcher.cancel()
            self.streams.discard(stream)

    async def _pump(
        self, stream: Stream, response: web.StreamResponse, still_valid: Callable[[], bool]
    ) -> None:
        event_id = 0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.heartbeat):
                    await stream.wake.wait()
            if stream.closed or not still_valid():
                return
            if not stream.wake.is_set():
                await response.write(b": heartbeat\n\n")
                continue
            stream.wake.clear()
            chunks = []
            for kind, data in stream.take():
                event_id += 1
                chunks.append(f"id: {event_id}\nevent: {kind}\ndata: "
                              f"{json.dumps(data, separators=(',', ':'))}\n\n")
            if chunks:
                await response.write("".join(chunks).encode())
            # Let a burst gather: at most one event per document per interval.
            await asyncio.sleep(self.coalesce)

    def status(self) -> dict[str, Any]:
        return {"streams": len(self.streams), "max_streams": self.max_streams}


async def _watch_client(request: web.Request, stream: Stream) -> None:
    """End ``stream`` as soon as its client's connection closes (SPEC-003 §11.7).

    aiohttp does not cancel a handler whose client left, and a stream with nothing to send
    would otherwise notice only at its next write (up to a heartbeat later), holding one of the
    16 places meanwhile: a page reloaded a few times in a row locked itself out.
    """
    while not stream.closed:
        transport = request.transport
        if transport is None or transport.is_closing():
            log.debug("live stream client left")
            stream.close()
            return
        await asyncio.sleep(CLOSED_POLL_SECONDS)


def _remove(callbacks: list, callback: Callable) -> None:
    with contextlib.suppress(ValueError):
        callbacks.remove(callback)
