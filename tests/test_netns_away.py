"""Away from home, for real: address records, a WireGuard tunnel with delay and loss, and the
home server as the always-on peer (SPEC-005 §9.13, §9.14, §12.9-12.12; issue 15 items 1-3).

Each host is a Linux network namespace running a real node process; the tunnel is userspace
WireGuard (``wireguard-go``, ``wg``). Skipped, with the reason, where namespaces or the tools
are missing (.ci/run installs them).
"""

from __future__ import annotations

import subprocess
import time

import pytest

from scripts.netns_lan import NamespaceLan, namespaces_available
from scripts.netns_wg import SERVER_WG, WireGuardLink, wireguard_available
from tests.netns_nodes import PEER_PORT, call_inside, in_lan
from tests.nodes import NodeProc, make_mesh, wait_for

OK, WHY = namespaces_available()
WG_OK, WG_WHY = wireguard_available()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(not OK, reason=WHY)]


def _ids_inside(lan: NamespaceLan, host: str, node: NodeProc) -> set[str]:
    listed = call_inside(lan, host, node, "GET", "/v1/memory?limit=1000")
    return {e["id"] for e in listed["entries"]}


def _peers_inside(lan: NamespaceLan, host: str, node: NodeProc) -> dict[str, dict]:
    peers = call_inside(lan, host, node, "GET", "/v1/peers")["peers"]
    return {p["device_id"]: p for p in peers if p.get("device_id")}


def _leave_home(lan: NamespaceLan, host: str) -> None:
    """The device leaves the house: its LAN link goes down on both ends (its Wi-Fi is gone)."""
    lan.link_down(host)
    subprocess.run(["ip", "-n", lan.ns(host), "link", "set", "eth0", "down"], check=True)


def test_members_dial_each_other_from_address_records(tmp_path):
    """005.12.9 to 005.12.12: a and c only know b's address; from b's relaying of their signed
    records they connect directly (path `lan`), and stay in sync while b is gone."""
    with NamespaceLan("maiar", ["a", "b", "c"]) as lan:
        a, b, c = make_mesh(tmp_path, ["a", "b", "c"])
        nodes = {"a": a, "b": b, "c": c}
        try:
            for host, node in nodes.items():
                in_lan(node, lan, host, mdns=False).start()
            b_addr = f"{lan.addresses['b']}:{PEER_PORT}"
            a.request("POST", "/v1/peers", {"address": b_addr})
            c.request("POST", "/v1/peers", {"address": b_addr})
            a_id, c_id = a.device_id(), c.device_id()
            wait_for(lambda: c_id in a.connected() and a_id in c.connected(), timeout=60,
                     what="a and c connected directly from records")
            paths = {p["device_id"]: p for p in a.request("GET", "/v1/peers")["peers"]}
            assert paths[c_id]["path"] in ("lan", "incoming")
            held = a.request("GET", "/v1/peers")["addresses"]["members"]
            assert f"{lan.addresses['c']}:{PEER_PORT}" in {
                x["address"] for m in held if m["device_id"] == c_id for x in m["addresses"]}
            b.stop()
            note = a.add_memory("written while b is away")["id"]
            wait_for(lambda: note in {e["id"] for e in c.entries()}, timeout=60,
                     what="c has a's note without b")
        finally:
            for node in nodes.values():
                node.stop()


@pytest.mark.skipif(not WG_OK, reason=WG_WHY)
def test_laptop_at_the_cafe_converges_through_the_tunnel(tmp_path):
    """Issue 15.1 and 15.3: the laptop learned the server's record at home; at the café (no
    route to home, only WireGuard with 60 ms and 1% loss) it writes offline, joins the tunnel,
    and converges with the desktop through the server, with no address typed. SPEC-005 §12.12
    (the tunnel address from the record, path `tunnel`), §9.13 (redial when the interface list
    changes), §9.14 (the dead LAN connection is dropped by liveness)."""
    with NamespaceLan("maiaw", ["server", "desktop", "laptop"]) as lan, \
            WireGuardLink(lan, "server", "laptop", delay_ms=60, loss=1.0) as wg:
        server, desktop, laptop = make_mesh(tmp_path, ["server", "desktop", "laptop"])
        nodes = {"server": server, "desktop": desktop, "laptop": laptop}
        try:
            for host, node in nodes.items():
                in_lan(node, lan, host, mdns=True).start()
            ids = {h: n.device_id() for h, n in nodes.items()}
            wait_for(lambda: {ids["desktop"], ids["laptop"]} <= server.connected(), timeout=60,
                     what="the home mesh formed over mDNS")

            def laptop_knows_tunnel() -> bool:
                held = laptop.request("GET", "/v1/peers")["addresses"]["members"]
                return any(x["address"] == f"{SERVER_WG}:{PEER_PORT}" and x["kind"] == "tunnel"
                           for m in held if m["device_id"] == ids["server"]
                           for x in m["addresses"])

            wait_for(laptop_knows_tunnel, timeout=30, what="the server's record at the laptop")

            _leave_home(lan, "laptop")
            wait_for(lambda: ids["laptop"] not in server.connected(), timeout=30,
                     what="the server noticed the laptop left")
            on_laptop = {call_inside(lan, "laptop", laptop, "POST", "/v1/memory",
                                 {"text": f"written at the cafe {i}"})["id"] for i in range(3)}
            on_desktop = {desktop.add_memory(f"written at home {i}")["id"] for i in range(3)}
            time.sleep(1.0)  # a window in which nothing may cross: the tunnel is still down
            assert not on_laptop & {e["id"] for e in server.entries()}

            wg.up()
            t0 = time.monotonic()
            both = on_laptop | on_desktop
            wait_for(lambda: both <= _ids_inside(lan, "laptop", laptop)
                     and both <= {e["id"] for e in desktop.entries()}, timeout=90,
                     what="laptop and desktop converge through the server")
            healed = time.monotonic() - t0
            peers = _peers_inside(lan, "laptop", laptop)
            to_server = peers[ids["server"]]
            assert to_server["connected"]
            # Once the tunnel is up both ends dial through it: the laptop the server's recorded
            # tunnel address (path `tunnel`, whichever of its diallers got there, §12.12), the
            # server the laptop's. SPEC-005 §9.12 keeps the connection whose initiator has the
            # lower key, so by key order the one left may be the server's (`incoming`).
            if to_server["path"] == "incoming":
                assert to_server["address"].split(":")[0] == SERVER_WG
            else:
                assert to_server["path"] == "tunnel"
                assert to_server["address"] == f"{SERVER_WG}:{PEER_PORT}"
            assert not peers.get(ids["desktop"], {}).get("connected")  # only through the server
            print(f"tunnel heal-to-converge {healed:.2f} s over {wg.impairment}")
        finally:
            for node in nodes.values():
                node.stop()


def test_two_devices_never_online_together_converge_through_the_home_server(tmp_path):
    """Issue 15.2: every node holds every document, so the always-on server carries a note
    from a laptop that has gone to a phone-like device that comes online only later."""
    with NamespaceLan("maias", ["server", "laptop", "tablet"]) as lan:
        server, laptop, tablet = make_mesh(tmp_path, ["server", "laptop", "tablet"])
        try:
            in_lan(server, lan, "server", mdns=True).start()
            in_lan(laptop, lan, "laptop", mdns=True).start()
            ids = {"laptop": laptop.device_id(), "server": server.device_id()}
            wait_for(lambda: ids["laptop"] in server.connected(), timeout=60,
                     what="laptop connected to the server")
            note = laptop.add_memory("from the laptop, before the tablet ever wakes")["id"]
            wait_for(lambda: server.entry(note) is not None, timeout=30, what="server has it")
            laptop.stop()  # the laptop goes to sleep for good
            in_lan(tablet, lan, "tablet", mdns=True).start()
            wait_for(lambda: tablet.entry(note) is not None, timeout=60,
                     what="the tablet received the laptop's note from the server")
            reply = tablet.add_memory("from the tablet, after the laptop slept")["id"]
            wait_for(lambda: server.entry(reply) is not None, timeout=30, what="server has it")
            tablet.stop()
            laptop.start()  # and the laptop wakes when the tablet sleeps
            wait_for(lambda: laptop.entry(reply) is not None, timeout=60,
                     what="the laptop received the tablet's note from the server")
        finally:
            for node in (server, laptop, tablet):
                node.stop()
