"""Nodes inside a namespace LAN (scripts/netns_lan.py): placing a node on a host, and calling
its API from inside that host's namespace. Shared by the netns tests and the heal benchmark."""

from __future__ import annotations

import json
import subprocess
import sys

from scripts.netns_lan import NamespaceLan
from tests.nodes import NodeProc

API_PORT, PEER_PORT = 17411, 17412

_CALL = (
    "import json, sys, urllib.request\n"
    "body = json.loads(sys.argv[4])\n"
    "req = urllib.request.Request(sys.argv[1] + sys.argv[3], method=sys.argv[5],"
    " data=None if body is None else json.dumps(body).encode(),"
    " headers={'Authorization': 'Bearer ' + sys.argv[2], 'Content-Type': 'application/json'})\n"
    "print(urllib.request.urlopen(req, timeout=float(sys.argv[6])).read().decode())\n"
)


def in_lan(node: NodeProc, lan: NamespaceLan, host: str, *, mdns: bool,
           ports: tuple[int, int] = (API_PORT, PEER_PORT)) -> NodeProc:
    """Run ``node`` on ``host`` of ``lan``, its API and peer ports fixed (each namespace has
    its own), with mDNS discovery on or off."""
    node.host, (node.port, node.peer_port) = lan.addresses[host], ports
    node.peer_listen = "0.0.0.0"
    node.prefix = lan.command(host, [])
    node.env = {"MAIA_DISCOVERY": "1" if mdns else "0"}
    return node


def call_inside(lan: NamespaceLan, host: str, node: NodeProc, method: str, path: str,
                body: object = None, timeout: float = 10.0) -> object:
    """Call a node's API from inside its namespace (its LAN link may be down)."""
    out = subprocess.run(
        lan.command(host, [sys.executable, "-c", _CALL, node.base, node.token, path,
                           json.dumps(body), method, str(timeout)]),
        capture_output=True, text=True, timeout=3 * timeout, check=True,
    )
    return json.loads(out.stdout)
