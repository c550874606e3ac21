"""A UDP relay that delays and drops datagrams: the slow internet for a WireGuard tunnel where
the kernel has no ``netem`` qdisc (scripts/netns_wg.py). Runs as its own process.

    python -m scripts.udp_impair LISTEN_HOST:PORT TARGET_HOST:PORT --delay-ms 60 --loss 1

Every datagram from the client (the first address that sends to LISTEN) goes to TARGET after
``delay`` ms unless dropped with probability ``loss`` %; every answer from TARGET goes back to
the client the same way. Each direction gets half the delay, so the round trip adds ``delay``.
"""

from __future__ import annotations

import argparse
import asyncio
import random


class _Side(asyncio.DatagramProtocol):
    def __init__(self, relay: Relay, name: str) -> None:
        self.relay, self.name = relay, name
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.relay.received(self.name, data, addr)


class Relay:
    def __init__(self, target: tuple[str, int], delay: float, loss: float) -> None:
        self.target, self.delay, self.loss = target, delay, loss
        self.client: tuple[str, int] | None = None
        self.front: _Side | None = None
        self.back: _Side | None = None

    def received(self, side: str, data: bytes, addr) -> None:
        if random.random() * 100 < self.loss:
            return
        loop = asyncio.get_running_loop()
        if side == "front":
            self.client = addr
            loop.call_later(self.delay / 2, self.back.transport.sendto, data, self.target)
        elif self.client is not None:
            loop.call_later(self.delay / 2, self.front.transport.sendto, data, self.client)


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("listen")
    ap.add_argument("target")
    ap.add_argument("--delay-ms", type=float, default=60.0)
    ap.add_argument("--loss", type=float, default=1.0)
    args = ap.parse_args()
    relay = Relay(_hostport(args.target), args.delay_ms / 1000, args.loss)
    loop = asyncio.get_running_loop()
    _, relay.front = await loop.create_datagram_endpoint(
        lambda: _Side(relay, "front"), local_addr=_hostport(args.listen))
    _, relay.back = await loop.create_datagram_endpoint(
        lambda: _Side(relay, "back"), local_addr=("127.0.0.1", 0))
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
