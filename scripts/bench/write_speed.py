"""Benchmark: local writes against the binding's own write rate, measured in the same run.

(a) In process: ``Memory.add_many`` in calls of 1,000 entries (what ``maia memory import``
    does) into a fresh store: signed, committed to LMDB with fsync, indexed. Beside each run,
    the Python Automerge binding alone writes the same entries into one document (one
    change per entry, no storage): the ceiling (scripts/bench/ceilings.py). Runs alternate so
    both see the same machine; the figure is the ratio, median/min/max of the runs.
(b) ``maia memory import`` of the corpus on a stopped node, the CLI end to end.
(c) One ``POST /v1/memory`` at a time to a running node (keep-alive, under the rate limit):
    p50/p99 latency; beside it one ``Memory.add`` in process (signed, fsynced).

    .venv/bin/python scripts/bench/write_speed.py            # N = 100k
    .venv/bin/python scripts/bench/write_speed.py --quick    # N = 10k
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ceilings
import harness
from harness import SCRATCH, Api, say
from report import table, write_section

STEP = 1000
TARGET_RATIO = 0.8
TARGET_POST_P50_MS = 3.0


def maia_write(items: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds ``Memory.add_many`` takes for ``items`` in a fresh store (wall and CPU)."""
    import os

    from crdt.documents import Repo
    from crdt.keys import DeviceKey
    from crdt.store import Store
    from node.memory import Memory

    SCRATCH.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="write-", dir=SCRATCH))  # the disk the nodes use
    store = Store(root)
    try:
        memory = Memory(Repo(store, DeviceKey.generate(), os.urandom(32)))
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(0, len(items), STEP):
            memory.add_many(items[i : i + STEP])
        memory.write_pending()
        return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}
    finally:
        store.close()
        shutil.rmtree(root, ignore_errors=True)


def in_process(items: list[dict[str, Any]], runs: int) -> dict[str, Any]:
    n = len(items)
    rows = []
    for i in range(runs):
        c0 = time.process_time()
        binding_s = n / ceilings.write_rate(items)
        binding_cpu = time.process_time() - c0
        maia = maia_write(items)
        rows.append({"binding_rate": n / binding_s, "maia_rate": n / maia["wall"],
                     "maia_cpu_rate": n / maia["cpu"], "ratio": binding_s / maia["wall"],
                     "cpu_ratio": binding_cpu / maia["cpu"]})
        say(f"  run {i + 1}/{runs}: binding {n / binding_s:,.0f}/s, maia-node "
            f"{n / maia['wall']:,.0f}/s (CPU-bound {n / maia['cpu']:,.0f}/s): "
            f"{rows[-1]['ratio']:.2f}x")
    return {"runs": rows,
            "ratio": ceilings.spread([r["ratio"] for r in rows]),
            "cpu_ratio": ceilings.spread([r["cpu_ratio"] for r in rows]),
            "binding_rate": ceilings.spread([r["binding_rate"] for r in rows]),
            "maia_rate": ceilings.spread([r["maia_rate"] for r in rows])}


def single_adds(samples: int) -> list[float]:
    """Milliseconds of one ``Memory.add`` each, in process, into a store of a few entries."""
    import os

    from crdt.documents import Repo
    from crdt.keys import DeviceKey
    from crdt.store import Store
    from node.memory import Memory

    root = Path(tempfile.mkdtemp(prefix="add-", dir=SCRATCH))
    store = Store(root)
    try:
        memory = Memory(Repo(store, DeviceKey.generate(), os.urandom(32)))
        items = harness.corpus(samples)
        out = []
        for item in items:
            t0 = time.perf_counter()
            memory.add(item["text"], item["kind"], item["tags"])
            out.append((time.perf_counter() - t0) * 1e3)
        return sorted(out)
    finally:
        store.close()
        shutil.rmtree(root, ignore_errors=True)


def node_side(items: list[dict[str, Any]], samples: int) -> dict[str, Any]:
    """``maia memory import`` on a stopped node, then POST /v1/memory latencies."""
    with harness.mesh(["a"]) as (_, (a,)):
        a.stop()
        binding_s = len(items) / ceilings.write_rate(items)
        import_s = harness.import_offline(a, items)
        a.start()
        api = Api(a)
        lat = []
        try:
            for item in harness.corpus(samples + 20, seed=7)[: samples + 20]:
                t0 = time.perf_counter()
                status, _ = api.request("POST", "/v1/memory", {
                    "text": item["text"], "kind": item["kind"], "tags": item["tags"]})
                lat.append((time.perf_counter() - t0) * 1e3)
                if status not in (200, 201):
                    raise RuntimeError(f"POST /v1/memory answered {status}")
        finally:
            api.close()
        lat = sorted(lat[20:])  # the first requests warm the connection and the shard
    return {"import_rate": len(items) / import_s, "import_ratio": binding_s / import_s,
            "binding_rate": len(items) / binding_s, "post_ms": lat}


def run(n: int, *, runs: int, samples: int, write: bool = True) -> dict[str, Any]:
    items = harness.corpus(n)
    busy = harness.wait_quiet(max_wait=120.0)
    say(f"(a) {runs} runs of {n:,} entries: Memory.add_many vs the binding alone...")
    proc = in_process(items, runs)
    say(f"(b, c) maia memory import of {n:,} entries, then {samples} POST /v1/memory...")
    node = node_side(items, samples)
    adds = single_adds(samples)
    p = harness.percentile
    post50, post99 = p(node["post_ms"], 0.5), p(node["post_ms"], 0.99)
    add50, add99 = p(adds, 0.5), p(adds, 0.99)
    say(f"  import {node['import_rate']:,.0f}/s ({node['import_ratio']:.2f}x the binding); "
        f"POST p50 {post50:.2f} ms p99 {post99:.2f} ms; Memory.add p50 {add50:.2f} ms")
    result = {"n": n, "in_process": proc, "node": node, "add_ms": adds}
    harness.save_result(f"write_speed_{n}", result)
    if write:
        rows = [
            ("entries written in process (`Memory.add_many`, 1,000 a call), as a ratio to "
             "the binding alone in the same run",
             ceilings.fmt_spread(proc["ratio"]) + "x",
             harness.verdict(proc["ratio"]["median"] >= TARGET_RATIO) + f" (>= {TARGET_RATIO}x)"),
            ("the same, CPU time of each side (waits for the disk and the other work on the "
             "cores not counted)",
             ceilings.fmt_spread(proc["cpu_ratio"]) + "x", ""),
            ("binding alone: entries/s (one document, one change per entry)",
             ceilings.fmt_spread(proc["binding_rate"], "{:,.0f}"), "the ceiling"),
            ("maia-node in process: entries/s", ceilings.fmt_spread(proc["maia_rate"],
                                                                    "{:,.0f}"), ""),
            ("`maia memory import` (CLI, one run): entries/s, ratio",
             f"{node['import_rate']:,.0f} ({node['import_ratio']:.2f}x)", ""),
            (f"one `POST /v1/memory` at a time ({samples} samples): p50 / p99",
             f"{post50:.2f} / {post99:.2f} ms",
             harness.verdict(post50 < TARGET_POST_P50_MS) + f" (p50 < {TARGET_POST_P50_MS} ms)"),
            ("one `Memory.add` in process: p50 / p99", f"{add50:.2f} / {add99:.2f} ms", ""),
        ]
        body = (table(rows, ("figure", "value", "target")) + "\n\n"
                "Every write is signed and committed to LMDB with fsync before it returns; "
                "its index rows follow in the next Runtime transaction (before any read of "
                "the index). The fsync of one small commit on this machine's disk is itself "
                "1-7 ms depending on other work, which bounds the single-write latency.")
        write_section(f"Local writes against the binding ({n:,} entries)", body,
                      extra_machine=harness.load_note(busy))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=harness.parse_n, default=100_000)
    ap.add_argument("--quick", action="store_true", help="N = 10k")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = ap.parse_args(argv)
    run(10_000 if args.quick else args.n, runs=args.runs, samples=args.samples,
        write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
