"""What a LAN observer sees between two real nodes: no plaintext of a memory entry (SPEC-005)."""

from __future__ import annotations

import asyncio
import threading

from tests.nodes import free_port, wait_for

SECRET = "the quiet heron remembers maia-secret-7781 at the willow pond"


class RecordingProxy:
    """A TCP forwarder on loopback that keeps every byte it relays, both directions."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.captured = bytearray()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        async def shutdown() -> None:
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def pipe(reader, writer):
            try:
                while data := await reader.read(65536):
                    self.captured += data
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        async def handle(client_r, client_w):
            try:
                server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                client_w.close()
                return
            await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))

        async def start():
            self._server = await asyncio.start_server(handle, "127.0.0.1", self.port)
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()


def test_lan_observer_sees_no_memory_plaintext(mesh_factory):
    """SPEC-005 §transport: two nodes sync an entry through a recording proxy; the captured
    bytes contain neither the entry's text nor any 12-byte piece of it, nor its tag."""
    a, b = mesh_factory("a", "b")
    with RecordingProxy(a.peer_port) as proxy:
        b.request("POST", "/v1/peers", {"address": f"127.0.0.1:{proxy.port}"})
        wait_for(lambda: a.connected(), what="b connected to a through the proxy")
        entry = a.add_memory(SECRET, tags=["heronwatch"])
        wait_for(lambda: b.entry(entry["id"]) is not None, what="entry synced through proxy")
        assert b.entry(entry["id"])["text"] == SECRET
        raw = bytes(proxy.captured)
    assert len(raw) > 1000  # the capture really saw the sync traffic
    secret = SECRET.encode()
    for i in range(len(secret) - 12):
        assert secret[i : i + 12] not in raw, f"plaintext fragment {secret[i:i+12]!r} leaked"
    assert b"heronwatch" not in raw
    assert entry["id"].encode() not in raw
