"""The node-to-node transport (SPEC-005 transport): handshake, encrypted channel, and how both
refuse what they must refuse.

Everything runs over a real aiohttp server on 127.0.0.1 and a real aiohttp client. Where a test
needs a peer that breaks the protocol, the peer is written here by hand from the wire contract
(not from node.transport), so these tests also pin the exact bytes the contract describes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgpack
import pytest
from aiohttp import WSMsgType, web
from nacl.bindings import crypto_scalarmult
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey
from nacl.secret import SecretBox

from crdt.keys import DeviceKey, verify_signature
from node.transport import (
    ChannelClosed,
    ChannelError,
    HandshakeError,
    SecureChannel,
    TransportError,
    accept,
    connect,
    handshake,
)

WAIT = 5.0  # upper bound on any single wait in these tests, so a bug fails instead of hanging

Behaviour = Callable[[SecureChannel], Awaitable[None]]


# -- the wire contract, written out independently --------------------------------------------
def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def hello_bytes(key: bytes, mesh: bytes, eph: bytes, /, **override: Any) -> bytes:
    msg: dict[str, Any] = {
        "t": "hello",
        "v": 1,
        "mesh": mesh,
        "key": key,
        "eph": eph,
        "nonce": os.urandom(32),
    }
    msg.update(override)
    return pack({k: v for k, v in msg.items() if v is not None})


def transcript_of(initiator_hello: bytes, responder_hello: bytes) -> bytes:
    data = b"maia-handshake-v1" + initiator_hello + responder_hello
    return hashlib.blake2b(data, digest_size=32).digest()


def auth_signature(signer: DeviceKey, transcript: bytes, role: bytes) -> bytes:
    return signer.sign(b"maia-auth-v1" + transcript + role)


def direction_keys(ours: PrivateKey, peer_eph: bytes, transcript: bytes) -> tuple[bytes, bytes]:
    shared = crypto_scalarmult(bytes(ours), peer_eph)
    i2r = hashlib.blake2b(shared, digest_size=32, key=transcript, person=b"maia-i2r").digest()
    r2i = hashlib.blake2b(shared, digest_size=32, key=transcript, person=b"maia-r2i").digest()
    return i2r, r2i


def nonce(counter: int) -> bytes:
    return counter.to_bytes(24, "big")


def seal(key: bytes, counter: int, obj: Any) -> bytes:
    """A sealed frame: SecretBox under the direction's key, implicit counter nonce, not sent."""
    return SecretBox(key).encrypt(pack(obj), nonce(counter)).ciphertext


def open_sealed(key: bytes, counter: int, frame: bytes) -> Any:
    return msgpack.unpackb(SecretBox(key).decrypt(frame, nonce(counter)), raw=False)


def auth_frame(
    key: bytes, signer: DeviceKey, transcript: bytes, role: bytes, **extra: Any
) -> bytes:
    """AUTH as the first sealed frame (counter 0) of the sender's direction."""
    auth = {"t": "auth", "sig": auth_signature(signer, transcript, role), "certs": []}
    auth.update(extra)
    return seal(key, 0, auth)


AnyWebSocket = aiohttp.ClientWebSocketResponse | web.WebSocketResponse


async def next_binary(ws: AnyWebSocket) -> bytes:
    msg = await asyncio.wait_for(ws.receive(), WAIT)
    assert msg.type is WSMsgType.BINARY, msg
    return msg.data


async def frames_until_close(ws: AnyWebSocket) -> tuple[list[bytes], int | None, str]:
    """Read until the other end closes; return the binary frames before, close code, reason."""
    frames: list[bytes] = []
    async with asyncio.timeout(WAIT):
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.BINARY:
                frames.append(msg.data)
            elif msg.type is WSMsgType.CLOSE:
                return frames, msg.data, msg.extra
            elif msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return frames, ws.close_code, ""


async def wait_close(ws: AnyWebSocket) -> tuple[int | None, str]:
    """Read until the other end closes; return its close code and reason."""
    _frames, code, reason = await frames_until_close(ws)
    return code, reason


# -- a real server -----------------------------------------------------------------------------
async def echo(channel: SecureChannel) -> None:
    async for message in channel:
        await channel.send(message)


@dataclass
class Server:
    url: str
    key: DeviceKey
    mesh_id: bytes
    accept_kwargs: dict[str, Any] = field(default_factory=dict)
    behaviour: Behaviour = echo
    handshakes: asyncio.Queue[SecureChannel | HandshakeError] = field(default_factory=asyncio.Queue)
    endings: asyncio.Queue[TransportError | None] = field(default_factory=asyncio.Queue)
    received: list[Any] = field(default_factory=list)
    #: What the hand-written responder at ``contract_url`` breaks (None: nothing).
    responder_forgery: str | None = None
    reports: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    @property
    def contract_url(self) -> str:
        return self.url.replace("/sync", "/contract")

    async def handshake_result(self) -> SecureChannel | HandshakeError:
        return await asyncio.wait_for(self.handshakes.get(), WAIT)

    async def ending(self) -> TransportError | None:
        return await asyncio.wait_for(self.endings.get(), WAIT)

    async def contract_report(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.reports.get(), WAIT)


async def contract_responder(srv: Server, request: web.Request) -> web.WebSocketResponse:
    """A responder written from the wire contract alone, for testing the initiator.

    It sends HELLO, derives the keys, sends its AUTH sealed under k_r2i at counter 0, opens the
    initiator's AUTH under k_i2r at counter 0, then echoes data frames from counter 1 on. With
    ``srv.responder_forgery`` it signs AUTH by another key ("other_key"), by its own key over
    the initiator's role byte ("initiator_role"), or offers a low-order ephemeral key
    ("low_order_eph", and then sends no AUTH). What it saw goes to ``srv.reports``.
    """
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    forgery = srv.responder_forgery
    report: dict[str, Any] = {}
    their_hello = await next_binary(ws)
    fields = msgpack.unpackb(their_hello, raw=False)
    eph = PrivateKey.generate()
    my_eph = bytes(32) if forgery == "low_order_eph" else bytes(eph.public_key)
    my_hello = hello_bytes(srv.key.public_key, srv.mesh_id, my_eph)
    await ws.send_bytes(my_hello)
    if forgery != "low_order_eph":
        transcript = transcript_of(their_hello, my_hello)
        i2r, r2i = direction_keys(eph, fields["eph"], transcript)
        signer, role = {
            None: (srv.key, b"R"),
            "other_key": (DeviceKey.generate(), b"R"),
            "initiator_role": (srv.key, b"I"),
        }[forgery]
        await ws.send_bytes(auth_frame(r2i, signer, transcript, role, certs=[b"contract-cert"]))
        report["transcript"] = transcript
        report["initiator_key"] = fields["key"]
        try:
            report["initiator_auth"] = open_sealed(i2r, 0, await next_binary(ws))
        except CryptoError:
            report["initiator_auth"] = None  # not sealed under k_i2r at counter 0
        counter = 1
        while forgery is None:
            msg = await asyncio.wait_for(ws.receive(), WAIT)
            if msg.type is not WSMsgType.BINARY:
                report["close"] = (msg.data, msg.extra)
                break
            await ws.send_bytes(seal(r2i, counter, open_sealed(i2r, counter, msg.data)))
            counter += 1
    if "close" not in report:
        frames, code, reason = await frames_until_close(ws)
        report["frames_after"], report["close"] = frames, (code, reason)
    srv.reports.put_nowait(report)
    return ws


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    app = web.Application()
    srv = Server(url="", key=DeviceKey.generate(), mesh_id=os.urandom(32))

    async def sync(request: web.Request) -> web.StreamResponse:
        try:
            ws, channel = await accept(
                request, key=srv.key, mesh_id=srv.mesh_id, **srv.accept_kwargs
            )
        except HandshakeError as exc:
            srv.handshakes.put_nowait(exc)
            return exc.response
        srv.handshakes.put_nowait(channel)
        try:
            await srv.behaviour(channel)
        except TransportError as exc:
            srv.endings.put_nowait(exc)
        else:
            srv.endings.put_nowait(None)
        await channel.close()
        return ws

    async def silent(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:  # never answers, just waits for the client to give up
            pass
        return ws

    async def contract(request: web.Request) -> web.StreamResponse:
        return await contract_responder(srv, request)

    app.router.add_get("/sync", sync)
    app.router.add_get("/silent", silent)
    app.router.add_get("/contract", contract)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    srv.url = f"http://{host}:{port}/sync"
    try:
        yield srv
    finally:
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def collect(srv: Server) -> Behaviour:
    """A server behaviour that records every message until the channel ends."""

    async def behaviour(channel: SecureChannel) -> None:
        async for message in channel:
            srv.received.append(message)

    return behaviour


# -- a client socket that misbehaves ----------------------------------------------------------
#: Frames each side sends before the channel's data frames: HELLO (plaintext), AUTH (sealed at
#: counter 0). Data frame n is therefore sealed at counter n + 1.
HANDSHAKE_FRAMES = 2


def flip_last_bit(frame: bytes) -> bytes:
    return frame[:-1] + bytes([frame[-1] ^ 0x01])


class Meddler:
    """FrameSocket around the client's socket that alters, repeats, drops or reorders frames.

    The data-frame modes ("tampered", "replayed", "reordered", "dropped") leave the handshake
    (HELLO and sealed AUTH) alone and meddle from the channel's first data frame on.
    "auth_out" alters the client's sealed AUTH on its way out, "auth_in" the responder's sealed
    AUTH on its way in: a man in the middle can do that much, but not open or forge AUTH.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, mode: str | None = None) -> None:
        self.ws = ws
        self.mode = mode
        self.sent: list[bytes] = []
        self.incoming: list[bytes] = []
        self._held: bytes | None = None

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)
        n = len(self.sent) - 1 - HANDSHAKE_FRAMES  # data frame number; negative in the handshake
        if self.mode == "auth_out" and n == -1:
            await self.ws.send_bytes(flip_last_bit(data))
        elif n < 0 or self.mode is None:
            await self.ws.send_bytes(data)
        elif self.mode == "tampered" and n == 0:
            await self.ws.send_bytes(flip_last_bit(data))
        elif self.mode == "replayed" and n == 0:
            await self.ws.send_bytes(data)
            await self.ws.send_bytes(data)
        elif self.mode == "reordered" and n == 0:
            self._held = data
        elif self.mode == "reordered" and n == 1:
            assert self._held is not None
            await self.ws.send_bytes(data)
            await self.ws.send_bytes(self._held)
        elif self.mode == "dropped" and n == 0:
            pass
        else:
            await self.ws.send_bytes(data)

    async def receive(self) -> aiohttp.WSMessage:
        msg = await self.ws.receive()
        if msg.type is WSMsgType.BINARY:
            self.incoming.append(msg.data)
            if self.mode == "auth_in" and len(self.incoming) == HANDSHAKE_FRAMES:
                return aiohttp.WSMessage(WSMsgType.BINARY, flip_last_bit(msg.data), None)
        return msg

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        return await self.ws.close(code=code, message=message)


async def meddled_channel(
    session: aiohttp.ClientSession, srv: Server, client_key: DeviceKey, meddler_mode: str
) -> tuple[Meddler, SecureChannel]:
    ws = await session.ws_connect(srv.url, max_msg_size=(8 << 20) + 17)
    meddler = Meddler(ws, meddler_mode)
    channel = await handshake(meddler, key=client_key, mesh_id=srv.mesh_id, initiator=True)
    return meddler, channel


# -- happy path --------------------------------------------------------------------------------
async def test_messages_flow_both_ways_including_one_mib(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """SPEC-005 transport: after the handshake both sides send and receive in order, each side
    learns the other's proven key and roster certificates, and a 1 MiB message crosses whole."""

    async def greet_then_echo(channel: SecureChannel) -> None:
        for i in range(3):
            await channel.send({"from": "responder", "i": i})
        await echo(channel)

    server.behaviour = greet_then_echo
    server.accept_kwargs = {"certs": [b"responder-cert"]}
    client_key = DeviceKey.generate()
    client = await connect(
        session,
        server.url,
        key=client_key,
        mesh_id=server.mesh_id,
        certs=[b"client-cert-1", b"client-cert-2"],
    )
    served = await server.handshake_result()
    assert isinstance(served, SecureChannel)
    assert client.peer_key == server.key.public_key
    assert client.peer_device_id == server.key.device_id
    assert client.peer_certs == [b"responder-cert"]
    assert served.peer_key == client_key.public_key
    assert served.peer_certs == [b"client-cert-1", b"client-cert-2"]

    for i in range(3):
        assert await asyncio.wait_for(client.recv(), WAIT) == {"from": "responder", "i": i}
    big = os.urandom(1 << 20)
    messages: list[Any] = [
        "plain text",
        {"nested": [1, 2, {"b": b"\x00\xff"}]},
        42,
        None,
        big,
        ["last", True],
    ]
    for message in messages:
        await client.send(message)
    for message in messages:
        assert await asyncio.wait_for(client.recv(), WAIT) == message

    await client.close()
    assert client.closed
    assert await server.ending() is None  # the responder saw a clean end, not an error
    with pytest.raises(ChannelClosed):
        await client.recv()
    with pytest.raises(ChannelClosed):
        await client.send("after close")


async def test_concurrent_senders_keep_counters_in_order(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """SPEC-005 transport: frames carry implicit counters, so concurrent sends on one channel
    must reach the wire in counter order or the peer would reject them."""
    server.behaviour = collect(server)
    client = await connect(session, server.url, key=DeviceKey.generate(), mesh_id=server.mesh_id)
    await asyncio.gather(*(client.send({"n": n, "pad": os.urandom(n * 997)}) for n in range(30)))
    await client.close()
    assert await server.ending() is None
    assert sorted(m["n"] for m in server.received) == list(range(30))


async def test_wire_format_matches_the_contract(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """SPEC-005 transport: a peer built only from the written contract (HELLO fields,
    transcript, role bytes, per-direction BLAKE2b keys, AUTH as sealed frame 0 of each
    direction, implicit 24-byte counter nonces, no nonce on the wire, data frames from counter
    1) interoperates with the responder byte for byte."""
    server.accept_kwargs = {"certs": [b"responder-cert"]}
    ws = await session.ws_connect(server.url)
    me = DeviceKey.generate()
    eph = PrivateKey.generate()
    my_hello = hello_bytes(me.public_key, server.mesh_id, bytes(eph.public_key))
    await ws.send_bytes(my_hello)
    their_hello = await next_binary(ws)
    fields = msgpack.unpackb(their_hello, raw=False)
    assert fields["t"] == "hello" and fields["v"] == 1
    assert fields["mesh"] == server.mesh_id and fields["key"] == server.key.public_key
    assert len(fields["eph"]) == 32 and len(fields["nonce"]) == 32
    transcript = transcript_of(my_hello, their_hello)
    i2r, r2i = direction_keys(eph, fields["eph"], transcript)

    # Both sides send AUTH at once: the responder's arrives before ours is sent.
    their_auth = await next_binary(ws)
    assert b"responder-cert" not in their_auth  # sealed, not plaintext msgpack
    auth = open_sealed(r2i, 0, their_auth)  # k_r2i, counter 0
    assert auth["t"] == "auth" and auth["certs"] == [b"responder-cert"]
    assert len(their_auth) == len(pack(auth)) + 16  # the MAC only: no nonce on the wire
    assert verify_signature(  # the responder signed with role b"R" over the same transcript
        server.key.public_key, b"maia-auth-v1" + transcript + b"R", auth["sig"]
    )
    my_auth = {"t": "auth", "sig": auth_signature(me, transcript, b"I"), "certs": [b"c"]}
    sealed_auth = SecretBox(i2r).encrypt(pack(my_auth), nonce(0)).ciphertext
    assert len(sealed_auth) == len(pack(my_auth)) + 16
    await ws.send_bytes(sealed_auth)
    served = await server.handshake_result()
    assert isinstance(served, SecureChannel) and served.peer_certs == [b"c"]
    assert served.peer_key == me.public_key

    for counter, text in enumerate(["first", "second"], start=1):  # counter 0 was AUTH
        plaintext = pack({"say": text})
        sealed = SecretBox(i2r).encrypt(plaintext, nonce(counter)).ciphertext
        assert len(sealed) == len(plaintext) + 16
        await ws.send_bytes(sealed)
        reply = await next_binary(ws)
        opened = SecretBox(r2i).decrypt(reply, nonce(counter))
        assert msgpack.unpackb(opened, raw=False) == {"say": text}
    await ws.close()


async def test_initiator_follows_the_contract(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """SPEC-005 transport: the initiator, against a responder written only from the contract,
    seals its AUTH under k_i2r at counter 0 (signed with role b"I" over the transcript), opens
    the responder's AUTH under k_r2i at counter 0, and sends data frames from counter 1."""
    client_key = DeviceKey.generate()
    client = await connect(
        session, server.contract_url, key=client_key, mesh_id=server.mesh_id, certs=[b"mine"]
    )
    assert client.peer_key == server.key.public_key
    assert client.peer_certs == [b"contract-cert"]
    for message in ("ping", {"n": 2}, b"\x00" * 300):
        await client.send(message)
        assert await asyncio.wait_for(client.recv(), WAIT) == message
    await client.close()

    report = await server.contract_report()
    auth = report["initiator_auth"]
    assert auth is not None, "the initiator's AUTH did not open under k_i2r at counter 0"
    assert auth["t"] == "auth" and auth["certs"] == [b"mine"]
    assert report["initiator_key"] == client_key.public_key
    assert verify_signature(
        client_key.public_key, b"maia-auth-v1" + report["transcript"] + b"I", auth["sig"]
    )
    assert report["close"] == (1000, "")


# -- handshake refusals ------------------------------------------------------------------------
async def test_wrong_mesh_is_refused_on_both_sides(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """SPEC-005 transport: a node of another mesh is refused with "wrong_mesh", by both ends."""
    with pytest.raises(HandshakeError) as refused:
        await connect(session, server.url, key=DeviceKey.generate(), mesh_id=os.urandom(32))
    assert refused.value.code == "wrong_mesh"
    served = await server.handshake_result()
    assert isinstance(served, HandshakeError) and served.code == "wrong_mesh"


async def test_connecting_to_ourselves_is_refused(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """SPEC-005 transport: a peer presenting our own device key is refused ("self_connection")."""
    with pytest.raises(HandshakeError) as refused:
        await connect(session, server.url, key=server.key, mesh_id=server.mesh_id)
    assert refused.value.code == "self_connection"
    served = await server.handshake_result()
    assert isinstance(served, HandshakeError) and served.code == "self_connection"


@pytest.mark.parametrize("forgery", ["other_key", "responder_role"])
async def test_auth_signed_by_another_key_is_refused(
    server: Server, session: aiohttp.ClientSession, forgery: str
) -> None:
    """SPEC-005 transport: AUTH must be signed by the key named in the same peer's HELLO, with
    the peer's own role byte. A correctly sealed AUTH (so both sides derived the same keys)
    signed by any other key, or by the right key over the responder's role, is refused with
    "bad_signature"."""
    ws = await session.ws_connect(server.url)
    claimed = DeviceKey.generate()
    eph = PrivateKey.generate()
    my_hello = hello_bytes(claimed.public_key, server.mesh_id, bytes(eph.public_key))
    await ws.send_bytes(my_hello)
    their_hello = await next_binary(ws)
    transcript = transcript_of(my_hello, their_hello)
    i2r, r2i = direction_keys(eph, msgpack.unpackb(their_hello, raw=False)["eph"], transcript)
    signer, role = (DeviceKey.generate(), b"I") if forgery == "other_key" else (claimed, b"R")
    await ws.send_bytes(auth_frame(i2r, signer, transcript, role))
    assert open_sealed(r2i, 0, await next_binary(ws))["t"] == "auth"  # the responder's own
    served = await server.handshake_result()
    assert isinstance(served, HandshakeError) and served.code == "bad_signature"
    assert await wait_close(ws) == (1008, "bad_signature")


@pytest.mark.parametrize("how", ["plaintext", "other_direction_key", "counter_1", "short", "empty"])
async def test_auth_that_does_not_open_is_refused(
    server: Server, session: aiohttp.ClientSession, how: str
) -> None:
    """SPEC-005 transport: AUTH is the first sealed frame; one that does not open under k_i2r
    at counter 0 (a plaintext AUTH, sealed under the other direction's key or at counter 1,
    or too short to hold a MAC) is refused with "decrypt_failed", a correct signature inside
    notwithstanding."""
    ws = await session.ws_connect(server.url)
    me = DeviceKey.generate()
    eph = PrivateKey.generate()
    my_hello = hello_bytes(me.public_key, server.mesh_id, bytes(eph.public_key))
    await ws.send_bytes(my_hello)
    their_hello = await next_binary(ws)
    transcript = transcript_of(my_hello, their_hello)
    i2r, r2i = direction_keys(eph, msgpack.unpackb(their_hello, raw=False)["eph"], transcript)
    auth = {"t": "auth", "sig": auth_signature(me, transcript, b"I"), "certs": []}
    frame = {
        "plaintext": pack(auth),
        "other_direction_key": seal(r2i, 0, auth),
        "counter_1": seal(i2r, 1, auth),
        "short": seal(i2r, 0, auth)[:15],
        "empty": b"",
    }[how]
    await ws.send_bytes(frame)
    served = await server.handshake_result()
    assert isinstance(served, HandshakeError) and served.code == "decrypt_failed"
    assert await wait_close(ws) == (1008, "decrypt_failed")


@pytest.mark.parametrize(
    "auth",
    [
        {"t": "hello", "sig": b"s" * 64, "certs": []},
        {"t": "auth", "sig": b"s" * 63, "certs": []},
        {"t": "auth", "sig": b"s" * 64, "certs": "not-a-list"},
        {"t": "auth", "sig": b"s" * 64, "certs": [1, 2]},
        ["auth", b"s" * 64, []],
    ],
)
async def test_sealed_auth_of_the_wrong_shape_is_malformed(
    server: Server, session: aiohttp.ClientSession, auth: Any
) -> None:
    """SPEC-005 transport: a frame 0 that opens but is not an AUTH map with a 64-byte sig and a
    list of byte-string certs is refused with "malformed"."""
    ws = await session.ws_connect(server.url)
    me, eph = DeviceKey.generate(), PrivateKey.generate()
    my_hello = hello_bytes(me.public_key, server.mesh_id, bytes(eph.public_key))
    await ws.send_bytes(my_hello)
    their_hello = await next_binary(ws)
    transcript = transcript_of(my_hello, their_hello)
    i2r, _ = direction_keys(eph, msgpack.unpackb(their_hello, raw=False)["eph"], transcript)
    await ws.send_bytes(seal(i2r, 0, auth))
    served = await server.handshake_result()
    assert isinstance(served, HandshakeError) and served.code == "malformed"
    assert await wait_close(ws) == (1002, "malformed")


@pytest.mark.parametrize(("size", "accepted"), [(1024, True), (1025, False)])
async def test_auth_size_limit(
    server: Server, session: aiohttp.ClientSession, size: int, accepted: bool
) -> None:
    """SPEC-005 transport: the frame limit applies to AUTH's plaintext as to any frame: at the
    limit it is accepted, one byte over it is refused with "too_large" (close code 1009)."""
    server.accept_kwargs = {"max_frame": 1024}
    ws = await session.ws_connect(server.url)
    me, eph = DeviceKey.generate(), PrivateKey.generate()
    my_hello = hello_bytes(me.public_key, server.mesh_id, bytes(eph.public_key))
    await ws.send_bytes(my_hello)
    their_hello = await next_binary(ws)
    transcript = transcript_of(my_hello, their_hello)
    i2r, _ = direction_keys(eph, msgpack.unpackb(their_hello, raw=False)["eph"], transcript)
    auth: dict[str, Any] = {"t": "auth", "sig": auth_signature(me, transcript, b"I")}
    cert = b"x" * next(k for k in range(2000) if len(pack({**auth, "certs": [b"x" * k]})) == size)
    auth["certs"] = [cert]
    assert len(pack(auth)) == size
    await ws.send_bytes(seal(i2r, 0, auth))
    served = await server.handshake_result()
    if accepted:
        assert isinstance(served, SecureChannel) and served.peer_certs == [cert]
        await ws.close()
    else:
        assert isinstance(served, HandshakeError) and served.code == "too_large"
        # aiohttp's own size check refuses this frame, and its close carries no reason
        assert (await wait_close(ws))[0] == 1009


async def test_recorded_auth_cannot_be_replayed_on_a_new_connection(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """SPEC-005 transport: AUTH is bound to the connection's fresh nonces and ephemeral keys.
    HELLO and sealed AUTH recorded from a genuine session do not open on another connection
    ("decrypt_failed"); and the genuine signature itself (which that session's peer could
    read), sealed afresh by an attacker under its own ephemeral key, does not verify over the
    new transcript ("bad_signature")."""
    genuine = DeviceKey.generate()
    ws = await session.ws_connect(server.url, max_msg_size=(8 << 20) + 17)
    recorder = Meddler(ws)
    channel = await handshake(recorder, key=genuine, mesh_id=server.mesh_id, initiator=True)
    assert isinstance(await server.handshake_result(), SecureChannel)
    await channel.close()
    await server.ending()
    recorded_hello, recorded_auth = recorder.sent[:HANDSHAKE_FRAMES]
    # Ed25519 is deterministic: this is the signature the recorded AUTH carries.
    genuine_sig = auth_signature(genuine, transcript_of(recorded_hello, recorder.incoming[0]), b"I")

    replay = await session.ws_connect(server.url)
    await replay.send_bytes(recorded_hello)
    await next_binary(replay)
    await replay.send_bytes(recorded_auth)
    served = await server.handshake_result()
    assert isinstance(served, HandshakeError) and served.code == "decrypt_failed"
    assert await wait_close(replay) == (1008, "decrypt_failed")

    resealed = await session.ws_connect(server.url)
    eph = PrivateKey.generate()
    my_hello = hello_bytes(genuine.public_key, server.mesh_id, bytes(eph.public_key))
    await resealed.send_bytes(my_hello)
    their_hello = await next_binary(resealed)
    transcript = transcript_of(my_hello, their_hello)
    i2r, _ = direction_keys(eph, msgpack.unpackb(their_hello, raw=False)["eph"], transcript)
    await resealed.send_bytes(seal(i2r, 0, {"t": "auth", "sig": genuine_sig, "certs": []}))
    served = await server.handshake_result()
    assert isinstance(served, HandshakeError) and served.code == "bad_signature"
    assert await wait_close(resealed) == (1008, "bad_signature")


@pytest.mark.parametrize("forgery", ["other_key", "initiator_role"])
async def test_initiator_refuses_a_forged_responder_auth(
    server: Server, session: aiohttp.ClientSession, forgery: str
) -> None:
    """SPEC-005 transport: the initiator verifies the responder's AUTH too, including the role
    byte. A responder that seals its AUTH correctly (so the keys agree) but signs it by another
    key, or by its own key over the initiator's role (a reflected challenge), is refused with
    "bad_signature"."""
    server.responder_forgery = forgery
    with pytest.raises(HandshakeError) as refused:
        await connect(
            session, server.contract_url, key=DeviceKey.generate(), mesh_id=server.mesh_id
        )
    assert refused.value.code == "bad_signature"
    report = await server.contract_report()
    assert report["initiator_auth"] is not None  # the keys agreed: only the signature is wrong
    assert report["frames_after"] == []
    assert report["close"] == (1008, "bad_signature")


async def test_initiator_refuses_a_low_order_responder_ephemeral(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """SPEC-005 transport: the initiator applies the low-order check too ("malformed") and
    sends no AUTH under a key anyone could compute."""
    server.responder_forgery = "low_order_eph"
    with pytest.raises(HandshakeError) as refused:
        await connect(
            session, server.contract_url, key=DeviceKey.generate(), mesh_id=server.mesh_id
        )
    assert refused.value.code == "malformed"
    report = await server.contract_report()
    assert report["frames_after"] == []  # no AUTH
    assert report["close"] == (1002, "malformed")


@pytest.mark.parametrize("direction", ["to_responder", "to_initiator"])
async def test_auth_altered_in_transit_fails_the_handshake(
    server: Server, session: aiohttp.ClientSession, direction: str
) -> None:
    """SPEC-005 transport: a man in the middle cannot read or forge the sealed AUTH, and one bit
    changed in transit makes it fail to open: the receiving side refuses with "decrypt_failed"
    and closes, so the connection ends with no data frame delivered. (Each side sends AUTH
    before reading the other's, so the side whose AUTH arrived intact finishes its handshake
    and then sees the close.)"""

    async def read_one(channel: SecureChannel) -> None:  # a clean end raises, not stops
        server.received.append(await channel.recv())

    server.behaviour = read_one
    ws = await session.ws_connect(server.url, max_msg_size=(8 << 20) + 17)
    meddler = Meddler(ws, "auth_out" if direction == "to_responder" else "auth_in")
    client_key = DeviceKey.generate()
    if direction == "to_initiator":
        with pytest.raises(HandshakeError) as refused:
            await handshake(meddler, key=client_key, mesh_id=server.mesh_id, initiator=True)
        assert refused.value.code == "decrypt_failed"
        assert ws.closed
        assert isinstance(await server.handshake_result(), SecureChannel)
        ending = await server.ending()
        assert isinstance(ending, ChannelClosed)
        assert (ending.close_code, ending.reason) == (1008, "decrypt_failed")
    else:
        client = await handshake(meddler, key=client_key, mesh_id=server.mesh_id, initiator=True)
        served = await server.handshake_result()
        assert isinstance(served, HandshakeError) and served.code == "decrypt_failed"
        with pytest.raises(ChannelClosed) as closed:
            await asyncio.wait_for(client.recv(), WAIT)
        assert (closed.value.close_code, closed.value.reason) == (1008, "decrypt_failed")
    assert server.received == []


@pytest.mark.parametrize(
    ("override", "code"),
    [
        ({"t": "auth"}, "malformed"),
        ({"v": 2}, "unsupported_version"),
        ({"v": True}, "malformed"),
        ({"v": None}, "malformed"),
        ({"key": b"k" * 31}, "malformed"),
        ({"eph": b"e" * 33}, "malformed"),
        ({"nonce": None}, "malformed"),
        ({"mesh": "not-bytes-but-a-str-of-32-chars!"}, "malformed"),
        # low-order points: the shared secret would be all zeros, known to anyone
        ({"eph": b"\x00" * 32}, "malformed"),
        ({"eph": b"\x01" + b"\x00" * 31}, "malformed"),
    ],
)
async def test_bad_hello_is_refused(
    server: Server, session: aiohttp.ClientSession, override: dict[str, Any], code: str
) -> None:
    """SPEC-005 transport: HELLO of the wrong type or version, or with a field of the wrong
    type or length, or a low-order ephemeral key, is refused with a named code right after the
    HELLOs: the responder sends its HELLO and no AUTH, and closes the socket."""
    ws = await session.ws_connect(server.url)
    me = DeviceKey.generate()
    my_hello = hello_bytes(
        me.public_key, server.mesh_id, bytes(PrivateKey.generate().public_key), **override
    )
    await ws.send_bytes(my_hello)
    served = await server.handshake_result()
    assert isinstance(served, HandshakeError) and served.code == code
    frames, close_code, reason = await frames_until_close(ws)
    assert [msgpack.unpackb(f, raw=False)["t"] for f in frames] == ["hello"]
    assert reason == code and close_code == 1002


@pytest.mark.parametrize(
    "frame", [b"\xc1 definitely not msgpack", b"", pack(["hello", 1]), "a text frame"]
)
async def test_garbage_instead_of_hello_is_malformed(
    server: Server, session: aiohttp.ClientSession, frame: bytes | str
) -> None:
    """SPEC-005 transport: bytes that are not a HELLO map, or a text frame, end the handshake
    with "malformed"."""
    ws = await session.ws_connect(server.url)
    if isinstance(frame, str):
        await ws.send_str(frame)
    else:
        await ws.send_bytes(frame)
    served = await server.handshake_result()
    assert isinstance(served, HandshakeError) and served.code == "malformed"
    assert await wait_close(ws) == (1002, "malformed")


async def test_oversized_hello_is_refused(server: Server, session: aiohttp.ClientSession) -> None:
    """SPEC-005 transport: the frame limit applies during the handshake too ("too_large")."""
    server.accept_kwargs = {"max_frame": 1024}
    ws = await session.ws_connect(server.url)
    me = DeviceKey.generate()
    # 1024 < len <= 1024 + 16: past our limit but within the WebSocket's, so our check decides
    padded = hello_bytes(me.public_key, server.mesh_id, os.urandom(32), pad=b"p" * 856)
    assert 1024 < len(padded) <= 1040
    await ws.send_bytes(padded)
    served = await server.handshake_result()
    assert isinstance(served, HandshakeError) and served.code == "too_large"
    assert await wait_close(ws) == (1009, "too_large")


# -- handshake time limit ----------------------------------------------------------------------
@pytest.mark.parametrize("send_hello", [True, False], ids=["hello-then-silence", "silence"])
async def test_silent_initiator_is_dropped_after_the_timeout(
    server: Server, session: aiohttp.ClientSession, send_hello: bool
) -> None:
    """SPEC-005 transport: the whole handshake must finish within the time limit; a peer that
    stalls (before or after its HELLO) is dropped with "handshake_timeout"."""
    server.accept_kwargs = {"timeout": 0.5}
    ws = await session.ws_connect(server.url)
    started = time.monotonic()
    if send_hello:
        me = DeviceKey.generate()
        await ws.send_bytes(hello_bytes(me.public_key, server.mesh_id, os.urandom(32)))
    served = await server.handshake_result()
    elapsed = time.monotonic() - started
    assert isinstance(served, HandshakeError) and served.code == "handshake_timeout"
    assert 0.4 <= elapsed < 2.0
    assert await wait_close(ws) == (1008, "handshake_timeout")


async def test_silent_responder_is_dropped_after_the_timeout(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """SPEC-005 transport: the initiator applies the same handshake time limit."""
    silent_url = server.url.replace("/sync", "/silent")
    started = time.monotonic()
    with pytest.raises(HandshakeError) as refused:
        await connect(
            session, silent_url, key=DeviceKey.generate(), mesh_id=server.mesh_id, timeout=0.5
        )
    assert refused.value.code == "handshake_timeout"
    assert time.monotonic() - started < 2.0


# -- channel integrity -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "delivered"),
    [("tampered", []), ("replayed", ["one"]), ("reordered", []), ("dropped", [])],
)
async def test_altered_frames_close_the_channel(
    server: Server, session: aiohttp.ClientSession, mode: str, delivered: list[str]
) -> None:
    """SPEC-005 transport: every frame is sealed under an implicit per-direction counter, so an
    altered, replayed, reordered or dropped-then-continued frame fails authentication: the
    receiver raises ChannelError("decrypt_failed"), delivers nothing from it, and closes."""
    server.behaviour = collect(server)
    _meddler, client = await meddled_channel(session, server, DeviceKey.generate(), mode)
    # The handshake (HELLO, sealed AUTH) passed untouched: the meddling hits data frames only.
    assert isinstance(await server.handshake_result(), SecureChannel)
    for text in ("one", "two", "three"):
        await client.send(text)
    ending = await server.ending()
    assert isinstance(ending, ChannelError) and ending.code == "decrypt_failed"
    assert server.received == delivered
    with pytest.raises(ChannelClosed) as closed:
        await asyncio.wait_for(client.recv(), WAIT)
    assert (closed.value.close_code, closed.value.reason) == (1008, "decrypt_failed")


async def test_channel_error_is_sticky(server: Server, session: aiohttp.ClientSession) -> None:
    """SPEC-005 transport: after an integrity failure the channel stays closed; later calls
    repeat the failure instead of reading on from an untrusted stream."""
    seen: list[ChannelError] = []

    async def read_twice(channel: SecureChannel) -> None:
        for _ in range(2):
            try:
                await channel.recv()
            except ChannelError as exc:
                seen.append(exc)
        assert channel.closed
        with pytest.raises(ChannelError):
            await channel.send("anything")

    server.behaviour = read_twice
    _meddler, client = await meddled_channel(session, server, DeviceKey.generate(), "tampered")
    await client.send("one")
    assert await server.ending() is None
    assert [e.code for e in seen] == ["decrypt_failed", "decrypt_failed"]


async def test_oversized_frame_closes_the_channel(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """SPEC-005 transport: a frame over the receiver's limit closes the channel ("too_large")
    before it is buffered whole."""
    server.behaviour = collect(server)
    server.accept_kwargs = {"max_frame": 4096}
    client = await connect(session, server.url, key=DeviceKey.generate(), mesh_id=server.mesh_id)
    await client.send(b"x" * 1000)
    await client.send(b"y" * 10_000)
    ending = await server.ending()
    assert isinstance(ending, ChannelError) and ending.code == "too_large"
    assert server.received == [b"x" * 1000]
    with pytest.raises(ChannelClosed) as closed:
        await asyncio.wait_for(client.recv(), WAIT)
    assert closed.value.close_code == 1009


async def test_message_exactly_at_the_limit_crosses(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """SPEC-005 transport: the limit is inclusive on both ends: a message whose plaintext is
    exactly the frame limit is sent and received (its sealed frame is the limit plus the MAC)."""
    server.accept_kwargs = {"max_frame": 4096}
    client = await connect(
        session, server.url, key=DeviceKey.generate(), mesh_id=server.mesh_id, max_frame=4096
    )
    message = b"m" * (4096 - len(pack(b"m" * 4096)) + 4096)
    assert len(pack(message)) == 4096
    await client.send(message)
    assert await asyncio.wait_for(client.recv(), WAIT) == message
    await client.close()


async def test_sending_over_the_limit_is_refused_locally(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """SPEC-005 transport: the sender checks the frame limit itself; the oversized message is
    refused before anything is sent and the channel remains usable."""
    client = await connect(
        session, server.url, key=DeviceKey.generate(), mesh_id=server.mesh_id, max_frame=2048
    )
    with pytest.raises(ValueError, match="frame limit"):
        await client.send(b"z" * 4096)
    await client.send("still fine")
    assert await asyncio.wait_for(client.recv(), WAIT) == "still fine"
    await client.close()


async def test_text_frame_after_handshake_is_malformed(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """SPEC-005 transport: only binary frames are allowed; a text frame closes the channel
    with "malformed"."""
    server.behaviour = collect(server)
    meddler, client = await meddled_channel(session, server, DeviceKey.generate(), None)
    await client.send("sealed")
    await meddler.ws.send_str("an unsealed text frame")
    ending = await server.ending()
    assert isinstance(ending, ChannelError) and ending.code == "malformed"
    assert server.received == ["sealed"]
    with pytest.raises(ChannelClosed) as closed:
        await asyncio.wait_for(client.recv(), WAIT)
    assert (closed.value.close_code, closed.value.reason) == (1002, "malformed")
