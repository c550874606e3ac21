"""A member cannot get around the dialler's backoff (SPEC-005 005.12.10, 005.9.13).

Real parts on loopback: a real PeerManager dials a real transport responder that proves a key
other than the one the target expects, the way a member's record (or a stranger's mDNS
announcement) naming another device's address does. Each case is what a thief holding a
member key could publish: a record per frame, 16 ports of one host, endless fresh hosts.
"""

from __future__ import annotations

import asyncio
import time

from crdt.identity import create_mesh
from crdt.keys import DeviceKey
from crdt.store import Store
from node.mesh.peers import MAX_BACKED_OFF, DialTarget, PeerManager
from tests.hostile import loopback_responder


def test_an_address_proving_another_device_backs_off_and_records_wake_at_most_every_4s(
        tmp_path):
    """005.12.10: an identity mismatch is a failure of the address (it used to clear the
    address's failures); 005.9.13: newer records of one member wake its dialler at most once
    every 4 s, so a record per frame does not turn the dialler into a loop."""
    async def main() -> None:
        store = Store(tmp_path)
        repo = create_mesh(store, DeviceKey.generate(), "home", "laptop")
        peers = PeerManager(repo)
        await peers.start()
        other = DeviceKey.generate()
        runner, port, channels = await loopback_responder(other, repo.mesh_id)
        claimed = DeviceKey.generate().device_id  # what the record says lives there
        try:
            for _ in range(40):  # a thief's record per frame, each naming the address
                peers.add_recorded(claimed, [(f"127.0.0.1:{port}", "lan")])
                await asyncio.sleep(0.05)
            target = peers.recorded[claimed]
            assert len(channels) == 1, f"{len(channels)} handshakes in 2 s"
            assert target.fails == {"127.0.0.1": 1}
            assert "proved to be" in target.last_error
        finally:
            await peers.stop()
            await runner.cleanup()
            store.close()

    asyncio.run(main())


def test_a_record_of_16_ports_on_one_host_is_one_dial_not_16():
    """005.12.10: the backoff is per host; the other ports of a failed host wait too."""
    sp = DialTarget("10.0.0.9:1", expected_id="X", origin="address")
    ports = [f"10.0.0.9:{p}" for p in range(1, 17)]
    dialled = []
    for address in ports:
        if sp.may_dial(address):
            dialled.append(address)
            sp.failed(address)
    assert dialled == ["10.0.0.9:1"]


def test_the_failure_table_is_bounded_and_fresh_hosts_wait_for_room():
    """005.12.10: at most MAX_BACKED_OFF hosts are remembered; while full, a host not held is
    not dialled, so fresh hosts in record after record get at most that many dials per few
    minutes; a host is forgotten only well after its backoff ended."""
    sp = DialTarget("10.1.0.1:7412", expected_id="X", origin="address")
    dialled = 0
    for i in range(10 * MAX_BACKED_OFF):
        address = f"10.1.{i // 250}.{i % 250 + 1}:7412"
        if sp.may_dial(address):
            dialled += 1
            sp.failed(address)
    assert dialled == MAX_BACKED_OFF
    assert len(sp.fails) == len(sp.not_before) == MAX_BACKED_OFF
    for host in list(sp.not_before)[:5]:
        sp.not_before[host] = time.monotonic() - 301  # their backoff ended 5 minutes ago
    assert sp.may_dial("10.9.9.9:7412")
    assert len(sp.not_before) == MAX_BACKED_OFF - 5
