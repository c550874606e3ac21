"""What an observer on the LAN sees of maia-node traffic (SPEC-005 transport: the channel is
encrypted, so an observer learns nothing of the content, and AUTH is sealed, so it learns no
certificate and with it no mesh or device name).

A forwarding proxy on loopback sits between client and server and records every raw byte in
both directions, as a passive tap on the network would. The observer also undoes the
WebSocket masking of client frames (the mask key travels in each frame). The same proxy
carrying a plain WebSocket is the control that proves the tap would have seen the content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import msgpack
import pytest
from aiohttp import WSMsgType, web

from crdt.keys import DeviceKey
from crdt.roster import new_endorsement, new_genesis
from node.transport import HandshakeError, accept, connect

SENTENCE = "the quiet heron remembers maia-secret-7781"
SECRET = SENTENCE.encode()
WAIT = 5.0
#: Distinctive names that roster certificates carry; none may cross the wire in the clear.
MESH_NAME = "hearth-of-ondine-5520"
SERVER_DEVICE = "willow-laptop-7781"
CLIENT_DEVICE = "heron-phone-4410"
NAMES = [MESH_NAME.encode(), SERVER_DEVICE.encode(), CLIENT_DEVICE.encode()]


def leaks(capture: bytes) -> list[bytes]:
    """Every 12-byte window of the sentence that appears in ``capture``."""
    windows = {SECRET[i : i + 12] for i in range(len(SECRET) - 11)}
    return sorted(w for w in windows if w in capture)


def websocket_payloads(stream: bytes) -> bytes:
    """The payloads of the WebSocket frames in one captured direction of one connection, after
    its HTTP upgrade headers, with client masking undone, concatenated."""
    out = bytearray()
    i = stream.index(b"\r\n\r\n") + 4
    while i + 2 <= len(stream):
        masked, length = stream[i + 1] & 0x80, stream[i + 1] & 0x7F
        i += 2
        if length >= 126:
            width = 2 if length == 126 else 8
            length = int.from_bytes(stream[i : i + width], "big")
            i += width
        mask = stream[i : i + 4] if masked else b"\x00" * 4
        i += 4 if masked else 0
        payload = stream[i : i + length]
        i += length
        out += bytes(b ^ mask[j % 4] for j, b in enumerate(payload)) if masked else payload
    return bytes(out)


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

    @property
    def observed(self) -> bytes:
        """Everything, plus both directions' frame payloads unmasked (one connection only)."""
        up, down = bytes(self.upstream), bytes(self.downstream)
        return up + down + websocket_payloads(up) + websocket_payloads(down)

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
    #: The responder's roster certificates, sent in its AUTH.
    server_certs: list[bytes] = field(default_factory=list)
    #: The certificates each accepted peer presented, one list per handshake.
    peer_certs: asyncio.Queue[list[bytes]] = field(default_factory=asyncio.Queue)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.tap.port}{path}"


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    server_key, mesh_id = DeviceKey.generate(), os.urandom(32)
    received: asyncio.Queue[object] = asyncio.Queue()
    server_certs: list[bytes] = []
    peer_certs: asyncio.Queue[list[bytes]] = asyncio.Queue()

    async def secure(request: web.Request) -> web.StreamResponse:
        try:
            ws, channel = await accept(request, key=server_key, mesh_id=mesh_id, certs=server_certs)
        except HandshakeError as exc:
            return exc.response
        peer_certs.put_nowait(channel.peer_certs)
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
            elif msg.type is WSMsgType.BINARY:
                received.put_nowait(msg.data)
                await ws.send_bytes(msg.data)
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
        yield Setup(
            tap=tap,
            server_key=server_key,
            mesh_id=mesh_id,
            received=received,
            server_certs=server_certs,
            peer_certs=peer_certs,
        )
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


def roster_certs(setup: Setup, client_key: DeviceKey) -> tuple[bytes, bytes]:
    """Real roster certificates naming the mesh and both devices: (server's, client's)."""
    genesis = new_genesis(setup.server_key, MESH_NAME, SERVER_DEVICE).encode()
    endorsement = new_endorsement(
        setup.server_key, setup.mesh_id, client_key.public_key, CLIENT_DEVICE
    ).encode()
    assert MESH_NAME.encode() in genesis and SERVER_DEVICE.encode() in genesis
    assert CLIENT_DEVICE.encode() in endorsement
    return genesis, endorsement


async def test_observer_sees_no_certificate_in_the_handshake(setup: Setup) -> None:
    """SPEC-005 transport (005.9.5): AUTH is sealed, so an observer of the whole handshake, with
    client frames unmasked, finds neither the mesh name nor either device name that the
    exchanged roster certificates carry, although both sides received those certificates."""
    client_key = DeviceKey.generate()
    server_cert, client_cert = roster_certs(setup, client_key)
    setup.server_certs.append(server_cert)
    async with aiohttp.ClientSession() as session:
        channel = await connect(
            session,
            setup.url("/sync"),
            key=client_key,
            mesh_id=setup.mesh_id,
            certs=[server_cert, client_cert],
        )
        assert channel.peer_certs == [server_cert]
        assert await asyncio.wait_for(setup.peer_certs.get(), WAIT) == [server_cert, client_cert]
        await channel.close()

    observed = setup.tap.observed
    assert b"GET /sync" in observed  # the tap did see this connection
    assert len(setup.tap.downstream) > len(server_cert)  # the server's AUTH came through it
    assert [name for name in NAMES if name in observed] == []


async def test_control_plaintext_auth_through_the_same_tap_shows_the_names(setup: Setup) -> None:
    """SPEC-005 transport (control): the same certificates in a plaintext AUTH over a plain
    WebSocket, echoed back, are found by the same observer in both directions (upstream only
    once unmasked), so the sealed handshake's silence comes from the sealing."""
    client_key = DeviceKey.generate()
    server_cert, client_cert = roster_certs(setup, client_key)
    auth = msgpack.packb(
        {"t": "auth", "sig": b"s" * 64, "certs": [server_cert, client_cert]}, use_bin_type=True
    )
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(setup.url("/plain"))
        await ws.send_bytes(auth)
        assert await asyncio.wait_for(setup.received.get(), WAIT) == auth
        reply = await asyncio.wait_for(ws.receive(), WAIT)
        assert reply.data == auth
        await ws.close()

    upstream, downstream = bytes(setup.tap.upstream), bytes(setup.tap.downstream)
    assert all(name in downstream for name in NAMES)  # the echo, unmasked, in clear
    assert not any(name in upstream for name in NAMES)  # masked on the wire...
    assert all(name in websocket_payloads(upstream) for name in NAMES)  # ...but not hidden
    assert all(name in setup.tap.observed for name in NAMES)
