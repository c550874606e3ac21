"""Benchmark: what 100,000 signed rejections cost consolidation (SPEC-006 §12.4.4).

A member's device signs N deleted facts, each with a well-formed ``rejected`` digest, in one
change to one shard (the most a hostile member key could do at once). Measured in this process
on a real store (LMDB, signed Automerge documents), per run on a fresh one:

- the Memory index rebuild of that shard with the consolidation feature's tombstone reader
  (which fills the Runtime cache of rejections), as a ratio to the same rebuild without it
  (Runtime dropped in between, as after ``rm -r runtime``);
- the check of one proposed fact against a cache of N rejections (half of the digests asked
  are in it), as a ratio to the same check against an empty cache.

Median (min-max) of the runs.

    .venv/bin/python scripts/bench/rejections_bench.py               # N = 100,000, 5 runs
    .venv/bin/python scripts/bench/rejections_bench.py --n 10000 --runs 5 --no-write
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
from harness import say
from report import summary, table, write_section

from crdt.identity import create_mesh
from crdt.keys import DeviceKey
from crdt.store import Store
from node.consolidation.rejections import Rejections
from node.memory import Memory, new_entry_id, shard_of

LOOKUPS = 20_000


def digest(i: int) -> str:
    return hashlib.sha256(f"suppressed fact {i}".encode()).hexdigest()


def sign_rejections(memory: Memory, n: int) -> str:
    """N deleted facts with a ``rejected`` digest, one change to one shard; its doc id."""
    from automerge.core import ROOT, ObjType, ScalarType

    first = new_entry_id("fact")
    letters = str.maketrans("0123456789", "ABCDEFGHIJ")
    doc_id = shard_of(first)

    def edit(tx: Any) -> None:
        for i in range(n):
            obj = tx.put_object(ROOT, first[:-6] + f"{i:06d}".translate(letters), ObjType.Map)
            tx.put(obj, "kind", ScalarType.Str, "fact")
            tx.put(obj, "text", ScalarType.Str, f"suppressed fact {i}")
            tx.put(obj, "deleted_at", ScalarType.Str, "2026-12-01T00:00:00Z")
            tx.put(obj, "rejected", ScalarType.Str, digest(i))

    memory.repo.change(doc_id, edit)
    return doc_id


def drop_runtime(store: Store) -> None:
    """Empty the Runtime index and key-value databases (as after ``rm -r runtime``)."""
    for name in ("entries", "kv"):
        env, db = store.runtime_db(name)
        with env.begin(write=True, db=db) as txn:
            txn.drop(db, delete=False)


def lookups(cache: Rejections, n: int, seed: int) -> float:
    """Microseconds per check of a proposed fact's digest (half of them rejected)."""
    rng = random.Random(seed)
    asked = [digest(rng.randrange(2 * n)) for _ in range(LOOKUPS)]
    t0 = time.perf_counter()
    hits = sum(1 for d in asked if d in cache)
    took = time.perf_counter() - t0
    assert hits < LOOKUPS
    return took / LOOKUPS * 1e6


def one_run(n: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="maia-bench-rej-") as tmp, \
            tempfile.TemporaryDirectory(prefix="maia-bench-rej-empty-") as empty:
        store = Store(Path(tmp))
        repo = create_mesh(store, DeviceKey.generate(), "bench", "member")
        memory = Memory(repo)
        t0 = time.perf_counter()
        sign_rejections(memory, n)
        signed_s = time.perf_counter() - t0
        drop_runtime(store)
        plain = Memory(repo)
        t0 = time.perf_counter()
        plain.flush_index()
        plain_s = time.perf_counter() - t0
        drop_runtime(store)
        cached = Memory(repo)
        cache = Rejections(store)
        cached.tombstone_readers.append(cache.note_tombstones)
        t0 = time.perf_counter()
        cached.flush_index()
        reader_s = time.perf_counter() - t0
        assert digest(0) in cache and digest(n - 1) in cache
        full_us = lookups(cache, n, seed)
        empty_store = Store(Path(empty))
        empty_us = lookups(Rejections(empty_store), n, seed)
        empty_store.close()
        store.close()
    return {"n": n, "signed_s": signed_s, "rebuild_plain_s": plain_s,
            "rebuild_reader_s": reader_s, "rebuild_ratio": reader_s / plain_s,
            "lookup_us": full_us, "lookup_empty_us": empty_us,
            "lookup_ratio": full_us / empty_us}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    busy = harness.wait_quiet()
    runs = []
    for r in range(args.runs):
        got = one_run(args.n, seed=2000 + r)
        say(json.dumps(got))
        runs.append(got)
    harness.save_result(f"rejections-{args.n}", {"runs": runs})

    def col(key: str) -> list[float]:
        return [x[key] for x in runs]

    body = (
        f"A member's device signs {args.n:,} deleted facts, each with a well-formed `rejected` "
        "digest, in one change to one shard. In this process, on a real store, per run: the "
        "Memory index rebuild of that shard (Runtime dropped before, as after `rm -r runtime`) "
        "with the consolidation feature's tombstone reader filling the rejection cache, as a "
        "ratio to the same rebuild without the reader; and the check of one proposed fact "
        f"against the cache of {args.n:,} rejections ({LOOKUPS:,} checks, half of them "
        "rejected), as a ratio to the same check against an empty cache. "
        f"Median (min-max) of {len(runs)} runs.\n\n"
        + table([
            ("index rebuild with the rejection cache, s", summary(col("rebuild_reader_s"))),
            ("index rebuild without it, s (reference)", summary(col("rebuild_plain_s"))),
            ("ratio rebuild with / without", summary(col("rebuild_ratio"))),
            ("check of one proposed fact, µs", summary(col("lookup_us"))),
            ("check against an empty cache, µs (reference)", summary(col("lookup_empty_us"))),
            ("ratio check full / empty", summary(col("lookup_ratio"))),
            ("signing the rejections (the member's side), s", summary(col("signed_s"))),
        ], ("what", "median (min-max)"))
    )
    say(body)
    if not args.no_write:
        title = f"Consolidation with {args.n:,} signed rejections"
        write_section(title, body, extra_machine=harness.load_note(busy))
        say(f"wrote '{title}' to docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
