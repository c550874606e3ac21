"""Run every benchmark of the signed-sync targets and write them into docs/benchmarks.md.

1. catch-up of N signed memory changes to a fresh peer   (sync_catchup.py)
2. idle memory of that peer once its documents are evicted  (sync_memory.py)
3. live propagation, (b) with the N entries held, then (a) on a fresh mesh (sync_propagation.py)
4. the same workload through automerge-repo, side by side  (sync_vs_automerge_repo.py)

One catch-up set-up serves 1-3(b). Each step is bounded in time and uses loopback only;
a section per benchmark is written (N is in its title, so --quick runs keep their own).

    .venv/bin/python scripts/bench/run_sync_benchmarks.py           # N = 100k
    .venv/bin/python scripts/bench/run_sync_benchmarks.py --quick   # N = 10k, smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import harness
import sync_catchup
import sync_memory
import sync_propagation
import sync_vs_automerge_repo
from harness import say
from report import DOC, write_section


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=harness.parse_n, default=100_000, help="changes (default 100k)")
    ap.add_argument("--quick", action="store_true", help="N = 10k, for a smoke run")
    ap.add_argument("--cap", type=float, default=300.0, help="maia-node catch-up limit, s")
    ap.add_argument("--runs", type=int, default=3, help="catch-ups, each to a fresh node")
    ap.add_argument("--js-cap", type=float, default=300.0, help="automerge-repo run limit, s")
    ap.add_argument("--samples", type=int, default=sync_propagation.SAMPLES)
    ap.add_argument("--warmup", type=int, default=sync_propagation.WARMUP)
    ap.add_argument("--skip-automerge-repo", action="store_true")
    ap.add_argument("--memory-before", type=Path,
                    help="an earlier sync_memory result JSON, shown as a before/after table")
    ap.add_argument("--memory-before-label", default="before")
    ap.add_argument("--memory-label", default="now", help="name of this run in that table")
    ap.add_argument("--memory-note", default="", help="a remark added to the memory section")
    ap.add_argument("--no-write", action="store_true", help="print only, leave the report")
    args = ap.parse_args(argv)
    n = 10_000 if args.quick else args.n
    started = time.monotonic()
    busy = harness.wait_quiet()
    extra = harness.load_note(busy)

    def write(title_body: tuple[str, str], more: dict[str, str] | None = None) -> None:
        if not args.no_write:
            write_section(*title_body, extra_machine={**(more or {}), **extra})
            say(f"wrote '{title_body[0]}' to {DOC.relative_to(harness.ROOT)}")

    items = harness.corpus(n)
    memory = loaded = None
    names = ["a"] + [f"b{i + 1}" for i in range(max(1, args.runs))]
    with harness.mesh(names) as (_root, (a, *bs)):
        info = sync_catchup.prepare(a, items)
        say(f"[1/4] catch-up of {n:,} changes, {len(bs)} run(s), each to a fresh node")
        catchup = sync_catchup.series(a, bs, n, cap=args.cap, items=items)
        catchup["info"] = info
        # The node of the last run stays up, caught up: the next benchmarks use it.
        b = bs[len(catchup["runs"]) - 1]
        sync_catchup.print_result(catchup)
        harness.save_result(f"catchup-{n}", catchup)
        write(sync_catchup.section(catchup, info))
        if catchup["runs"][-1].get("complete"):
            say("[2/4] idle memory")
            memory = sync_memory.measure_idle(a, b)
            sync_memory.print_result(memory)
            harness.save_result(f"memory-{n}", memory)
            before = json.loads(args.memory_before.read_text()) if args.memory_before else None
            memory["label"] = args.memory_label
            write(sync_memory.section(n, memory, before, args.memory_before_label,
                                      args.memory_note))
            say(f"[3/4] propagation (b) with {n:,} entries held...")
            loaded = sync_propagation.measure(a, b, samples=args.samples, warmup=args.warmup)
            sync_propagation.print_result(f"(b) {n:,} held", loaded)
    say("[3/4] propagation (a) on a fresh mesh...")
    fresh = sync_propagation.measure_fresh(args.samples, args.warmup)
    sync_propagation.print_result("(a) fresh mesh", fresh)
    harness.save_result(f"propagation-{n}", {"n": n, "fresh": fresh, "loaded": loaded})
    write(sync_propagation.section(n, fresh, loaded))
    if not args.skip_automerge_repo:
        say("[4/4] the same workload through automerge-repo...")
        try:
            sync_vs_automerge_repo.run(
                n, cap=args.cap, js_cap=args.js_cap, samples=args.samples,
                warmup=args.warmup, write=not args.no_write,
                maia={"catchup": catchup, "loaded": loaded, "fresh": fresh},
            )
        except RuntimeError as exc:  # no Node.js/npm: the maia-node figures still stand
            say(f"automerge-repo side skipped: {exc}")
    say(f"done in {time.monotonic() - started:.0f} s")
    return 0 if catchup.get("complete") else 1


if __name__ == "__main__":
    sys.exit(main())
