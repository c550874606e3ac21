"""Where a catch-up's memory goes: B's RSS sampled every 50 ms, split by /proc/PID/smaps.

Node A holds N entries (``maia memory import``, compacted, kept in ``.scratch/catchup-memory-N``
so later runs reuse it); a fresh node B (a copy of the same joined, never-synced data dir each
run) catches up from A. B's VmRSS is read every 50 ms until AFTER seconds past the catch-up
(the search index's embedding runs then), and every 10 s its mappings are summed by kind: the
main heap ([heap]), other anonymous memory (thread arenas, large allocations), the LMDB
files, and other files (code, libraries, the model). Prints the timeline and the peak; it
writes nothing to docs/benchmarks.md (the catch-up benchmark reports the peak).

    .venv/bin/python scripts/bench/catchup_memory.py --n 100k [--after 30] [--b-env K=V ...]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import harness
from harness import SCRATCH, Api, NodeProc, make_mesh, say


def _mappings(pid: int):
    """(mapped file name or "", resident KiB) of each mapping of ``pid``, from smaps."""
    name = ""
    with open(f"/proc/{pid}/smaps") as fh:
        for line in fh:
            parts = line.split()
            if "-" in parts[0] and not parts[0].endswith(":"):
                name = parts[5] if len(parts) > 5 else ""
            elif parts[0] == "Rss:":
                yield name, int(parts[1])


def smaps(pid: int) -> dict[str, float]:
    """Resident MB of B by kind of mapping."""
    out: dict[str, float] = {}
    for name, kb in _mappings(pid):
        kind = (name or "[anon]") if not name or name.startswith("[") else (
            "lmdb" if name.endswith(".mdb") else "files")
        out[kind] = out.get(kind, 0.0) + kb / 1024
    return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1])[:5]}


def top_files(pid: int, k: int = 6) -> dict[str, float]:
    """Resident MB of B's largest mapped files (code, libraries, model weights)."""
    out: dict[str, float] = {}
    for name, kb in _mappings(pid):
        if name.startswith("/") and not name.endswith(".mdb"):
            key = "/".join(name.split("/")[-2:])
            out[key] = out.get(key, 0.0) + kb / 1024
    return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1])[:k]}


def prepare(root: Path, n: int) -> None:
    if (root / "b.pristine").exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    with harness.quiet():
        a, _b = make_mesh(root, ["a", "b"])
    say(f"importing {n:,} entries into a...")
    harness.import_offline(a, harness.corpus(n))
    harness.settle(a)
    a.stop()
    shutil.copytree(root / "b", root / "b.pristine")


def run(n: int, after: float, b_env: dict[str, str]) -> None:
    root = SCRATCH / f"catchup-memory-{n}"
    prepare(root, n)
    a, b = NodeProc(root / "a", "a"), NodeProc(root / "b", "b", env=b_env)
    shutil.rmtree(root / "b")
    shutil.copytree(root / "b.pristine", root / "b")
    a.start()
    b.start()
    api = Api(b)
    try:
        idle = harness.memory_kib(b.proc.pid)["VmRSS"] / 1024
        t0 = time.time()
        api.request("POST", "/v1/peers", {"address": f"127.0.0.1:{a.peer_port}"})
        pid, accepted, reached, next_poll, next_split = b.proc.pid, 0, None, 0.0, 0.0
        cpu0 = harness.cpu_seconds(pid)
        peak = (0.0, 0, 0)
        while True:
            now = time.time() - t0
            rss = harness.memory_kib(pid)["VmRSS"] / 1024
            if now >= next_poll:
                _, body = api.request("GET", "/v1/peers")
                accepted = sum(p.get("changes_accepted") or 0 for p in body["peers"])
                next_poll = now + 0.25
            if rss > peak[0]:
                peak = (rss, now, accepted)
            if now >= next_split:
                say(f"t={now:6.1f} s  accepted {accepted:7,}  RSS {rss:6.1f} MB  {smaps(pid)}")
                next_split = now + 10.0
            if reached is None and accepted >= n:
                reached = now
                say(f"caught up at {now:.1f} s, B's CPU {harness.cpu_seconds(pid) - cpu0:.1f} s;"
                    f" {smaps(pid)}; largest files {top_files(pid)}")
            if (reached is not None and now - reached > after) or now > 900:
                break
            time.sleep(0.05)
        hwm = harness.memory_kib(pid)["VmHWM"] / 1024
        say(f"peak RSS {peak[0]:.1f} MB at {peak[1]:.1f} s ({peak[2]:,} changes accepted); "
            f"VmHWM {hwm:.1f} MB; idle before {idle:.1f} MB; VmHWM / idle {hwm / idle:.2f}x")
    finally:
        api.close()
        b.stop()
        a.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=harness.parse_n, default=100_000)
    ap.add_argument("--after", type=float, default=30.0, help="seconds sampled after catch-up")
    ap.add_argument("--b-env", nargs="*", default=[], help="K=V for B's environment")
    args = ap.parse_args(argv)
    run(args.n, args.after, dict(kv.split("=", 1) for kv in args.b_env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
