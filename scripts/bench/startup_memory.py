"""Benchmark: peak memory of a node started on N freshly imported entries (target < 1.5x idle).

A node's data dir gets N entries by ``maia memory import`` while the node is stopped, so its
Runtime index is empty; the node is then started and its RSS sampled every 100 ms while its
upkeep indexes every shard, until it has been idle long enough for every document to be
evicted. The figure is the peak (VmHWM) as a ratio to the same process's idle RSS at the end:
a home server with 1 GB must not need 10x its idle memory to start (issue 18.8). Several
runs, each on a fresh data dir; median, min and max.

    .venv/bin/python scripts/bench/startup_memory.py            # N = 100k, 3 runs
    .venv/bin/python scripts/bench/startup_memory.py --quick    # N = 10k, 3 runs
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import harness
from harness import mb, say
from report import table, write_section

TARGET_RATIO = 1.5


def one_run(items: list[dict[str, Any]], idle_for: float) -> dict[str, Any]:
    with harness.mesh(["solo"]) as (_root, nodes):
        node = nodes[0]
        harness.import_offline(node, items)
        node.start()
        pid = node.proc.pid
        start = time.monotonic()
        timeline: list[tuple[float, int, int, int]] = []
        while time.monotonic() - start < idle_for:
            kib = harness.memory_kib(pid)
            timeline.append((time.monotonic() - start, kib.get("VmRSS", 0),
                             kib.get("RssAnon", 0), kib.get("RssFile", 0)))
            time.sleep(0.1)
        kib = harness.memory_kib(pid)
        top = max(timeline, key=lambda t: t[1])
        return {"peak_kib": kib.get("VmHWM", 0), "idle_kib": kib.get("VmRSS", 0),
                "max_sampled_kib": top[1], "peak_anon_kib": top[2], "peak_file_kib": top[3],
                "peak_at_s": round(top[0], 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=harness.parse_n, default=100_000)
    parser.add_argument("--quick", action="store_true", help="N = 10k")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    n = 10_000 if args.quick else args.n
    from node.node import IDLE_EVICT_SECONDS, UPKEEP_INTERVAL

    idle_for = IDLE_EVICT_SECONDS + 4 * UPKEEP_INTERVAL + 15
    items = harness.corpus(n)
    runs = []
    for i in range(args.runs):
        say(f"run {i + 1}/{args.runs}: {n:,} entries imported offline, node started, "
            f"sampled for {idle_for:.0f} s...")
        r = one_run(items, idle_for)
        r["ratio"] = r["peak_kib"] / max(1, r["idle_kib"])
        say(f"  peak {mb(r['peak_kib'])} at {r['peak_at_s']} s (heap {mb(r['peak_anon_kib'])}, "
            f"mapped files {mb(r['peak_file_kib'])}), idle {mb(r['idle_kib'])}, "
            f"ratio {r['ratio']:.2f}")
        runs.append(r)
    ratios = sorted(r["ratio"] for r in runs)
    rows = [(f"run {i + 1}", mb(r["peak_kib"]), mb(r["peak_anon_kib"]), mb(r["peak_file_kib"]),
             mb(r["idle_kib"]), f"{r['ratio']:.2f}x", f"{r['peak_at_s']} s")
            for i, r in enumerate(runs)]
    body = (
        f"A node started on {n:,} entries imported while it was stopped (its Runtime index "
        "empty), sampled every 100 ms until idle. The reference is the same process's idle "
        f"RSS at the end. Target: peak < {TARGET_RATIO}x idle.\n\n"
        + table(rows, ("run", "peak RSS (VmHWM)", "heap at peak", "mapped files at peak",
                       "idle RSS", "peak / idle", "peak at"))
        + f"\n\nPeak / idle: median **{statistics.median(ratios):.2f}x**, min "
        f"{ratios[0]:.2f}x, max {ratios[-1]:.2f}x "
        f"({harness.verdict(statistics.median(ratios) < TARGET_RATIO)})."
    )
    write_section(f"Start-up memory ({n // 1000}k entries)", body)
    harness.save_result(f"startup_memory_{n}", {"runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
