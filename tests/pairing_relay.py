"""A man in the middle for the pairing test: it poses as the member to the new device and as a
new device to the member. The new device never sends the code, so this relay is given it (read
over the owner's shoulder, say) and proves it on both legs (SPEC-005 §12.5). It still holds its
own key, so it cannot make the two short authentication strings agree (§12.6).
Run: python -m tests.pairing_relay KEYFILE LISTEN MEMBER CODE
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

from crdt.keys import DeviceKey
from node.transport import accept, connect
from tests.pairing_helpers import play_member, play_new_device

PAIRING_MESH = b"\x00" * 32  # SPEC-005 §12.5


async def main(key_path: str, listen: str, member: str, code: str) -> None:
    key = DeviceKey.load(Path(key_path))
    host, port = listen.rsplit(":", 1)

    async def pair(request: web.Request) -> web.StreamResponse:
        ws, victim = await accept(request, key=key, mesh_id=PAIRING_MESH)
        async with aiohttp.ClientSession() as session:
            upstream = await connect(session, f"http://{member}/v1/pair", key=key,
                                     mesh_id=PAIRING_MESH)
            await play_new_device(upstream, code, key.public_key, "n")  # the member's screen
            await play_member(victim, code, key.public_key)  # the victim's screen
            relay_up = asyncio.ensure_future(_pump(victim, upstream))
            await _pump(upstream, victim)  # the member's verdict
            relay_up.cancel()
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


async def _pump(src, dst) -> None:
    frame = await src.recv()
    await dst.send(frame)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
