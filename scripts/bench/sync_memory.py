"""Benchmark: resident memory of an idle node holding N memory entries (target < 150 MB).

After the catch-up benchmark's set-up (a fresh node B has synced N entries from A), nothing
talks to B's API while its upkeep unloads the idle documents; then VmRSS is read from
/proc/PID/status, split into heap (anonymous) memory, LMDB's file maps and other files.
B is then restarted and read again idle, as the floor for the same data.

    .venv/bin/python scripts/bench/sync_memory.py            # N = 100k
    .venv/bin/python scripts/bench/sync_memory.py --quick    # N = 10k
    .venv/bin/python scripts/bench/sync_memory.py --compare-to OLD.json  # before/after table
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import harness
import sync_catchup
from harness import NodeProc, mb, say
from report import table, write_section

TARGET_KIB = 150e6 / 1024  # 150 MB


def idle_wait() -> tuple[float, float]:
    """Long enough for the node's upkeep to evict every idle document, and its interval."""
    from node.node import IDLE_EVICT_SECONDS, UPKEEP_INTERVAL

    return IDLE_EVICT_SECONDS + 2 * UPKEEP_INTERVAL + 1.0, UPKEEP_INTERVAL


def _sample(node: NodeProc) -> dict[str, Any]:
    kib = harness.memory_kib(node.proc.pid)
    return {"rss": kib.get("VmRSS", 0), "hwm": kib.get("VmHWM", 0),
            **harness.rss_breakdown(node.proc.pid, node.data_dir)}


def measure_idle(a: NodeProc, b: NodeProc, *, wait: float | None = None,
                 restart_wait: float = 12.0, max_extra: float = 60.0) -> dict[str, Any]:
    """B (and A) idle until documents are evicted; then B restarted and idle again.

    After the eviction wait, sampling goes on (at most ``max_extra`` s) until two readings
    one upkeep interval apart agree within 1%: a document touched late (the upkeep's own
    compaction opens documents) is evicted one round later.
    """
    base, interval = idle_wait()
    wait = base if wait is None else wait
    say(f"idle memory: waiting {wait:.0f} s or more with no API calls so documents are "
        "evicted...")
    timeline = []
    start = time.monotonic()
    while True:
        elapsed = time.monotonic() - start
        timeline.append((round(elapsed), harness.memory_kib(b.proc.pid).get("VmRSS", 0)))
        if elapsed >= wait:
            steady = len(timeline) >= 2 and abs(timeline[-1][1] - timeline[-2][1]) <= (
                0.01 * timeline[-2][1])
            if steady or elapsed >= wait + max_extra:
                break
        time.sleep(interval if elapsed >= wait else min(interval, wait - elapsed))
    wait = time.monotonic() - start
    result: dict[str, Any] = {"wait_s": wait, "b_idle": _sample(b), "a_idle": _sample(a),
                              "timeline": timeline}
    b.stop()
    b.start()
    time.sleep(restart_wait)
    result["b_restarted"] = _sample(b)
    result["restart_wait_s"] = restart_wait
    result["target_met"] = result["b_idle"]["rss"] < TARGET_KIB
    return result


def _split(s: dict[str, Any]) -> str:
    if "anon" not in s:
        return ""
    return (f"heap/anonymous {mb(s['anon'])}, LMDB file maps {mb(s['lmdb'])}, "
            f"other files (code, libraries) {mb(s['other_files'])}")


def section(n: int, result: dict[str, Any], before: dict[str, Any] | None = None,
            before_label: str = "before", note: str = "") -> tuple[str, str]:
    title = f"Idle memory of a node holding {n:,} memory entries"
    b, a, r = result["b_idle"], result["a_idle"], result["b_restarted"]
    method = (
        f"Node B has just caught up {n:,} entries from A (the catch-up benchmark's set-up). "
        f"Nobody calls its API for {result['wait_s']:.0f} s (until its upkeep has evicted "
        "every idle document and two readings 5 s apart agree within 1%); then VmRSS is read "
        "from `/proc/PID/status`, and split by `/proc/PID/smaps` into heap (anonymous) "
        "memory, the LMDB maps of its data dir (page cache, which the kernel can reclaim) "
        "and other files. B is then restarted and read again after "
        f"{result['restart_wait_s']:.0f} s idle."
    )
    rows = [
        ("**B idle after catch-up, documents evicted**",
         f"**{mb(b['rss'])}** (target < 150 MB: {harness.verdict(result['target_met'])})",
         _split(b)),
        ("B peak during catch-up (VmHWM)", mb(b["hwm"]), ""),
        ("B restarted, idle", mb(r["rss"]), _split(r)),
        ("A idle (holds the same entries, served the catch-up)", mb(a["rss"]), _split(a)),
    ]
    body = method + "\n\n" + table(rows, ("node", "VmRSS", "made of"))
    body += "\n\nB's VmRSS after the catch-up: " + ", ".join(
        f"{t} s: {mb(k)}" for t, k in result["timeline"]) + "."
    if before:
        bb = before["b_idle"]
        body += "\n\n" + table(
            [(before_label, mb(bb["rss"]), _split(bb)),
             (result.get("label", "now"), mb(b["rss"]), _split(b))],
            ("B idle after catch-up", "VmRSS", "made of"),
        )
    if note:
        body += "\n\n" + note.strip()
    return title, body


def print_result(result: dict[str, Any]) -> None:
    b = result["b_idle"]
    say(f"idle memory: B {mb(b['rss'])} after {result['wait_s']:.0f} s idle (target < 150 MB: "
        f"{'met' if result['target_met'] else 'MISSED'}); {_split(b)}")
    say(f"  B peak {mb(b['hwm'])}; B restarted {mb(result['b_restarted']['rss'])}; "
        f"A idle {mb(result['a_idle']['rss'])}")
    say("  timeline: " + ", ".join(f"{t}s {mb(k)}" for t, k in result["timeline"]))


def run(n: int, *, cap: float, write: bool = True, compare_to: Path | None = None,
        label: str = "now", before_label: str = "before") -> dict[str, Any]:
    busy = harness.wait_quiet()
    items = harness.corpus(n)
    with harness.mesh(["a", "b"]) as (_root, (a, b)):
        sync_catchup.prepare(a, items)
        b.start()
        say(f"catch-up of {n:,} changes (set-up)...")
        catchup = sync_catchup.measure(a, b, n, cap=cap)
        if not catchup.get("complete"):
            say(f"catch-up did not complete: {catchup.get('error')}")
            return {"error": catchup.get("error")}
        result = measure_idle(a, b)
    result["label"] = label
    print_result(result)
    harness.save_result(f"memory-{n}", result)
    if write:
        before = json.loads(compare_to.read_text()) if compare_to else None
        title, body = section(n, result, before, before_label)
        write_section(title, body, extra_machine=harness.load_note(busy))
        say(f"wrote '{title}' to docs/benchmarks.md")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=harness.parse_n, default=100_000, help="entries (default 100k)")
    ap.add_argument("--quick", action="store_true", help="N = 10k, for a smoke run")
    ap.add_argument("--cap", type=float, default=300.0, help="catch-up time limit, seconds")
    ap.add_argument("--compare-to", type=Path, help="an earlier result JSON, for before/after")
    ap.add_argument("--label", default="now", help="name of this run in a before/after table")
    ap.add_argument("--before-label", default="before", help="name of the earlier run")
    ap.add_argument("--no-write", action="store_true", help="print only, leave the report")
    args = ap.parse_args(argv)
    n = 10_000 if args.quick else args.n
    result = run(n, cap=args.cap, write=not args.no_write, compare_to=args.compare_to,
                 label=args.label, before_label=args.before_label)
    return 1 if result.get("error") else 0


if __name__ == "__main__":
    sys.exit(main())
