"""After a link change, a connection must prove its path within a few round trips (SPEC-005
§9.14), not a fixed 2 s.

Real parts: two members' PeerManagers on loopback (real stores, keys, handshake and sync), the
dialler reaching the other through a TCP relay that can stop forwarding one direction, the way
a peer's TCP holds its data in retransmission backoff after a tunnel drop: pings still go out,
no pong comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from aiohttp import web

from node.mesh import peers as peers_module
from node.mesh.peers import PeerManager
from tests.trust_helpers import Device


async def _listen(peers: PeerManager) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_get("/v1/peer", peers.handle_incoming)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


async def _relay(target: int) -> tuple[asyncio.Server, int, asyncio.Event]:
    """Forwards to ``target``; while the returned event is set, nothing goes back."""
    frozen = asyncio.Event()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   hold: asyncio.Event | None) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                while hold is not None and hold.is_set():
                    await asyncio.sleep(0.01)
                writer.write(data)
                await writer.drain()
        writer.close()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(pipe(reader, up_w, None), pipe(up_r, writer, frozen))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], frozen


async def _until(predicate, timeout: float) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


def test_a_link_change_probe_waits_a_few_round_trips_not_two_seconds(tmp_path: Path) -> None:
    home = Device.found(tmp_path, "home")
    laptop = home.admit(tmp_path, "laptop")

    async def main() -> None:
        server = PeerManager(home.repo, liveness_interval=0.1, liveness_timeout=30.0)
        client = PeerManager(laptop.repo, liveness_interval=0.1, liveness_timeout=30.0)
        await server.start()
        await client.start()
        runner, port = await _listen(server)
        relay, relay_port, frozen = await _relay(port)
        try:
            client.add_static(f"127.0.0.1:{relay_port}")
            await _until(lambda: home.key.public_key in client.connections, 20)
            conn = client.connections[home.key.public_key]
            # idle pings measured the path (the smallest sample counts: a busy machine
            # delays some)
            await _until(lambda: conn.rtt is not None and conn.rtt < 0.05, 10)
            # a peer that sent sync messages in the last 2 s may be busy applying one: it
            # gets the unmeasured 2 s (review finding); once sync is quiet, a few round trips
            assert conn.synced_at > 0
            await _until(lambda: time.monotonic() - conn.synced_at
                         > peers_module.PROBE_TIMEOUT, 10)
            wait = conn.probe_time()
            shown = [r for r in client.status() if r.get("connected")]
            assert [r["rtt_ms"] for r in shown] == [round(conn.rtt * 1000, 1)]  # maia peers
            assert peers_module.PROBE_MIN <= wait < 1.0, wait

            client.probe_all()  # a link changed, the path still works: the pong comes back
            await asyncio.sleep(wait + 0.3)
            assert client.connections.get(home.key.public_key) is conn

            frozen.set()  # the other side's answers now wait (TCP retransmission backoff)
            client.probe_all()
            took = await _until(lambda: client.connections.get(home.key.public_key)
                                is not conn, 5)
            # given up after its probe time: before, a fixed 2 s (PROBE_TIMEOUT)
            assert wait - 0.05 < took < (wait + peers_module.PROBE_TIMEOUT) / 2, (took, wait)
        finally:
            frozen.clear()
            await client.stop()
            await server.stop()
            relay.close()
            await runner.cleanup()

    try:
        asyncio.run(main())
    finally:
        home.close()
        laptop.close()


async def _dead_relay(target: int) -> tuple[asyncio.Server, int, asyncio.Event]:
    """Forwards to ``target`` both ways; once the event is set, nothing crosses either way
    and nothing is closed (a path that died: a tunnel down, a Wi-Fi gone)."""
    dead = asyncio.Event()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                if dead.is_set():
                    continue  # swallowed
                writer.write(data)
                await writer.drain()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], dead


def test_a_stale_connection_is_replaced_whoever_dialled_it(tmp_path: Path) -> None:
    """SPEC-005 §9.12: home dialled the laptop; the path died, and the laptop, which noticed,
    dials home afresh on another path. By the initiator rule home would keep its own
    connection and refuse the new one as a duplicate (until its liveness timeout, 30 s here);
    because nothing was heard on it for more than twice the liveness interval, it is stale
    and the new connection replaces it at once."""
    from crdt.keys import DeviceKey

    home = Device.found(tmp_path, "home")
    key = DeviceKey.generate()
    while key.public_key < home.key.public_key:  # the initiator rule favours home's dial
        key = DeviceKey.generate()
    laptop = home.admit(tmp_path, "laptop", key=key)

    async def main() -> None:
        kw = {"liveness_interval": 0.1, "liveness_timeout": 30.0}
        at_home, on_laptop = PeerManager(home.repo, **kw), PeerManager(laptop.repo, **kw)
        await at_home.start()
        await on_laptop.start()
        home_runner, home_port = await _listen(at_home)
        laptop_runner, laptop_port = await _listen(on_laptop)
        relay, relay_port, dead = await _dead_relay(laptop_port)
        try:
            at_home.add_static(f"127.0.0.1:{relay_port}")  # home dials the laptop
            await _until(lambda: laptop.key.public_key in at_home.connections, 20)
            old = at_home.connections[laptop.key.public_key]
            assert old.initiator
            await _until(lambda: home.key.public_key in on_laptop.connections, 20)
            dead.set()
            await asyncio.sleep(0.5)  # nothing heard for more than 2 x 0.1 s: stale
            # the laptop noticed (its probe, in life) and dials home on another path
            on_laptop.abandon(on_laptop.connections[home.key.public_key], "test: path died")
            on_laptop.add_static(f"127.0.0.1:{home_port}")
            took = await _until(
                lambda: at_home.connections.get(laptop.key.public_key) not in (None, old), 10)
            assert not at_home.connections[laptop.key.public_key].initiator
            assert took < 5.0, took  # not the 30 s liveness timeout
        finally:
            dead.clear()
            await on_laptop.stop()
            await at_home.stop()
            relay.close()
            await home_runner.cleanup()
            await laptop_runner.cleanup()

    try:
        asyncio.run(main())
    finally:
        home.close()
        laptop.close()
