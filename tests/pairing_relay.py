"""A man in the middle for the pairing test: it poses as the member to the new device and as a
new device to the member, relaying the code. It holds its own key, so it cannot make the two
short authentication strings agree. Run: python -m tests.pairing_relay KEYFILE LISTEN MEMBER
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

from crdt.keys import DeviceKey
from node.pairing import PAIRING_MESH, commitment
from node.transport import accept, connect


async def main(key_path: str, listen: str, member: str) -> None:
    key = DeviceKey.load(Path(key_path))
    host, port = listen.rsplit(":", 1)

    async def pair(request: web.Request) -> web.StreamResponse:
        ws, victim = await accept(request, key=key, mesh_id=PAIRING_MESH)
        hello = await victim.recv()  # the victim's code, name and commitment
        async with aiohttp.ClientSession() as session:
            upstream = await connect(session, f"http://{member}/v1/pair", key=key,
                                     mesh_id=PAIRING_MESH)
            own_nonce = os.urandom(32)
            await upstream.send({"t": "pair", "code": hello["code"], "name": hello["name"],
                                 "commit": commitment(own_nonce)})
            member_nonce = await upstream.recv()
            await victim.send(member_nonce)  # the victim gets a nonce, as from a member
            await victim.recv()  # the victim's reveal: useless to us, already committed
            await upstream.send({"t": "pair_reveal", "nonce": own_nonce})
            final = await upstream.recv()  # the member's verdict
            await victim.send(final)
            await upstream.close()
        await victim.close()
        return ws

    app = web.Application()
    app.router.add_get("/v1/pair", pair)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, int(port)).start()
    print("relay ready", flush=True)
    await asyncio.sleep(120)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
