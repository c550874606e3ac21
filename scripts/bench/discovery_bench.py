"""Time from a node's start to its first paired peer connected, over mDNS on a namespaced LAN.

Two hosts in network namespaces joined by a bridge: b runs; a is started N times. For each
start we take two clocks: from launching ``maia up`` (includes Python start and imports), and
from the node being ready (its HTTP listeners up, ``started_at`` in node.json) to the peer
connection (``connected_since`` in /v1/peers). Target: p50 < 500 ms (design §10).

    python scripts/bench/discovery_bench.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from scripts.bench.report import table, write_section  # noqa: E402
from scripts.netns_lan import NamespaceLan, namespaces_available  # noqa: E402
from tests.nodes import make_mesh  # noqa: E402

TITLE = "Discovery: start to first paired peer connected (mDNS, namespaced LAN)"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    ok, why = namespaces_available()
    if not ok:
        print(f"skipped: {why}")
        return 0
    launch_ms, ready_ms = [], []
    with tempfile.TemporaryDirectory() as tmp, NamespaceLan("maiab", ["a", "b"]) as lan:
        a, b = make_mesh(Path(tmp), ["a", "b"])
        for host, node in (("a", a), ("b", b)):
            node.host, node.port, node.peer_port = lan.addresses[host], 17431, 17432
            node.peer_listen, node.prefix = "0.0.0.0", lan.command(host, [])
            node.env = {"MAIA_DISCOVERY": "1"}
        b.start()
        b_id = b.device_id()
        try:
            for run in range(args.runs):
                t0 = time.time()
                a.start(timeout=30)
                deadline = time.monotonic() + 20
                since = None
                while time.monotonic() < deadline and since is None:
                    for p in a.request("GET", "/v1/peers")["peers"]:
                        if p.get("device_id") == b_id and p.get("connected"):
                            since = p["connected_since"]
                    time.sleep(0.01)
                info = json.loads((a.data_dir / "runtime" / "node.json").read_text())
                a.stop()
                if since is None:
                    print(f"run {run}: no connection within 20 s")
                    continue
                launch_ms.append((since - t0) * 1000)
                ready_ms.append((since - info["started_at"]) * 1000)
                print(f"run {run + 1}/{args.runs}: {launch_ms[-1]:.0f} ms from launch, "
                      f"{ready_ms[-1]:.0f} ms from ready", flush=True)
        finally:
            b.stop()
    if not ready_ms:
        print("no successful run")
        return 1
    rows = [
        ("node ready -> peer connected", f"{statistics.median(ready_ms):.0f} ms",
         f"{_pct(ready_ms, 0.9):.0f} ms", f"{max(ready_ms):.0f} ms", "p50 < 500 ms",
         "met" if statistics.median(ready_ms) < 500 else "MISSED"),
        ("`maia up` launched -> peer connected", f"{statistics.median(launch_ms):.0f} ms",
         f"{_pct(launch_ms, 0.9):.0f} ms", f"{max(launch_ms):.0f} ms", "(includes Python start)",
         ""),
    ]
    body = (
        f"{len(ready_ms)} starts of node a with node b already running, each host in its own "
        "network namespace on one bridge; discovery by mDNS only (no static peer). "
        "Syncthing's local discovery announces every 30-60 s.\n\n"
        + table(rows, ("interval", "p50", "p90", "max", "target", ""))
    )
    write_section(TITLE, body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
