"""A hostile peer for tests: a real handshake with a chosen device key, then crafted frames.

The client is written from the wire contract (SPEC-005 005.9.2 to 005.9.7: plaintext HELLOs,
AUTH sealed as frame 0, then sealed frames from counter 1 under implicit per-direction
counters) with the pure key-schedule functions of ``node.transport.crypto``, and none of
``SecureChannel``'s sender-side protections, so a test can send what an honest node never
would: frames over the size limit, bytes that do not decrypt, plaintext that is not msgpack.
Also here: Automerge change chunks authored by any key, signed batches, and a read-only view
of a node's LMDB store for "nothing was stored" checks on a running node.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import lmdb
import msgpack
from aiohttp import WSMsgType, web
from automerge.core import ROOT, Document, ObjType, ScalarType
from nacl.public import PrivateKey
from nacl.secret import SecretBox

from crdt.batches import SignedBatch
from crdt.chunks import ChangeInfo, changes_message, parse_change
from crdt.keys import DeviceKey, verify_signature
from node.transport import accept
from node.transport.crypto import auth_message, frame_nonce, session_keys, transcript_hash

WAIT = 5.0  # upper bound on a single wait, so a bug fails a test instead of hanging it
AUTH_COUNTER = 0  # AUTH is each direction's sealed frame 0 ...
FIRST_DATA_COUNTER = 1  # ... and the channel's frames continue at 1 (SPEC-005 005.9.5)


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def hello_frame(key: bytes, mesh_id: bytes, eph: bytes | None = None) -> bytes:
    """A well-formed HELLO as the contract describes it."""
    return pack(
        {
            "t": "hello",
            "v": 1,
            "mesh": mesh_id,
            "key": key,
            "eph": eph if eph is not None else os.urandom(32),
            "nonce": os.urandom(32),
        }
    )


class NodeClosed(Exception):
    """The node closed the WebSocket (or it dropped) where a frame was expected."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"node closed the connection ({code}: {reason!r})")
        self.code = code
        self.reason = reason


class HostilePeer:
    """One authenticated (or refused) connection to a node, sending whatever a test asks."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, send_key: bytes, recv_key: bytes, node_key: bytes
    ) -> None:
        self.ws = ws
        self.node_key = node_key
        self._send_box = SecretBox(send_key)
        self._recv_box = SecretBox(recv_key)
        self._send_counter = FIRST_DATA_COUNTER
        self._recv_counter = FIRST_DATA_COUNTER
        self.pending: list[Any] = []
        self.auth_certs: Any = None
        self._sending = asyncio.Lock()  # a keepalive task and the test may send at once

    # -- sending -----------------------------------------------------------------------------
    async def send(self, obj: Any) -> None:
        """Seal and send one msgpack frame (no size check: that is the node's job)."""
        await self.send_sealed(pack(obj))

    async def send_sealed(self, plaintext: bytes) -> None:
        """Seal any bytes under the next counter, exactly as a real peer would."""
        async with self._sending:  # counters go out in order
            sealed = self._send_box.encrypt(plaintext, frame_nonce(self._send_counter))
            self._send_counter += 1
            await self.ws.send_bytes(sealed.ciphertext)

    async def keep_alive(self, every: float = 0.5) -> None:
        """Send a frame every ``every`` seconds, as a live link does: the node closes a peer
        silent for 8 s (SPEC-005 §9.14), and one that answers nothing within its probe time
        after any link change on this machine (another test's network namespaces make them),
        which a test of something else must not run into."""
        with contextlib.suppress(Exception):
            while True:
                await asyncio.sleep(every)
                await self.send({"t": "pong"})

    async def send_raw(self, data: bytes | str) -> None:
        """Put bytes (or a text frame) on the WebSocket without sealing them."""
        if isinstance(data, str):
            await self.ws.send_str(data)
        else:
            await self.ws.send_bytes(data)

    # -- receiving ---------------------------------------------------------------------------
    async def recv(self, timeout: float = WAIT) -> Any:
        """The node's next frame, decrypted; raises NodeClosed when it closes instead."""
        if self.pending:
            return self.pending.pop(0)
        msg = await asyncio.wait_for(self.ws.receive(), timeout)
        if msg.type is WSMsgType.BINARY:
            plain = self._recv_box.decrypt(msg.data, frame_nonce(self._recv_counter))
            self._recv_counter += 1
            return unpack(plain)
        if msg.type is WSMsgType.CLOSE:
            raise NodeClosed(msg.data, msg.extra or "")
        raise NodeClosed(self.ws.close_code, f"{msg.type.name}")

    async def next_frame(
        self, match: Callable[[Any], bool], timeout: float = WAIT
    ) -> dict[str, Any]:
        """Skip the node's own traffic (summary, sync) until a frame ``match``es."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if match(frame):
                    return frame

    async def answer(self, timeout: float = WAIT) -> dict[str, Any]:
        """The next reject or error frame the node sends."""
        return await self.next_frame(
            lambda f: isinstance(f, dict) and f.get("t") in ("reject", "error"), timeout
        )

    async def closed(self, timeout: float = WAIT) -> tuple[int | None, str, list[Any]]:
        """Read until the node closes; return its close code, reason and the frames before."""
        frames: list[Any] = []
        async with asyncio.timeout(timeout):
            while True:
                try:
                    frames.append(await self.recv(timeout))
                except NodeClosed as end:
                    return end.code, end.reason, frames

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 2.0)


async def handshake(
    ws: aiohttp.ClientWebSocketResponse,
    key: DeviceKey,
    mesh_id: bytes,
    certs: Sequence[bytes],
    timeout: float = WAIT,
) -> HostilePeer:
    """Run the initiator's side of the handshake with ``key``; raise NodeClosed if refused."""

    async def binary() -> bytes:
        msg = await asyncio.wait_for(ws.receive(), timeout)
        if msg.type is WSMsgType.BINARY:
            return msg.data
        if msg.type is WSMsgType.CLOSE:
            raise NodeClosed(msg.data, msg.extra or "")
        raise NodeClosed(ws.close_code, msg.type.name)

    eph = PrivateKey.generate()
    ours = hello_frame(key.public_key, mesh_id, bytes(eph.public_key))
    await ws.send_bytes(ours)
    theirs_raw = await binary()
    theirs = unpack(theirs_raw)
    transcript = transcript_hash(ours, theirs_raw)
    k_i2r, k_r2i = session_keys(eph, theirs["eph"], transcript)
    sig = key.sign(auth_message(transcript, initiator=True))
    auth = pack({"t": "auth", "sig": sig, "certs": list(certs)})
    await ws.send_bytes(SecretBox(k_i2r).encrypt(auth, frame_nonce(AUTH_COUNTER)).ciphertext)
    their_auth = unpack(SecretBox(k_r2i).decrypt(await binary(), frame_nonce(AUTH_COUNTER)))
    their_sig = their_auth["sig"]
    if not verify_signature(theirs["key"], auth_message(transcript, initiator=False), their_sig):
        raise AssertionError("the node's AUTH does not verify")
    peer = HostilePeer(ws, k_i2r, k_r2i, theirs["key"])
    peer.auth_certs = their_auth.get("certs")  # what the node showed before knowing us
    # SPEC-005 §9.8: the initiator then offers its admission chain; the node answers with its
    # own chain when it accepts us, or an error and a close (read by the caller).
    await peer.send({"t": "chain", "certs": list(certs)})
    return peer


@contextlib.asynccontextmanager
async def raw_socket(port: int) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """An open WebSocket to a node's peer endpoint, before any handshake."""
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(
            f"http://127.0.0.1:{port}/v1/peer", compress=0, max_msg_size=0, autoping=True
        )
        try:
            yield ws
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)


@contextlib.asynccontextmanager
async def hostile_peer(
    port: int, key: DeviceKey, mesh_id: bytes, certs: Sequence[bytes] = (), *,
    keepalive: bool = False,
) -> AsyncIterator[HostilePeer]:
    """Connect to a node's /v1/peer and complete a real handshake as ``key``; with
    ``keepalive``, a frame every 0.5 s keeps the node from closing it as silent."""
    async with raw_socket(port) as ws:
        peer = await handshake(ws, key, mesh_id, certs)
        reply = await peer.recv()
        if not (isinstance(reply, dict) and reply.get("t") == "chain"):
            peer.pending.append(reply)  # a refusal: the test reads it as the next frame
        alive = asyncio.create_task(peer.keep_alive()) if keepalive else None
        try:
            yield peer
        finally:
            if alive is not None:
                alive.cancel()
            await peer.close()


# -- documents, changes and batches authored by any key ------------------------------------------
def entry_changes(key: DeviceKey, entry_id: str, texts: Sequence[str]) -> list[ChangeInfo]:
    """Changes by ``key``: the first creates memory entry ``entry_id`` with ``texts[0]``
    (the layout node/memory.py lists), each further one sets its text to the next string."""
    doc = Document(actor_id=key.public_key)
    with doc.transaction() as tx:
        entry = tx.put_object(ROOT, entry_id, ObjType.Map)
        tx.put(entry, "text", ScalarType.Str, texts[0])
        tx.put(entry, "kind", ScalarType.Str, "note")
    for text in texts[1:]:
        with doc.transaction() as tx:
            tx.put(entry, "text", ScalarType.Str, text)
    return [parse_change(bytes(c.bytes)) for c in doc.get_changes([])]


def sign(
    key: DeviceKey, mesh_id: bytes, doc_id: str, changes: Iterable[ChangeInfo]
) -> SignedBatch:
    return SignedBatch.sign(key, mesh_id, doc_id, [c.hash for c in changes])


def sync_frame(
    doc_id: str,
    chunks: Sequence[bytes],
    batches: Sequence[SignedBatch | bytes],
    *,
    final: bool = True,
) -> dict[str, Any]:
    """A "changes only" sync frame, as an honest node sends a part of a larger message."""
    return {
        "t": "sync",
        "doc": doc_id,
        "msg": changes_message(list(chunks)),
        "batches": [b.encode() if isinstance(b, SignedBatch) else b for b in batches],
        "final": final,
    }


def chunks_of(changes: Iterable[ChangeInfo]) -> list[bytes]:
    return [c.chunk for c in changes]


def hashes_of(changes: Iterable[ChangeInfo]) -> list[bytes]:
    return [c.hash for c in changes]


# -- a read-only look into a node's store --------------------------------------------------------
@dataclass(frozen=True)
class StoreView:
    """Reads a node's LMDB environments read-only; safe while the node runs (LMDB is
    multi-process), so "nothing was stored" is checked in the store itself, not only via the
    API. Key layout as crdt/store.py: index ``doc_id\\0hash``, docs ``doc_id``, certs ``id``."""

    data_dir: Path

    @contextlib.contextmanager
    def _db(self, layer: str, name: bytes):
        env = lmdb.open(
            str(Path(self.data_dir) / layer), readonly=True, lock=True, max_dbs=10, subdir=True
        )
        try:
            db = env.open_db(name, create=False)
            with env.begin(db=db) as txn:
                yield txn
        finally:
            env.close()

    @staticmethod
    def _layer(doc_id: str) -> str:
        return "identity" if doc_id == "identity" else "memory"

    def known(self, doc_id: str, hashes: Iterable[bytes]) -> set[bytes]:
        with self._db(self._layer(doc_id), b"index") as txn:
            return {h for h in hashes if txn.get(doc_id.encode() + b"\x00" + h) is not None}

    def doc_ids(self) -> set[str]:
        out: set[str] = set()
        for layer in ("identity", "memory"):
            with self._db(layer, b"docs") as txn:
                out.update(k.decode() for k in txn.cursor().iternext(values=False))
        return out

    def cert_ids(self) -> set[str]:
        with self._db("identity", b"certs") as txn:
            return {k.decode() for k in txn.cursor().iternext(values=False)}


async def loopback_responder(key: DeviceKey, mesh_id: bytes) -> tuple[web.AppRunner, int, list]:
    """A transport responder on loopback proving ``key``: it completes handshakes, holds the
    channels (the list returned, which also counts them) until their peer closes. Returns the
    runner to clean up and the port it picked."""
    channels: list = []

    async def handle(request: web.Request) -> web.StreamResponse:
        ws, channel = await accept(request, key=key, mesh_id=mesh_id)
        channels.append(channel)
        with contextlib.suppress(Exception):
            await channel.recv()
        return ws

    app = web.Application()
    app.router.add_get("/v1/peer", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1], channels
