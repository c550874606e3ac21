"""Benchmark: peak memory of a node started on N imported entries (target < 1.5x idle).

A node's data dir gets N entries by ``maia memory import`` while the node is stopped; the node
is then started and its RSS sampled every 100 ms until it has been idle long enough for every
document to be evicted. The figure is the peak (VmHWM) as a ratio to the same process's idle
RSS at the end: a home server with 1 GB must not need 10x its idle memory to start (issue
18.8). Two cases, each several runs on a fresh copy of the same imported data dir:

- ``import``: the data dir as the import left it (its Memory index written, its shards
  compacted by the importing command). The target applies here.
- ``rebuild``: the same with Runtime deleted (SPEC-001: deleting it loses nothing), so the
  node re-indexes every shard. Reported, not targeted: one shard at a time, the peak is idle
  plus one shard in Automerge's memory (about 33 MB for a 6,000-entry shard).

    .venv/bin/python scripts/bench/startup_memory.py            # N = 100k, 3 runs each
    .venv/bin/python scripts/bench/startup_memory.py --quick    # N = 10k
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import harness
from harness import mb, say
from report import table, write_section

TARGET_RATIO = 1.5
CASES = {"import": "as imported", "rebuild": "Runtime deleted (full re-index)"}


def one_run(node: harness.NodeProc, pristine: Path, case: str, idle_for: float,
            ) -> dict[str, Any]:
    shutil.rmtree(node.data_dir)
    shutil.copytree(pristine, node.data_dir)
    if case == "rebuild":
        shutil.rmtree(node.data_dir / "runtime")
    node.start()
    try:
        pid = node.proc.pid
        start = time.monotonic()
        timeline: list[tuple[float, int, int, int]] = []
        while time.monotonic() - start < idle_for:
            kib = harness.memory_kib(pid)
            timeline.append((time.monotonic() - start, kib.get("VmRSS", 0),
                             kib.get("RssAnon", 0), kib.get("RssFile", 0)))
            time.sleep(0.1)
        kib = harness.memory_kib(pid)
    finally:
        node.stop()
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
    results: dict[str, list[dict[str, Any]]] = {case: [] for case in CASES}
    with harness.mesh(["solo"]) as (root, nodes):
        node = nodes[0]
        say(f"importing {n:,} entries offline...")
        harness.import_offline(node, harness.corpus(n))
        pristine = root / "pristine"
        shutil.copytree(node.data_dir, pristine)
        for case, label in CASES.items():
            for i in range(args.runs):
                say(f"{label}, run {i + 1}/{args.runs}: node started, sampled for "
                    f"{idle_for:.0f} s...")
                r = one_run(node, pristine, case, idle_for)
                r["ratio"] = r["peak_kib"] / max(1, r["idle_kib"])
                say(f"  peak {mb(r['peak_kib'])} at {r['peak_at_s']} s (heap "
                    f"{mb(r['peak_anon_kib'])}, mapped files {mb(r['peak_file_kib'])}), idle "
                    f"{mb(r['idle_kib'])}, ratio {r['ratio']:.2f}")
                results[case].append(r)
    parts = [
        f"A node started on {n:,} entries imported while it was stopped, sampled every 100 ms "
        "until idle. The reference is the same process's idle RSS at the end. Target: peak "
        f"< {TARGET_RATIO}x idle for a data dir as the import left it; with Runtime deleted "
        "the node re-indexes every shard, one at a time, and its peak is reported."
    ]
    for case, label in CASES.items():
        runs = results[case]
        ratios = sorted(r["ratio"] for r in runs)
        rows = [(f"run {i + 1}", mb(r["peak_kib"]), mb(r["peak_anon_kib"]),
                 mb(r["peak_file_kib"]), mb(r["idle_kib"]), f"{r['ratio']:.2f}x",
                 f"{r['peak_at_s']} s") for i, r in enumerate(runs)]
        verdict = (f" ({harness.verdict(statistics.median(ratios) < TARGET_RATIO)})"
                   if case == "import" else " (reported)")
        parts.append(
            f"**{label}**\n\n"
            + table(rows, ("run", "peak RSS (VmHWM)", "heap at peak", "mapped files at peak",
                           "idle RSS", "peak / idle", "peak at"))
            + f"\n\nPeak / idle: median **{statistics.median(ratios):.2f}x**, min "
            f"{ratios[0]:.2f}x, max {ratios[-1]:.2f}x{verdict}."
        )
    write_section(f"Start-up memory ({n // 1000}k entries)", "\n\n".join(parts))
    harness.save_result(f"startup_memory_{n}", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
