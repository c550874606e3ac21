"""``maia sync``: how far this node is in step with its peers, with a live progress bar.

For a fresh device joining a large mesh, ``maia sync --watch`` follows the initial catch-up:
documents held and in step with each connected peer, changes received and the rate, and a
summary when every connected peer is in step (or when it gives up waiting).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ..cli.client import NodeClient, NodeNotRunning
from ..cli.common import UserError, print_json, say
from ..config import Paths


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sync", help="show how far this node is in step with its peers",
                       description="Documents in step with each connected peer and changes "
                       "received. --watch follows an initial sync to its end.")
    p.add_argument("--watch", action="store_true", help="follow until in step (Ctrl-C stops)")
    p.add_argument("--timeout", type=float, default=3600.0,
                   help="with --watch, stop waiting after this many seconds")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sync)


def _snapshot(client) -> dict[str, Any]:
    docs, cursor = [], None
    while True:
        page = client.request("GET", "/v1/documents",
                              query={"limit": 500, **({"cursor": cursor} if cursor else {})})
        docs += page["documents"]
        cursor = page.get("cursor")
        if not cursor:
            break
    peers = client.request("GET", "/v1/peers")["peers"]
    connected = {p["device_id"]: p for p in peers if p.get("connected")}
    per_peer: dict[str, dict[str, Any]] = {}
    for doc in docs:
        for p in doc["peers"]:
            if p["device_id"] not in connected:
                continue
            row = per_peer.setdefault(p["device_id"], {"name": p["name"], "in_sync": 0})
            row["in_sync"] += p["state"] == "in_sync"
    received = sum(p.get("changes_accepted", 0) for p in connected.values())
    for device, p in connected.items():
        row = per_peer.setdefault(device, {"name": "", "in_sync": 0})
        row["summary_received"] = p.get("summary_received", False)
        row["differing"] = p.get("documents_differing", 0)
    return {"documents": len(docs), "changes": sum(d["changes"] for d in docs),
            "peers": per_peer, "received": received, "connected": len(connected)}


def _bar(done: int, total: int, width: int = 28) -> str:
    filled = width if total == 0 else int(width * done / total)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _in_step(snap: dict[str, Any]) -> bool:
    """Every connected peer has told us its documents, and none differs from ours."""
    return snap["connected"] > 0 and all(
        row.get("summary_received") and row.get("differing", 1) == 0
        for row in snap["peers"].values()
    )


def cmd_sync(args: argparse.Namespace, paths: Paths) -> int:
    try:
        client = NodeClient(paths)
    except NodeNotRunning:
        raise UserError("the node is not running: start it with 'maia up'") from None
    snap = _snapshot(client)
    if args.json:
        print_json(snap)
        return 0
    if not args.watch:
        _print(snap)
        return 0
    t0, first = time.monotonic(), snap["received"]
    tty = sys.stderr.isatty()
    try:
        while not _in_step(snap) and time.monotonic() - t0 < args.timeout:
            elapsed = max(1e-6, time.monotonic() - t0)
            rate = (snap["received"] - first) / elapsed
            worst = min((r["in_sync"] for r in snap["peers"].values()), default=0)
            line = (f"{_bar(worst, snap['documents'])} {worst}/{snap['documents']} documents "
                    f"in step, {snap['received'] - first:,} changes received ({rate:,.0f}/s)")
            sys.stderr.write(("\r" + line) if tty else (line + "\n"))
            sys.stderr.flush()
            time.sleep(0.5 if tty else 5.0)
            snap = _snapshot(client)
    except KeyboardInterrupt:
        pass
    if tty:
        sys.stderr.write("\n")
    elapsed = time.monotonic() - t0
    received = snap["received"] - first
    if _in_step(snap):
        say(f"In step with {snap['connected']} peer(s): {snap['documents']} documents, "
            f"{snap['changes']:,} changes held; {received:,} received in {elapsed:.1f} s.")
        return 0
    _print(snap)
    say(f"Not in step yet after {elapsed:.0f} s ({received:,} changes received meanwhile).")
    return 1


def _print(snap: dict[str, Any]) -> None:
    say(f"Documents held: {snap['documents']} ({snap['changes']:,} changes)")
    if not snap["peers"]:
        say("No peer connected.")
    for device, row in sorted(snap["peers"].items()):
        say(f"{_bar(row['in_sync'], snap['documents'])} {row['in_sync']}/{snap['documents']} "
            f"in step with {row['name'] or device[:15]}")
