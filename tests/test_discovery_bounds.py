"""What strangers on the LAN can make a node hold and dial over mDNS (SPEC-005 005.12.1-12.3).

Real parts: the node's own Discovery feature with a real repo and roster, a real PeerManager
as its dialler, and real zeroconf bound to loopback for the resolves; the announcements are
handed to Discovery the way its zeroconf browser hands them (service name and state change,
then the resolved id and addresses), since anyone on a LAN can announce any name, id and
address.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from zeroconf import ServiceStateChange
from zeroconf.asyncio import AsyncZeroconf

from crdt.identity import create_mesh, record_certs
from crdt.keys import DeviceKey
from crdt.roster import new_endorsement
from crdt.store import Store
from node.mesh.discovery import (
    MAX_NEARBY,
    MAX_RESOLVES,
    SERVICE_TYPE,
    Discovery,
    candidate_addresses,
)
from node.mesh.peers import MAX_TARGET_ADDRESSES, PeerManager


def _setup(tmp_path):
    store = Store(tmp_path)
    founder = DeviceKey.generate()
    repo = create_mesh(store, founder, "home", "laptop")
    member = DeviceKey.generate()
    record_certs(repo, [new_endorsement(founder, repo.mesh_id, member.public_key, "desk")])
    peers = PeerManager(repo)
    discovery = Discovery()
    discovery.node = SimpleNamespace(repo=repo, key=founder, peers=peers)
    return store, peers, discovery, member.device_id


def test_announcements_never_name_a_host_the_dialler_refuses():
    """005.12.2 with 005.12.10: loopback, multicast, broadcast, unspecified and cloud
    metadata addresses are dropped; link-local only on named interfaces (005.12.1)."""
    hosts = ["127.0.0.1", "169.254.169.254", "224.0.0.251", "255.255.255.255", "0.0.0.0",
             "100.100.100.200", "169.254.3.4", "192.168.1.20"]
    assert candidate_addresses(hosts, 7412, link_local=False) == ["192.168.1.20:7412"]
    assert candidate_addresses(hosts, 7412, link_local=True) == [
        "169.254.3.4:7412", "192.168.1.20:7412"]
    many = [f"10.0.0.{i}" for i in range(1, 50)]
    assert len(candidate_addresses(many, 7412, link_local=False)) == 4


def test_a_strangers_goodbye_for_a_forged_name_keeps_the_members_dialler(tmp_path):
    """005.12.2: a forged service name claiming a member's id adds its addresses; its
    goodbye removes only those, and the member's own name keeps the dialler."""
    async def main() -> None:
        store, peers, discovery, member = _setup(tmp_path)
        try:
            # (loopback, closed ports: the dialler's attempts are refused at once)
            discovery._candidate(f"maia-real.{SERVICE_TYPE}", member, ["127.0.0.20:9"])
            discovery._candidate(f"forged.{SERVICE_TYPE}", member, ["127.0.0.66:9"])
            assert peers.discovered[member].addresses == ["127.0.0.66:9", "127.0.0.20:9"]
            discovery._on_service_state_change(None, SERVICE_TYPE, f"forged.{SERVICE_TYPE}",
                                               ServiceStateChange.Removed)
            assert member in peers.discovered
            assert peers.discovered[member].addresses == ["127.0.0.20:9"]
            discovery._forget(f"maia-real.{SERVICE_TYPE}")
            assert member not in peers.discovered
        finally:
            await peers.stop()
            store.close()

    asyncio.run(main())


def test_a_flood_of_announcements_is_bounded(tmp_path):
    """005.12.2: nearby is capped (least recently seen out), a member's target holds at most
    16 addresses whatever is announced for its id, and resolves in flight are bounded."""
    async def main() -> None:
        store, peers, discovery, member = _setup(tmp_path)
        discovery._azc = AsyncZeroconf(interfaces=["127.0.0.1"])
        try:
            for i in range(300):
                stranger = DeviceKey.generate().device_id if i % 2 else f"junk-{i}"
                discovery._candidate(f"n{i}.{SERVICE_TYPE}", stranger, [f"10.1.{i // 200}."
                                                                        f"{i % 200 + 1}:7412"])
            assert len(discovery.nearby) <= MAX_NEARBY
            assert "junk-298" in discovery.nearby  # the most recently seen stay
            for i in range(100):
                # loopback, closed ports: the dialler's attempts are refused at once
                discovery._candidate(f"m{i}.{SERVICE_TYPE}", member,
                                     [f"127.2.{i}.{j}:9" for j in range(1, 5)])
            assert len(peers.discovered[member].addresses) <= MAX_TARGET_ADDRESSES
            for i in range(500):
                discovery._on_service_state_change(
                    discovery._azc.zeroconf, SERVICE_TYPE, f"r{i}.{SERVICE_TYPE}",
                    ServiceStateChange.Added)
            assert len(discovery._tasks) <= MAX_RESOLVES
        finally:
            for task in list(discovery._tasks):
                task.cancel()
            await asyncio.gather(*discovery._tasks, return_exceptions=True)
            await discovery._azc.async_close()
            await peers.stop()
            store.close()

    asyncio.run(main())
