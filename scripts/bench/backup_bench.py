"""Benchmark: backup and verify of N memory entries (time and size), then an incremental
backup after 1,000 new entries (SPEC-002).

A real node holds the entries (imported with ``maia memory import``, then compacted by the
node's upkeep) and keeps running while ``maia backup create`` and ``maia backup verify`` run
as separate processes, as an owner would run them. Wall times include Python start-up and the
argon2id unlock (MODERATE, the default); "work" is the time the command itself reports.

    .venv/bin/python scripts/bench/backup_bench.py             # N = 100k
    .venv/bin/python scripts/bench/backup_bench.py --quick     # N = 10k, report not written
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import harness
from harness import fmt_bytes, say
from report import table, write_section

PASSPHRASE = "benchmark passphrase, not a secret"


def maia(data: Path, *args: str) -> tuple[float, Any]:
    """Run ``maia --data-dir DATA ARGS --json`` as its own process; (wall seconds, JSON)."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", "--data-dir", str(data), *args, "--json"],
        capture_output=True, text=True, timeout=3600, cwd=harness.ROOT,
        env={**os.environ, "MAIA_BACKUP_PASSPHRASE": PASSPHRASE},
    )
    took = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"maia {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    return took, json.loads(done.stdout)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run(n: int, increment: int) -> dict[str, Any]:
    load = os.getloadavg()[0]
    with harness.mesh(["a"]) as (root, (node,)):
        items = harness.corpus(n + increment)
        say(f"importing {n:,} entries with maia memory import...")
        imported = harness.import_offline(node, items[:n])
        say(f"  {imported:.1f} s; letting the node compact its shards...")
        harness.settle(node)  # node running, shards compacted, nothing loaded
        memory_env = du(node.data_dir / "memory")
        repo = root / "backups"
        with harness.quiet():
            assert harness.cli(node.data_dir, "backup", "init", "--to", str(repo),
                               "--passphrase-file", str(_secret(root))) == 0
        say("full backup while the node runs...")
        full_wall, full = maia(node.data_dir, "backup", "create")
        say(f"  {full_wall:.1f} s, {fmt_bytes(full['total_bytes'])}")
        say("verify (restore into a temporary data dir and check everything)...")
        ver_wall, (ver,) = maia(node.data_dir, "backup", "verify")
        say(f"  {ver_wall:.1f} s")
        say(f"importing {increment:,} more entries through the running node...")
        path = harness.write_jsonl(items[n:], root / "more.jsonl")
        with harness.quiet():
            assert harness.cli(node.data_dir, "memory", "import", str(path)) == 0
        say("incremental backup...")
        inc_wall, inc = maia(node.data_dir, "backup", "create")
        say(f"  {inc_wall:.1f} s, {fmt_bytes(inc['new_bytes'])} new")
        inc_ver_wall, (inc_ver,) = maia(node.data_dir, "backup", "verify")
        repo_size = du(repo)
    return {
        "entries": n, "increment": increment, "import_s": imported, "load": load,
        "memory_env_bytes": memory_env, "repo_bytes": repo_size,
        "full": full, "full_wall": full_wall, "verify": ver, "verify_wall": ver_wall,
        "inc": inc, "inc_wall": inc_wall, "inc_verify": inc_ver, "inc_verify_wall": inc_ver_wall,
    }


def _secret(root: Path) -> Path:
    path = root / "passphrase"
    path.write_text(PASSPHRASE + "\n")
    return path


def render(r: dict[str, Any]) -> str:
    full, inc = r["full"], r["inc"]
    rows = [
        (f"full backup of {r['entries']:,} entries", f"{r['full_wall']:.1f} s",
         f"{full['seconds']:.1f} s", fmt_bytes(full["total_bytes"]),
         f"{full['new_chunks']} chunks, {full['changed_documents']} documents"),
        ("verify it (restore + every check)", f"{r['verify_wall']:.1f} s",
         f"{r['verify']['seconds']:.1f} s", "",
         f"{r['verify']['counts']['changes']:,} changes, "
         f"{r['verify']['counts']['batches']} signed batches"),
        (f"incremental backup after {r['increment']:,} new entries", f"{r['inc_wall']:.1f} s",
         f"{inc['seconds']:.1f} s", fmt_bytes(inc["new_bytes"]) + " new",
         f"{inc['new_chunks']} new chunks, {inc['changed_documents']} documents changed, "
         f"{inc['unchanged_documents']} reused"),
        ("verify the incremental backup", f"{r['inc_verify_wall']:.1f} s",
         f"{r['inc_verify']['seconds']:.1f} s", fmt_bytes(inc["total_bytes"]) + " listed", ""),
    ]
    return (
        f"{r['entries']:,} memory entries (100-300 characters, 5 kinds, one month) imported "
        f"with `maia memory import` into a running `maia up` node; its memory environment "
        f"holds {fmt_bytes(r['memory_env_bytes'])} on disk. `maia backup create|verify` run "
        "as their own processes beside the running node, into a repository on the same disk "
        f"(final size {fmt_bytes(r['repo_bytes'])}). Wall time includes Python start-up and "
        "the argon2id MODERATE unlock (about 0.5 s); work is what the command reports. Load "
        f"average when the run started: {r['load']:.1f} (other work shared the 2 cores).\n\n"
        + table(rows, ("what", "wall", "work", "size", "detail"))
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entries", type=harness.parse_n, default=100_000)
    p.add_argument("--increment", type=int, default=1000)
    p.add_argument("--quick", action="store_true", help="10k entries; the report is not written")
    args = p.parse_args()
    n = 10_000 if args.quick else args.entries
    result = run(n, args.increment)
    body = render(result)
    say(body)
    harness.save_result("backup", {k: v for k, v in result.items()})
    if not args.quick:
        write_section(f"Backup and verify: {n:,} memory entries", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
