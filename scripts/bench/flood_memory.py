"""Benchmark: a receiver under a member's document flood stays bounded in memory and responsive.

A real node (the receiver) admits a member key; the benchmark then connects as that member over
the real peer protocol (tests/hostile.py: handshake, sealed frames) and floods it, paced just
under the per-connection frame budget so the flood is never cut off for its rate alone:

1. **documents**: one signed change in each of ``--docs`` new Memory documents (past the
   per-author burst of new documents, SPEC-005 §6.1 h), so the receiver creates, indexes and
   evicts a document per frame;
2. **bytes**: ``--bytes-mb`` MB of 200 KB entry texts, one change per frame, into one document.

The receiver's RSS is sampled every 100 ms from before the flood until it has been idle long
enough to evict what the flood loaded. Figures: its peak as a ratio to its own idle RSS before
the flood (same process, same run), the refusals it answered with, what it stored, and the
latency of ``GET /health`` during the flood as a ratio to the same request before it (the node
must still answer its owner). Several runs on fresh meshes; median, min and max (issue 18).

    .venv/bin/python scripts/bench/flood_memory.py              # 22,000 documents + 80 MB
    .venv/bin/python scripts/bench/flood_memory.py --quick      # 3,000 documents + 10 MB
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import statistics
import sys
import threading
import time
import urllib.request
from typing import Any

import harness
from harness import mb, say
from report import table, write_section

from crdt.identity import new_endorsement, open_repo, record_certs
from crdt.keys import DeviceKey
from crdt.store import Store
from tests.hostile import (
    StoreView,
    chunks_of,
    entry_changes,
    hostile_peer,
    sign,
    sync_frame,
)

FRAMES_PER_SECOND = 400  # under the 500/s refill of the node's frame budget (SPEC-005 §8.7)
BIG_TEXT = 200 * 1024
B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def flood_doc(i: int) -> tuple[str, str]:
    """The i-th flood document and an entry id that lives in it: months from 1970 on, eight
    buckets a month (SPEC-005 §10.1), so every frame names a document nobody else writes."""
    month, bucket = divmod(i, 8)
    year, month = 1970 + month // 12, month % 12 + 1
    rand = B32[bucket] + "".join(B32[(i >> (5 * k)) & 31] for k in range(9))
    return f"memory/note/{year}-{month:02d}/{bucket}", f"note-{year}{month:02d}-{rand}"


class Sampler(threading.Thread):
    """RSS of a process every 100 ms, and the latency of GET /health every 250 ms."""

    def __init__(self, node: harness.NodeProc) -> None:
        super().__init__(daemon=True)
        self.node, self.stop_flag = node, threading.Event()
        self.rss: list[int] = []
        self.health_ms: list[float] = []

    def run(self) -> None:
        tick = 0
        while not self.stop_flag.is_set():
            self.rss.append(harness.memory_kib(self.node.proc.pid).get("VmRSS", 0))
            if tick % 3 == 0:
                t0 = time.perf_counter()
                with urllib.request.urlopen(self.node.base + "/health", timeout=30) as r:
                    r.read()
                self.health_ms.append((time.perf_counter() - t0) * 1000)
            tick += 1
            time.sleep(0.1)


def p(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


async def flood(node: harness.NodeProc, key: DeviceKey, mesh_id: bytes, certs: list[bytes],
                docs: int, bytes_mb: int) -> dict[str, Any]:
    answers: collections.Counter[str] = collections.Counter()
    received: collections.Counter[str] = collections.Counter()
    sent = 0
    async with hostile_peer(node.peer_port, key, mesh_id, certs) as peer:

        async def drain() -> None:
            # Read everything the receiver says, as a peer must: a peer that stops reading
            # stalls the receiver's writes and, through them, its own flood.
            while True:
                try:
                    frame = await peer.recv(timeout=3600)
                except Exception as exc:  # closed, or undecodable: the flood is over
                    answers[f"ended: {type(exc).__name__} {exc}"[:80]] += 1
                    return
                kind = frame.get("t") if isinstance(frame, dict) else type(frame).__name__
                if kind in ("reject", "error"):
                    answers[f"{kind}:{frame.get('code')}"] += 1
                else:
                    received[str(kind)] += 1

        reader = asyncio.ensure_future(drain())
        started = time.monotonic()

        async def paced(frame: dict[str, Any]) -> None:
            nonlocal sent
            await peer.send(frame)
            sent += 1
            ahead = sent / FRAMES_PER_SECOND - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)

        for i in range(docs):
            doc, entry = flood_doc(i)
            changes = entry_changes(key, entry, [f"flood {i} " + "x" * 200])
            await paced(sync_frame(doc, chunks_of(changes), [sign(key, mesh_id, doc, changes)]))
        doc, entry = flood_doc(docs + 8)  # a bucket of its own for the byte flood
        texts = [f"{n:06d}" + "y" * BIG_TEXT for n in range(max(1, bytes_mb * 1024 * 1024
                                                                   // BIG_TEXT))]
        changes = entry_changes(key, entry, texts)
        for n, change in enumerate(changes):
            await paced(sync_frame(doc, [change.chunk], [sign(key, mesh_id, doc, [change])]))
            if n and n % 50 == 0:
                await asyncio.sleep(0)
        seconds = time.monotonic() - started
        # Stay connected until the receiver has worked through what it took in: the figure is
        # what a flood costs it, not how much a closed socket spares it.
        view, last, still_since = StoreView(node.data_dir), -1, time.monotonic()
        while time.monotonic() - still_since < 6 and time.monotonic() - started < 900:
            await asyncio.sleep(1)
            now = len(view.doc_ids())
            if now != last:
                last, still_since = now, time.monotonic()
        settled = time.monotonic() - started
        reader.cancel()
    return {"frames": sent, "seconds": round(seconds, 1), "settled_s": round(settled, 1),
            "answers": dict(answers), "received": dict(received)}


def one_run(docs: int, bytes_mb: int, idle_after: float) -> dict[str, Any]:
    flooder = DeviceKey.generate()
    with harness.mesh(["receiver"], keep=bool(os.environ.get("MAIA_BENCH_KEEP"))) as (_root, nodes):
        node = nodes[0]
        store = Store(node.data_dir)
        try:
            repo = open_repo(store, DeviceKey.load(node.data_dir / "keys" / "device.key"))
            mesh_id = repo.mesh_id
            record_certs(repo, [new_endorsement(repo.key, mesh_id, flooder.public_key,
                                                "flooding-member")])
            certs = [c.encode() for c in repo.roster.certs.values()]
        finally:
            store.close()
        node.start()
        time.sleep(8)  # settle: the reference is the idle node
        sampler = Sampler(node)
        sampler.start()
        time.sleep(3)
        idle_kib = min(sampler.rss)
        idle_health = list(sampler.health_ms)
        mark = len(sampler.health_ms)
        result = asyncio.run(flood(node, flooder, mesh_id, certs, docs, bytes_mb))
        during_health = sampler.health_ms[mark:]
        time.sleep(idle_after)
        sampler.stop_flag.set()
        sampler.join()
        hwm = harness.memory_kib(node.proc.pid)
        stored = {d for d in StoreView(node.data_dir).doc_ids() if d.startswith("memory/")}
        node.stop()
    return result | {
        "idle_kib": idle_kib, "peak_kib": hwm.get("VmHWM", 0), "end_kib": hwm.get("VmRSS", 0),
        "ratio": hwm.get("VmHWM", 0) / max(1, idle_kib), "docs_stored": len(stored),
        "health_idle_p50": p(idle_health, 0.5), "health_p50": p(during_health, 0.5),
        "health_p99": p(during_health, 0.99),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=harness.parse_n, default=22_000)
    parser.add_argument("--bytes-mb", type=int, default=80)
    parser.add_argument("--quick", action="store_true", help="3,000 documents and 10 MB")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    docs, bytes_mb = (3_000, 10) if args.quick else (args.docs, args.bytes_mb)
    from node.node import IDLE_EVICT_SECONDS, UPKEEP_INTERVAL

    idle_after = IDLE_EVICT_SECONDS + 3 * UPKEEP_INTERVAL
    runs = []
    for i in range(args.runs):
        say(f"run {i + 1}/{args.runs}: a member floods {docs:,} new documents and "
            f"{bytes_mb} MB at {FRAMES_PER_SECOND} frames/s...")
        r = one_run(docs, bytes_mb, idle_after)
        say(f"  {r['frames']:,} frames in {r['seconds']} s, worked through by "
            f"{r['settled_s']} s; peak {mb(r['peak_kib'])} = "
            f"{r['ratio']:.2f}x idle {mb(r['idle_kib'])}; {r['docs_stored']:,} documents "
            f"stored; answers {r['answers']}; frames back {r['received']}; "
            f"/health p50 {r['health_p50']:.1f} ms "
            f"(idle {r['health_idle_p50']:.1f} ms)")
        runs.append(r)
    ratios = sorted(r["ratio"] for r in runs)
    slow = sorted(r["health_p50"] / max(0.01, r["health_idle_p50"]) for r in runs)
    rows = [(f"run {i + 1}", f"{r['frames']:,} in {r['seconds']} s (done at {r['settled_s']} s)",
             mb(r["idle_kib"]),
             mb(r["peak_kib"]), f"{r['ratio']:.2f}x", mb(r["end_kib"]), f"{r['docs_stored']:,}",
             ", ".join(f"{k} {v:,}" for k, v in sorted(r["answers"].items())) or "none",
             f"{r['health_idle_p50']:.1f} / {r['health_p50']:.1f} / {r['health_p99']:.1f}")
            for i, r in enumerate(runs)]
    body = (
        f"One member key floods a receiver over the real peer protocol: one signed change in "
        f"each of {docs:,} new Memory documents, then {bytes_mb} MB of 200 KB texts, at "
        f"{FRAMES_PER_SECOND} frames/s (under the frame budget, so only the document and byte "
        "budgets stop it). Reference: the receiver's own idle RSS before the flood, and its "
        "`GET /health` latency before the flood.\n\n"
        + table(rows, ("run", "frames", "idle RSS", "peak RSS (VmHWM)", "peak / idle",
                       "RSS after idle", "documents stored", "answers to the flooder",
                       "/health p50 idle / p50 flood / p99 flood (ms)"))
        + f"\n\nPeak / idle: median **{statistics.median(ratios):.2f}x**, min {ratios[0]:.2f}x, "
        f"max {ratios[-1]:.2f}x. `/health` p50 during the flood / before it: median "
        f"{statistics.median(slow):.1f}x, min {slow[0]:.1f}x, max {slow[-1]:.1f}x."
    )
    write_section(f"Member flood ({docs:,} documents, {bytes_mb} MB)", body)
    harness.save_result(f"flood_memory_{docs}", {"runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
