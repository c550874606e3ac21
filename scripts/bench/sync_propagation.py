"""Benchmark: a local write visible on an online peer (target p50 < 20 ms, p99 < 100 ms).

A and B are connected. Each sample writes one entry on A (``POST /v1/memory``: signed,
committed, pushed) and polls B's ``GET /v1/memory/{id}`` back to back over a keep-alive
connection until it answers 200; the time from just before the POST to that answer is the
propagation time. Warm-up samples come first and are not counted. Between samples the
poller waits long enough to stay under the node's API rate limit, so no poll is refused.
Run (a) on a fresh mesh and (b) with N entries already held by both nodes (after the
catch-up benchmark's set-up). Loopback only.

    .venv/bin/python scripts/bench/sync_propagation.py            # (a) and (b), N = 100k
    .venv/bin/python scripts/bench/sync_propagation.py --quick    # N = 10k
    .venv/bin/python scripts/bench/sync_propagation.py --fresh-only
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from typing import Any

import harness
import sync_catchup
import sync_memory
from harness import Api, NodeProc, percentile, say
from report import table, write_section

SAMPLES = 300
WARMUP = 30
TIMEOUT = 5.0
GAP = 0.02
LOADED_STATE = ("after the catch-up and the idle-memory wait: documents evicted on both nodes, "
                "B restarted")


def wait_connected(a: NodeProc, b: NodeProc, timeout: float = 30.0) -> None:
    def both() -> bool:
        return bool(a.connected()) and bool(b.connected())

    harness.wait_until(both, timeout, 0.1, "A and B connected")


def measure(a: NodeProc, b: NodeProc, *, samples: int = SAMPLES, warmup: int = WARMUP,
            seed: int = 7) -> dict[str, Any]:
    wait_connected(a, b)
    writer, reader = Api(a), Api(b)
    texts = harness.corpus(samples + warmup, seed=seed)
    rng = random.Random(seed)
    latencies, writes, poll_rtts = [], [], []
    timeouts = 0
    others = harness.OtherLoad([a.proc.pid, b.proc.pid])
    for i, item in enumerate(texts):
        t0 = time.perf_counter()
        status, entry = writer.request("POST", "/v1/memory", item)
        t_written = time.perf_counter()
        if status != 201:
            raise RuntimeError(f"POST /v1/memory on A: HTTP {status} {entry}")
        path = f"/v1/memory/{entry['id']}"
        polls = 0
        seen = None
        while True:
            tp = time.perf_counter()
            status, _ = reader.request("GET", path)
            now = time.perf_counter()
            polls += 1
            if status == 200:
                seen = now
                break
            if status != 404:
                raise RuntimeError(f"GET {path} on B: HTTP {status}")
            poll_rtts.append(now - tp)
            if now - t0 > TIMEOUT:
                timeouts += 1
                break
        if i >= warmup:
            writes.append(t_written - t0)
            if seen is not None:
                latencies.append(seen - t0)
        # Let the bucket refill (no 429 can distort a sample), with jitter so samples do not
        # fall in step with the node's 5 s upkeep.
        time.sleep(max(GAP, polls / reader.rate) + rng.random() * 0.01)
    other_load = others.stop()
    writer.close()
    reader.close()
    lat = sorted(x * 1000 for x in latencies)
    wr = sorted(x * 1000 for x in writes)
    return {
        "samples": len(lat), "warmup": warmup, "timeouts": timeouts,
        "p50_ms": percentile(lat, 0.50), "p95_ms": percentile(lat, 0.95),
        "p99_ms": percentile(lat, 0.99), "max_ms": lat[-1] if lat else float("nan"),
        "mean_ms": statistics.fmean(lat) if lat else float("nan"),
        "write_p50_ms": percentile(wr, 0.50), "write_p99_ms": percentile(wr, 0.99),
        "poll_rtt_p50_ms": percentile(sorted(x * 1000 for x in poll_rtts), 0.5),
        "rate_limited": reader.limited + writer.limited,
        "other_load": other_load,
        "target_met": bool(lat) and percentile(lat, 0.5) < 20 and percentile(lat, 0.99) < 100
        and timeouts == 0,
    }


def measure_fresh(samples: int = SAMPLES, warmup: int = WARMUP) -> dict[str, Any]:
    with harness.mesh(["a", "b"]) as (_root, (a, b)):
        a.start()
        b.start()
        b.add_peer(a)
        say(f"propagation (a) fresh mesh: {warmup} warm-up + {samples} samples...")
        return measure(a, b, samples=samples, warmup=warmup)


def row(label: str, r: dict[str, Any]) -> tuple:
    return (
        label, r["samples"], f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}", f"{r['p99_ms']:.1f}",
        f"{r['max_ms']:.1f}", r["timeouts"], f"{r['write_p50_ms']:.1f}",
        f"{r['poll_rtt_p50_ms']:.2f}", f"{r.get('other_load') or 0:.0%}",
        harness.verdict(r["target_met"]),
    )


def section(n: int, fresh: dict[str, Any] | None, loaded: dict[str, Any] | None,
            loaded_note: str = LOADED_STATE) -> tuple[str, str]:
    title = f"Live propagation of a local write to an online peer ({n:,} entries held in (b))"
    some = fresh or loaded or {}
    refused = (fresh or {}).get("rate_limited", 0) + (loaded or {}).get("rate_limited", 0)
    method = (
        "A and B are connected `maia up` processes on loopback. Each sample writes one entry "
        "(100-300 characters, one or two tags) on A with `POST /v1/memory` (signed, committed "
        "to LMDB, pushed) and polls `GET /v1/memory/{id}` on B back to back over a keep-alive "
        "connection until it answers 200; the time runs from just before the POST to that "
        "answer, so it includes A's HTTP handling and commit and one poll round trip on B. "
        f"{some.get('warmup', WARMUP)} warm-up writes are not counted; pauses between samples "
        f"keep the poller under the API rate limit ({refused} polls were refused). (a) a "
        f"fresh mesh; (b) both nodes already hold {n:,} entries ({loaded_note}; 40 shards, "
        "a shard not loaded is loaded on its first write or read). "
        "\"Other CPU load\" is the share of the machine's CPU that other processes used "
        "during the samples."
    )
    rows = []
    if fresh:
        rows.append(row("(a) fresh mesh", fresh))
    if loaded:
        rows.append(row(f"(b) {n:,} entries held", loaded))
    body = method + "\n\n" + table(rows, (
        "case", "samples", "p50 ms", "p95 ms", "p99 ms", "max ms", "timeouts",
        "A's POST p50 ms", "B poll RTT p50 ms", "other CPU load",
        "target p50 < 20, p99 < 100"))
    return title, body


def print_result(label: str, r: dict[str, Any]) -> None:
    say(f"propagation {label}: p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f}, "
        f"p99 {r['p99_ms']:.1f}, max {r['max_ms']:.1f} ({r['samples']} samples, "
        f"{r['timeouts']} timeouts; A's POST p50 {r['write_p50_ms']:.1f} ms; poll RTT "
        f"{r['poll_rtt_p50_ms']:.2f} ms; other load {r.get('other_load') or 0:.0%}); "
        f"target p50 < 20, p99 < 100: {'met' if r['target_met'] else 'MISSED'}")


def profile_section(n: int, loaded: dict[str, Any], prof: dict[str, Any]) -> tuple[str, str]:
    title = f"Live propagation profile ({n:,} entries held)"
    body = (
        f"Case (b) of the propagation benchmark ({LOADED_STATE}) run again with py-spy "
        "sampling both nodes "
        f"(`sync_propagation.py --profile`). Under the profiler: p50 {loaded['p50_ms']:.1f} ms, "
        f"p99 {loaded['p99_ms']:.1f} ms, max {loaded['max_ms']:.1f} ms.\n\n"
        + sync_catchup.profile_markdown(prof, during="the 330 writes of case (b)")
    )
    return title, body


def run(n: int, *, cap: float, fresh_only: bool = False, samples: int = SAMPLES,
        warmup: int = WARMUP, write: bool = True, profile: bool = False) -> dict[str, Any]:
    busy = harness.wait_quiet()
    fresh = None if profile else measure_fresh(samples, warmup)
    if fresh:
        print_result("(a) fresh mesh", fresh)
    loaded = prof = None
    if not fresh_only:
        items = harness.corpus(n)
        with harness.mesh(["a", "b"]) as (_root, (a, b)):
            sync_catchup.prepare(a, items)
            b.start()
            say(f"catch-up of {n:,} changes (set-up for (b))...")
            catchup = sync_catchup.measure(a, b, n, cap=cap)
            if catchup.get("complete"):
                # The same state as in run_sync_benchmarks.py, where (b) follows the idle-memory
                # benchmark: documents evicted on both nodes, B restarted.
                sync_memory.measure_idle(a, b)
                say(f"propagation (b) {n:,} entries held: {warmup} warm-up + {samples} "
                    "samples...")
                profilers = (sync_catchup.start_profilers(
                    [a, b], harness.SCRATCH / "profile-propagation") if profile else [])
                loaded = measure(a, b, samples=samples, warmup=warmup)
                for p in profilers:
                    p.send_signal(2)  # SIGINT: py-spy writes its output and exits
                prof = sync_catchup.stop_profilers(profilers) if profilers else None
                print_result(f"(b) {n:,} held", loaded)
                for name, p in (prof or {}).items():
                    say(f"  profile {name} ({p['samples']} samples), self by line:")
                    for f, v, c in p["self_lines"][:10]:
                        say(f"    {v:5.1f}%  {f}  {c}")
                    say(f"  profile {name}, inclusive:")
                    for f, v in p["inclusive"][:12]:
                        say(f"    {v:5.1f}%  {f}")
            else:
                say(f"catch-up did not complete ({catchup.get('error')}); no (b) figures")
    result = {"n": n, "fresh": fresh, "loaded": loaded, "profile": prof}
    harness.save_result(f"propagation-{n}" + ("-profile" if profile else ""), result)
    if write and (fresh or loaded):
        if profile and prof and loaded:
            title, body = profile_section(n, loaded, prof)
        else:
            title, body = section(n, fresh, loaded)
        write_section(title, body, extra_machine=harness.load_note(busy))
        say(f"wrote '{title}' to docs/benchmarks.md")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=harness.parse_n, default=100_000,
                    help="entries held in case (b) (default 100k)")
    ap.add_argument("--quick", action="store_true", help="N = 10k, for a smoke run")
    ap.add_argument("--samples", type=int, default=SAMPLES)
    ap.add_argument("--warmup", type=int, default=WARMUP)
    ap.add_argument("--cap", type=float, default=300.0, help="catch-up time limit, seconds")
    ap.add_argument("--fresh-only", action="store_true", help="only case (a)")
    ap.add_argument("--profile", action="store_true",
                    help="only case (b), sampling A and B with py-spy; writes a profile section")
    ap.add_argument("--no-write", action="store_true", help="print only, leave the report")
    args = ap.parse_args(argv)
    n = 10_000 if args.quick else args.n
    run(n, cap=args.cap, fresh_only=args.fresh_only, samples=args.samples,
        warmup=args.warmup, write=not args.no_write, profile=args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
