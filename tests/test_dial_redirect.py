"""A peer dial never follows a redirect (SPEC-005 005.9.6, 005.12.10).

Real parts on loopback: a real PeerManager (and the plain ``connect`` the pairing client uses)
dials a real aiohttp server that answers ``/v1/peer`` with ``302`` to a second real server
standing in for a cloud metadata service. Following the redirect would make the node GET a
loopback or metadata URL that its address filter refuses; the dial must fail with a clear
``redirected`` error and the second server must see nothing.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from crdt.identity import create_mesh
from crdt.keys import DeviceKey
from crdt.store import Store
from node.mesh.peers import PeerManager
from node.transport import HandshakeError, connect


async def _server(handler) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


async def _redirecting() -> tuple[list, list, int]:
    """A "metadata" server that records every request, and a peer port redirecting to it."""
    hits: list[str] = []

    async def metadata(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="secret-token")

    meta_runner, meta_port = await _server(metadata)

    async def peer(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.1:{meta_port}/latest/meta-data/")

    peer_runner, peer_port = await _server(peer)
    return [meta_runner, peer_runner], hits, peer_port


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_peer_dial_refuses_a_redirect_and_never_follows_it(tmp_path, status):
    async def main() -> None:
        hits: list[str] = []

        async def metadata(request: web.Request) -> web.Response:
            hits.append(request.path)
            return web.Response(text="secret-token")

        meta_runner, meta_port = await _server(metadata)

        async def peer(request: web.Request) -> web.Response:
            return web.Response(status=status, headers={
                "Location": f"http://127.0.0.1:{meta_port}/latest/meta-data/"})

        peer_runner, peer_port = await _server(peer)
        store = Store(tmp_path)
        peers = PeerManager(create_mesh(store, DeviceKey.generate(), "home", "laptop"))
        await peers.start()
        try:
            with pytest.raises(HandshakeError) as caught:
                await asyncio.wait_for(peers._connect(f"127.0.0.1:{peer_port}"), 20)
            assert caught.value.code == "redirected"
            assert "never follows a redirect" in str(caught.value)
            assert hits == []
        finally:
            await peers.stop()
            for runner in (peer_runner, meta_runner):
                await runner.cleanup()
            store.close()

    asyncio.run(main())


def test_connect_refuses_a_redirect_on_any_session(tmp_path):
    """The pairing client dials with a session of its own: the refusal is added to it."""
    async def main() -> None:
        runners, hits, peer_port = await _redirecting()
        try:
            async with aiohttp.ClientSession() as session:
                with pytest.raises(HandshakeError) as caught:
                    await connect(session, f"http://127.0.0.1:{peer_port}/v1/pair",
                                  key=DeviceKey.generate(), mesh_id=bytes(32))
            assert caught.value.code == "redirected"
            assert hits == []
        finally:
            for runner in runners:
                await runner.cleanup()

    asyncio.run(main())
