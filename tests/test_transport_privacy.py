"""What an observer on the LAN sees of maia-node traffic (SPEC-005 transport: the channel is
encrypted, so an observer learns nothing of the content).

A forwarding proxy on loopback sits between client and server and records every raw byte in
both directions, as a passive tap on the network would. The same proxy carrying a plain
WebSocket is the control that proves the tap would have seen the content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from crdt.keys import DeviceKey
from node.transport import HandshakeError, accept, connect

SENTENCE = "the quiet heron remembers maia-secret-7781"
SECRET = SENTENCE.encode()
WAIT = 5.0


def leaks(capture: bytes) -> list[bytes]:
    """Every 12-byte window of the sentence that appears in ``capture``."""
    windows = {SECRET[i : i + 12] for i in range(len(SECRET) - 11)}
    return sorted(w for w in windows if w in capture)


@dataclass
class Tap:
    """A TCP forwarder that keeps a copy of every byte it relays, per direction."""

    target_port: int
    upstream: bytearray = field(default_factory=bytearray)  # client -> server
    downstream: bytearray = field(default_factory=bytearray)  # server -> client
    port: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def everything(self) -> bytes:
        return bytes(self.upstream) + bytes(self.downstream)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: bytearray
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                record.extend(chunk)
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _relay(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        s_reader, s_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(
            self._pipe(c_reader, s_writer, self.upstream),
            self._pipe(s_reader, c_writer, self.downstream),
        )

    def _spawn(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._relay(c_reader, c_writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


@dataclass
class Setup:
    tap: Tap
    server_key: DeviceKey
    mesh_id: bytes
    received: asyncio.Queue[object] = field(default_factory=asyncio.Queue)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.tap.port}{path}"


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    server_key, mesh_id = DeviceKey.generate(), os.urandom(32)
    received: asyncio.Queue[object] = asyncio.Queue()

    async def secure(request: web.Request) -> web.StreamResponse:
        try:
            ws, channel = await accept(request, key=server_key, mesh_id=mesh_id)
        except HandshakeError as exc:
            return exc.response
        async for message in channel:
            received.put_nowait(message)
            await channel.send(message)
        return ws

    async def plain(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                received.put_nowait(msg.data)
                await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/sync", secure)
    app.router.add_get("/plain", plain)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    tap = Tap(target_port=runner.addresses[0][1])
    proxy = await asyncio.start_server(tap._spawn, "127.0.0.1", 0)
    tap.port = proxy.sockets[0].getsockname()[1]
    try:
        yield Setup(tap=tap, server_key=server_key, mesh_id=mesh_id, received=received)
    finally:
        proxy.close()
        for task in list(tap._tasks):
            task.cancel()
        await asyncio.gather(*tap._tasks, return_exceptions=True)
        await runner.cleanup()


async def test_observer_sees_no_content_of_the_secure_channel(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    """SPEC-005 transport: an observer of every byte between two nodes learns nothing of the
    content: the sentence appears neither whole nor as any 12-byte window, in either direction,
    although the message did cross and come back through the same tap. Nor do the logs carry
    the content or the device's private key."""
    caplog.set_level(logging.DEBUG)
    client_key = DeviceKey.generate()
    async with aiohttp.ClientSession() as session:
        channel = await connect(session, setup.url("/sync"), key=client_key, mesh_id=setup.mesh_id)
        note = {"note": SENTENCE, "raw": SECRET, "list": [SENTENCE] * 3}
        await channel.send(note)
        assert await asyncio.wait_for(setup.received.get(), WAIT) == note
        assert await asyncio.wait_for(channel.recv(), WAIT) == note
        await channel.close()

    capture = setup.tap.everything
    assert b"GET /sync" in capture  # the tap did see this connection
    # Client-to-server WebSocket frames are XOR-masked anyway, so the server's echo (sent
    # unmasked) is what makes this test able to fail: it must have come back through the tap.
    assert len(setup.tap.downstream) > len(SECRET) * 5
    assert SECRET not in capture
    assert SENTENCE.encode("utf-16-le") not in capture
    assert leaks(capture) == []

    seed = bytes(client_key._signing)  # the private key, only to prove it is not logged
    logged = caplog.text
    assert SENTENCE not in logged
    assert seed.hex() not in logged and seed.hex().upper() not in logged
    assert seed not in logged.encode("latin-1", "replace")


async def test_control_plain_websocket_through_the_same_tap_shows_the_content(
    setup: Setup,
) -> None:
    """SPEC-005 transport (control): the same tap on an unencrypted WebSocket does capture the
    sentence, so the secure test's silence comes from encryption, not from a blind tap."""
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(setup.url("/plain"))
        await ws.send_str(SENTENCE)
        assert await asyncio.wait_for(setup.received.get(), WAIT) == SENTENCE
        reply = await asyncio.wait_for(ws.receive(), WAIT)
        assert reply.data == SENTENCE
        await ws.close()

    assert SECRET in setup.tap.downstream  # the server's echo, unmasked, in clear
    assert leaks(setup.tap.everything) != []
