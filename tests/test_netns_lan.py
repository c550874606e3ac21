"""Several hosts on a real (namespaced) LAN: mDNS multicast crosses real interfaces.

Each host is a Linux network namespace joined by a veth pair to one bridge, running a real
node process. Skipped, with the reason, only where namespaces cannot be created.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error

import pytest

from scripts.netns_lan import NamespaceLan, namespaces_available
from tests.nodes import NodeProc, cli, make_mesh, wait_for

OK, WHY = namespaces_available()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(not OK, reason=WHY)]
API_PORT, PEER_PORT = 17411, 17412


@pytest.fixture
def lan():
    with NamespaceLan("maiat", ["a", "b", "c", "d"]) as lan:
        yield lan


def _in_lan(node: NodeProc, lan: NamespaceLan, host: str) -> NodeProc:
    node.host, node.port, node.peer_port = lan.addresses[host], API_PORT, PEER_PORT
    node.peer_listen = "0.0.0.0"
    node.prefix = lan.command(host, [])
    node.env = {"MAIA_DISCOVERY": "1"}
    return node


def _add_inside(lan: NamespaceLan, host: str, node: NodeProc, text: str) -> str:
    """Write through the node's API from inside its namespace (its link may be down)."""
    script = (
        "import json, sys, urllib.request\n"
        "req = urllib.request.Request(sys.argv[1], data=json.dumps({'text': sys.argv[3]})"
        ".encode(), method='POST', headers={'Authorization': 'Bearer ' + sys.argv[2],"
        " 'Content-Type': 'application/json'})\n"
        "print(json.load(urllib.request.urlopen(req, timeout=10))['id'])\n"
    )
    out = subprocess.run(
        lan.command(host, [sys.executable, "-c", script, f"{node.base}/v1/memory", node.token,
                           text]),
        capture_output=True, text=True, timeout=30, check=True,
    )
    return out.stdout.strip()


def _ids(node: NodeProc) -> set[str]:
    return {e["id"] for e in node.entries()}


def _nearby(node: NodeProc) -> set[str]:
    return {n["device_id"] for n in node.request("GET", "/v1/status")["discovery"]["nearby"]}


@pytest.fixture
def hosts(lan, tmp_path):
    """a, b, c in one mesh (paired), d on its own mesh (unpaired), each in its namespace."""
    a, b, c = make_mesh(tmp_path / "mesh", ["a", "b", "c"])
    d_dir = tmp_path / "other" / "d"
    assert cli(d_dir, "init", "--new-mesh", "--name", "d") == 0
    d = NodeProc(d_dir, "d")
    nodes = {"a": a, "b": b, "c": c, "d": d}
    for host, node in nodes.items():
        _in_lan(node, lan, host).start()
    yield nodes
    for node in nodes.values():
        node.stop()


def test_members_discover_each_other_and_sync_unpaired_is_only_nearby(hosts):
    """SPEC-005 §9 / design §5: members find each other over mDNS with no configuration and
    sync; an unpaired node is listed as nearby and receives no data."""
    a, b, c, d = (hosts[h] for h in "abcd")
    ids = {h: n.device_id() for h, n in hosts.items()}
    wait_for(lambda: {ids["b"], ids["c"]} <= a.connected(), timeout=20, what="a found b, c")
    wait_for(lambda: ids["c"] in b.connected(), timeout=20, what="b found c")
    wait_for(lambda: ids["d"] in _nearby(a), timeout=20, what="d listed as nearby on a")
    assert ids["d"] not in a.connected() and ids["a"] not in d.connected()
    entry = a.add_memory("written on a, for the mesh only")["id"]
    wait_for(lambda: entry in _ids(b) and entry in _ids(c), what="entry reached b and c")
    time.sleep(1.0)
    assert entry not in _ids(d) and _ids(d) == set()


def test_partition_then_heal_converges(hosts, lan):
    """Design §10: a host whose link goes down keeps writing; after the link is back every
    member converges."""
    a, b, c = (hosts[h] for h in "abc")
    ids = {h: n.device_id() for h, n in hosts.items()}
    wait_for(lambda: {ids["b"], ids["c"]} <= a.connected(), timeout=20, what="mesh formed")
    lan.link_down("c")
    on_a = {a.add_memory(f"a during partition {i}")["id"] for i in range(3)}
    on_c = {_add_inside(lan, "c", c, f"c during partition {i}") for i in range(3)}
    time.sleep(1.0)
    assert not on_c & _ids(a)
    lan.link_up("c")
    t0 = time.monotonic()
    wait_for(lambda: (on_a | on_c) <= _ids(a) and (on_a | on_c) <= _ids(b)
             and (on_a | on_c) <= _ids(c), timeout=60, what="convergence after heal")
    assert time.monotonic() - t0 < 60


def test_node_advertising_another_devices_id_is_refused(hosts, lan, tmp_path):
    """SPEC-005 §9: discovery is only a candidate list. A record (announced from host d)
    claiming b's device id but pointing at c — a member with another key — fails the identity
    check after the handshake: a is never connected to anything as "b"."""
    a, b, c = hosts["a"], hosts["b"], hosts["c"]
    b_id, c_id = b.device_id(), c.device_id()
    b.stop()  # the genuine b is gone; only the impostor record claims its id
    impostor = subprocess.Popen(
        lan.command("d", [sys.executable, "-c", IMPOSTOR, b_id, lan.addresses["d"],
                          lan.addresses["c"], str(PEER_PORT)]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: f"advertised {b_id} but proved to be {c_id}" in a.log(), timeout=20,
                 what="a dialled the impostor record and noticed the mismatch")
        assert b_id not in a.connected()
        peers = {p["device_id"]: p for p in a.request("GET", "/v1/peers")["peers"]}
        assert not peers.get(b_id, {}).get("connected")
    finally:
        impostor.terminate()
        impostor.wait(5)


IMPOSTOR = """
import asyncio, socket, sys
from zeroconf.asyncio import AsyncZeroconf, AsyncServiceInfo
claimed, bind, addr, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
async def main():
    zc = AsyncZeroconf(interfaces=[bind])
    info = AsyncServiceInfo("_maia._tcp.local.", "maia-impostor._maia._tcp.local.",
        addresses=[socket.inet_aton(addr)], port=port, server="maia-impostor.local.",
        properties={"v": "1", "id": claimed, "port": str(port)})
    await zc.async_register_service(info)
    await asyncio.sleep(60)
asyncio.run(main())
"""


def test_revoked_node_is_cut_off_and_cannot_come_back(hosts):
    """SPEC-005 §5: after revocation the node is disconnected by everyone, its new writes
    reach nobody (not via a third peer either), and re-announcing itself changes nothing."""
    a, b, c = (hosts[h] for h in "abc")
    ids = {h: n.device_id() for h, n in hosts.items()}
    wait_for(lambda: {ids["b"], ids["c"]} <= a.connected() and ids["c"] in b.connected(),
             timeout=20, what="mesh formed")
    a.request("POST", f"/v1/devices/{ids['c']}/revoke",
              {"reason": "lost on a train", "confirm": ids["c"]})
    wait_for(lambda: ids["c"] not in a.connected() and ids["c"] not in b.connected(),
             timeout=20, what="c cut off by a and b")
    # c was told (with the signed tombstone, SPEC-005 §9.8) and refuses to write at all
    # (SPEC-005 §5); a modified client writing anyway is refused by every member
    # (tests/test_revocation.py)
    wait_for(lambda: c.request("GET", "/v1/status").get("revoked"), timeout=20,
             what="c knows it was revoked")
    with pytest.raises(urllib.error.HTTPError) as refused:
        c.add_memory("written after revocation")
    assert refused.value.code == 403
    assert json.loads(refused.value.read())["type"] == "urn:maia-node:problem:device-revoked"
    before = _ids(a)
    c.stop()
    c.start()  # re-announces itself over mDNS
    time.sleep(3.0)
    assert ids["c"] not in a.connected() and ids["c"] not in b.connected()
    assert _ids(a) == before
    assert not any("after revocation" in e["text"] for e in a.entries() + b.entries())
    status = {d["device_id"]: d["status"] for d in b.request("GET", "/v1/devices")["devices"]}
    assert status[ids["c"]] == "revoked"
