"""The path label of a connection names the path, not the dialler that won (SPEC-005 §12.12).

A home server announces its WireGuard address over mDNS as well as in its signed record, so a
laptop at the café dials that one address from two diallers at once; whichever handshake ends
last replaces the other connection. The label must be the record's `tunnel` either way.
"""

from __future__ import annotations

from crdt.identity import create_mesh
from crdt.keys import DeviceKey
from crdt.store import Store
from node.mesh.peers import DialTarget, PeerManager

TUNNEL, LAN, ELSEWHERE = "10.99.0.1:17412", "10.231.1.2:17412", "192.0.2.1:17412"


def test_an_mdns_dial_to_a_recorded_address_takes_the_records_kind(tmp_path):
    store = Store(tmp_path)
    try:
        peers = PeerManager(create_mesh(store, DeviceKey.generate(), "home", "laptop"))
        server = DeviceKey.generate().device_id
        recorded = DialTarget(LAN, expected_id=server, origin="address",
                              addresses=[LAN, ELSEWHERE, TUNNEL])
        recorded.kinds = {LAN: "lan", ELSEWHERE: "lan", TUNNEL: "tunnel"}
        peers.recorded[server] = recorded
        mdns = DialTarget(LAN, expected_id=server, origin="mdns",
                          addresses=[LAN, TUNNEL, ELSEWHERE, "10.0.0.9:17412"])
        assert peers.path_of(mdns, TUNNEL) == "tunnel"
        assert peers.path_of(recorded, TUNNEL) == "tunnel"
        assert peers.path_of(mdns, LAN) == "lan"
        # An address no record of the member names keeps how it was found.
        assert peers.path_of(mdns, "10.0.0.9:17412") == "mdns"
        other = DialTarget("10.0.0.7:17412", expected_id=DeviceKey.generate().device_id,
                           origin="mdns")
        assert peers.path_of(other, "10.0.0.7:17412") == "mdns"
        assert peers.path_of(DialTarget("10.0.0.8:17412"), "10.0.0.8:17412") == "static"
    finally:
        store.close()
