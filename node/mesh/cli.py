"""``maia peer add/remove`` and ``maia peers``: the static peer list and connection state."""

from __future__ import annotations

import argparse
import time

from ..cli.common import Target, on_target, print_json, say
from . import sync_progress


def register(commands: argparse._SubParsersAction) -> None:
    s = commands.add_parser("peer", help="add or remove a static peer (HOST:PORT)")
    psub = s.add_subparsers(dest="peer_cmd", required=True, metavar="add|remove")
    x = psub.add_parser("add", help="add a static peer")
    x.add_argument("address", metavar="HOST:PORT")
    on_target(x, cmd_add)
    x = psub.add_parser("remove", help="remove a static peer")
    x.add_argument("address", metavar="HOST:PORT")
    on_target(x, cmd_remove)

    s = commands.add_parser("peers", help="list peers and their connection state")
    s.add_argument("--json", action="store_true")
    on_target(s, cmd_peers)
    sync_progress.register(commands)


def cmd_add(args: argparse.Namespace, target: Target) -> int:
    target.peer_add(args.address)
    when = "the node dials it now" if target.running else (
        "no node is running, so the node will dial it when it starts ('maia up')")
    say(f"Added static peer {args.address}; {when}, retrying with backoff.")
    return 0


def cmd_remove(args: argparse.Namespace, target: Target) -> int:
    target.peer_remove(args.address)
    say(f"Removed static peer {args.address}.")
    return 0


def cmd_peers(args: argparse.Namespace, target: Target) -> int:
    peers = target.peers()
    nearby = (target.status().get("discovery") or {}).get("nearby", [])
    if args.json:
        print_json({"peers": peers, "nearby": nearby})
        return 0
    if not peers:
        say("No peers yet. Nodes of your mesh on this LAN are found by themselves; elsewhere "
            "add one with: maia peer add HOST:PORT")
    now = time.time()
    for p in peers:
        state = "connected" if p.get("connected") else "not connected"
        path = f" via {p['path']}" if p.get("path") and p.get("connected") else ""
        if p.get("connected") and p.get("rtt_ms") is not None:
            path += f", round trip {p['rtt_ms']:g} ms"
        heard = (f", last traffic {_ago(now - p['last_traffic'])}"
                 if p.get("last_traffic") else "")
        retry = (f", next try in {max(0.0, p['next_retry'] - now):.1f} s"
                 if p.get("next_retry") and not p.get("connected") else "")
        err = f"  last error: {p['last_error']}" if p.get("last_error") else ""
        say(f"{p.get('address') or '-':<22} {p.get('device_id') or '(unknown device)'}  "
            f"{state}{path}{heard}{retry}{err}")
    for n in nearby:
        say(f"{', '.join(n['addresses']):<22} {n['device_id']}  nearby, not paired "
            "(pair it with: maia pair accept)")
    return 0


def _ago(seconds: float) -> str:
    """How long ago, in the unit a person reads at a glance."""
    if seconds < 60:
        return f"{max(0.0, seconds):.1f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"
