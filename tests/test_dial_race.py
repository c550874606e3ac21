"""Dialling after a path comes back (SPEC-005 §9.13): racing connects, links that are down.

Real parts: a real PeerManager dials a real transport responder on loopback through a TCP relay
that swallows the first connection (the way a SYN lost on a path that just returned does:
nothing answers). Without a fresh attempt, the dial would wait out its whole handshake timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct

from crdt.identity import create_mesh
from crdt.keys import DeviceKey
from crdt.store import Store
from node.mesh.addresses import on_down_link
from node.mesh.peers import PeerManager
from tests.hostile import loopback_responder


async def _swallow_first(target_port: int) -> tuple[asyncio.Server, int, list]:
    """A relay to ``target_port`` whose first connection is held open and never answered."""
    held: list = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not held:
            held.append(writer)  # a black hole: the dialler hears nothing on this one
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], held


def test_a_dial_whose_first_attempt_goes_unanswered_is_won_by_a_fresh_one(tmp_path):
    async def main() -> None:
        store = Store(tmp_path)
        repo = create_mesh(store, DeviceKey.generate(), "home", "laptop")
        # A handshake timeout far longer than the wait below: only a fresh attempt can win.
        peers = PeerManager(repo, handshake_timeout=60.0)
        await peers.start()
        other = DeviceKey.generate()
        runner, port, channels = await loopback_responder(other, repo.mesh_id)
        relay, relay_port, held = await _swallow_first(port)
        try:
            channel = await asyncio.wait_for(peers._connect(f"127.0.0.1:{relay_port}"), 20)
            assert channel.peer_key == other.public_key  # the handshake proved the key
            assert held, "the first attempt reached the relay and was swallowed"
            await channel.close()
        finally:
            relay.close()
            for writer in held:
                writer.close()
            await peers.stop()
            await runner.cleanup()
            store.close()
        assert len(channels) >= 1

    asyncio.run(main())


def test_a_refused_dial_fails_at_once_without_racing(tmp_path):
    async def main() -> None:
        store = Store(tmp_path)
        peers = PeerManager(create_mesh(store, DeviceKey.generate(), "home", "laptop"),
                            handshake_timeout=60.0)
        await peers.start()
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()  # nothing listens there now: connection refused
        try:
            try:
                await asyncio.wait_for(peers._connect(f"127.0.0.1:{port}"), 20)
            except OSError:
                pass
            else:
                raise AssertionError("a dial to a closed port connected")
        finally:
            await peers.stop()
            store.close()

    asyncio.run(main())


def test_an_address_on_a_link_that_is_down_is_not_dialled():
    down = [ipaddress.ip_network("10.231.1.0/24"), ipaddress.ip_network("fd00:1::/64")]
    assert on_down_link("10.231.1.2:17412", down)
    assert on_down_link("[fd00:1::5]:17412", down)
    assert not on_down_link("10.99.0.1:17412", down)  # routed elsewhere: dialled as ever
    assert not on_down_link("10.231.1.2:17412", [])
    assert not on_down_link("not an address", down)
    assert not on_down_link("host.example:17412", down)  # a name: never guessed at


def test_an_abandoned_channel_is_aborted_and_the_peer_hears_the_end(tmp_path):
    """SPEC-005 §9.14: a connection given up for a dead path is reset (SO_LINGER 0), not left
    retransmitting; on a live path the peer still learns at once that it ended."""
    async def main() -> None:
        store = Store(tmp_path)
        repo = create_mesh(store, DeviceKey.generate(), "home", "laptop")
        peers = PeerManager(repo)
        await peers.start()
        other = DeviceKey.generate()
        runner, port, channels = await loopback_responder(other, repo.mesh_id)
        try:
            channel = await peers._connect(f"127.0.0.1:{port}")
            sock = channel._ws.get_extra_info("socket")
            await channel.abort(1001, "link changed")
            assert channel.closed
            assert sock.fileno() == -1 or sock.getsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, 8) == struct.pack("ii", 1, 0)
            for _ in range(200):  # the responder's recv ends: it heard the close or the reset
                if channels and channels[0].closed:
                    break
                await asyncio.sleep(0.05)
            assert channels and channels[0].closed
        finally:
            await peers.stop()
            await runner.cleanup()
            store.close()

    asyncio.run(main())
