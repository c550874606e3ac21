"""Benchmark: catch-up of N signed memory changes to a fresh peer (target > 20k changes/s).

Node A holds N memory entries (``maia memory import`` of a realistic corpus on A's data dir
before A starts: one signed batch per shard per 1000 entries, one Automerge change per entry).
A fresh node B, joined to the mesh but never synced, adds A as a static peer; the time from
B's connection (``connected_since`` in B's ``/v1/peers``) to B having verified and applied all
N changes (``changes_accepted`` reaching its final value) is measured, with B's and A's CPU
time and the bytes on the peer connection (``ss``). Loopback only.

    .venv/bin/python scripts/bench/sync_catchup.py            # N = 100k
    .venv/bin/python scripts/bench/sync_catchup.py --quick    # N = 10k
    .venv/bin/python scripts/bench/sync_catchup.py --profile  # also sample B and A with py-spy
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import linecache
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import ceilings
import harness
from harness import Api, NodeProc, say
from report import table, write_section

TARGET_RATE = 20_000.0
POLL = 0.01


def prepare(a: NodeProc, items: list[dict[str, Any]]) -> dict[str, Any]:
    """Import ``items`` into A offline and let A settle (A is left running, nothing loaded)."""
    info: dict[str, Any] = {"corpus": harness.corpus_stats(items)}
    say(f"importing {len(items):,} entries into {a.name} (maia memory import)...")
    info["import_s"] = harness.import_offline(a, items)
    say(f"  {info['import_s']:.1f} s ({len(items) / info['import_s']:,.0f} entries/s)")
    info["shards"] = len(harness.doc_ids(a.data_dir, "memory"))
    say(f"starting {a.name} and letting its upkeep compact the imported shards...")
    info["settle_s"] = harness.settle(a)
    return info


def series(a: NodeProc, bs: list[NodeProc], n: int, *, cap: float,
           items: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One catch-up per fresh node in ``bs``, A restarted before each so it starts cold.

    Before each run, the binding alone syncs the same entries (one document, in this
    process) and loads them from change bytes: the ceilings of that moment, so each run is
    a ratio to a reference measured beside it (scripts/bench/ceilings.py).
    Returns the median run's figures (by rate) with every run's summary under ``runs``.
    The last node of ``bs`` is left running, caught up.
    """
    ref = ceilings.write_doc(items)[0] if items else None
    shards = ceilings.write_shards(items) if items else None
    results = []
    for i, b in enumerate(bs):
        if i:
            bs[i - 1].stop()
            a.stop()
            a.start()
        harness.wait_quiet(max_wait=180.0)  # other work on the 2 cores would skew this run
        ceiling = {}
        if ref is not None:
            rates = ceilings.sync_rates(ref)
            ceiling = {"binding_sync": rates["wall"], "binding_sync_cpu": rates["cpu"],
                       "binding_load": ceilings.load_rate(ref)}
            floor = ceilings.catchup_floor(shards)
            ceiling["floor_ratio"] = (n / rates["wall"]) / floor["floor_s"]
            ceiling["floor"] = floor
        b.start()
        say(f"catch-up run {i + 1}/{len(bs)}: fresh node {b.name} connects to {a.name}...")
        r = measure(a, b, n, cap=cap)
        r.update(ceiling)
        if ceiling and r.get("complete"):
            r["ratio"] = r["rate"] / ceiling["binding_sync"]
            r["searchable_ratio"] = r["searchable_rate"] / ceiling["binding_sync"]
            # CPU: the changes B took in per second of its own CPU (receive, verify, store,
            # apply, index) against the binding's sync per second of CPU (both sides).
            r["cpu_ratio"] = (n / max(r["cpu_b_s"], 1e-9)) / ceiling["binding_sync_cpu"]
        results.append(r)
        if r.get("complete"):
            say(f"  {r['duration_s']:.2f} s, {r['rate']:,.0f} changes/s, searchable after "
                f"{r['searchable_s']:.2f} s; binding sync {ceiling.get('binding_sync', 0):,.0f}"
                f"/s: {r.get('searchable_ratio', 0):.2f}x (by CPU {r.get('cpu_ratio', 0):.2f}x; "
                f"a receiver's floor {r.get('floor_ratio', 0):.2f}x); "
                f"B CPU {r['cpu_b_s']:.2f} s, peak "
                f"RSS {harness.mb(r['b_rss_kib'].get('VmHWM', 0))}, other load "
                f"{r.get('other_load') or 0:.0%}")
        else:
            say(f"  incomplete: {r.get('error')}")
            break
    done = sorted((r for r in results if r.get("complete")), key=lambda r: r["rate"])
    chosen = done[len(done) // 2] if done else results[-1]
    runs = [{k: r.get(k) for k in ("duration_s", "rate", "cpu_b_s", "cpu_a_s",
                                   "first_changes_s", "other_load", "complete", "searchable_s",
                                   "searchable_rate", "binding_sync", "binding_load", "ratio",
                                   "searchable_ratio", "binding_sync_cpu", "cpu_ratio",
                                   "floor_ratio", "floor")}
            | {"peak_rss_kib": r.get("b_rss_kib", {}).get("VmHWM"),
               "idle_rss_kib": r.get("b_idle_rss_kib"), "loadavg": r.get("loadavg")}
            for r in results]
    return {**chosen, "runs": runs}


def _accepted(peers: list[dict[str, Any]]) -> tuple[int, float | None]:
    total, since = 0, None
    for p in peers:
        total += p.get("changes_accepted") or 0
        if p.get("connected") and p.get("connected_since"):
            since = p["connected_since"]
    return total, since


def measure(
    a: NodeProc, b: NodeProc, n: int, *, cap: float, settle_s: float = 2.0,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """Connect the fresh B to A and time its catch-up of ``n`` changes."""
    api = Api(b)
    profilers = start_profilers([a, b], profile_dir) if profile_dir else []
    cpu_b0, cpu_a0 = harness.cpu_seconds(b.proc.pid), harness.cpu_seconds(a.proc.pid)
    others = harness.OtherLoad([a.proc.pid, b.proc.pid])
    other_load = None
    # B's own idle RSS before the catch-up: the reference its peak is reported against
    idle_kib = harness.memory_kib(b.proc.pid)["VmRSS"]
    loadavg = os.getloadavg()[0]
    t_add = time.time()
    status, _ = api.request("POST", "/v1/peers", {"address": f"127.0.0.1:{a.peer_port}"})
    if status >= 300:
        raise RuntimeError(f"adding the peer failed: HTTP {status}")
    samples: list[tuple[float, int, float, float]] = []  # wall, accepted, cpu_b, cpu_a
    since = None
    reached_at = None
    indexed_at, indexed = 0.0, None
    deadline = time.monotonic() + cap
    net = {}
    while time.monotonic() < deadline:
        status, body = api.request("GET", "/v1/peers")
        now = time.time()
        if status != 200:
            raise RuntimeError(f"GET /v1/peers: HTTP {status}")
        accepted, connected_since = _accepted(body["peers"])
        since = since or connected_since
        samples.append((now, accepted, harness.cpu_seconds(b.proc.pid),
                        harness.cpu_seconds(a.proc.pid)))
        if accepted >= n and reached_at is None:
            reached_at = now
            net = harness.tcp_bytes(a.peer_port)
            # Until listable and searchable (issue 17): B's memory index up to date, asked
            # at once (``/v1/status`` counts the index, bringing it up to date first).
            st_status, st = api.request("GET", "/v1/status")
            indexed_at = time.time()
            indexed = st.get("memory_entries") if st_status == 200 else None
            other_load = others.stop()
            for prof in profilers:  # the profile covers the catch-up, not the settle after it
                prof.send_signal(2)  # SIGINT: py-spy writes its output and exits
        if reached_at is not None and now - reached_at >= settle_s:
            break
        time.sleep(POLL)
    for prof in profilers:
        if prof.poll() is None and reached_at is None:
            prof.send_signal(2)
    final = samples[-1][1] if samples else 0
    done = next((s for s in samples if s[1] == final), None)
    result: dict[str, Any] = {"n": n, "cap_s": cap, "complete": reached_at is not None}
    if done is None or since is None or reached_at is None:
        result["error"] = f"B accepted {final:,} of {n:,} changes within {cap:g} s"
        result["accepted"] = final
        stop_profilers(profilers)
        return result
    t_done, _, cpu_b1, cpu_a1 = done
    duration = t_done - since
    searchable = max(t_done, indexed_at) - since
    first = next((s[0] for s in samples if s[1] >= min(n, 100)), t_done)
    result.update({
        "accepted": final,
        "connect_s": since - t_add,
        "first_changes_s": first - since,
        "duration_s": duration,
        "rate": n / duration,
        "searchable_s": searchable,
        "searchable_rate": n / searchable,
        "indexed_entries": indexed,
        "cpu_b_s": cpu_b1 - cpu_b0,
        "cpu_a_s": cpu_a1 - cpu_a0,
        "net": net,
        "poll_interval_s": POLL,
        "other_load": other_load,
        "b_idle_rss_kib": idle_kib,
        "loadavg": loadavg,
    })
    t0 = time.perf_counter()
    status, st = api.request("GET", "/v1/status")  # brings B's memory index up to date
    result["index_s"] = time.perf_counter() - t0
    result["b_entries"] = st.get("memory_entries") if status == 200 else None
    result["b_rss_kib"] = harness.memory_kib(b.proc.pid)  # VmHWM: B's peak since its start
    api.close()
    if profilers:
        result["profile"] = stop_profilers(profilers)
    return result


# -- optional profile (py-spy) -------------------------------------------------------------------

def _py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def start_profilers(nodes: list[NodeProc], out_dir: Path) -> list[subprocess.Popen]:
    exe = _py_spy()
    if exe is None:
        say("py-spy is not installed (.venv/bin/pip install py-spy); no profile taken")
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for node in nodes:
        out = out_dir / f"{node.name}.collapsed"
        p = subprocess.Popen(
            [exe, "record", "--pid", str(node.proc.pid), "--rate", "250", "--format", "raw",
             "--nonblocking", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        p.out = out  # type: ignore[attr-defined]
        p.node = node.name  # type: ignore[attr-defined]
        procs.append(p)
    time.sleep(1.0)  # let py-spy attach before the work starts
    return procs


def stop_profilers(procs: list[subprocess.Popen]) -> dict[str, Any]:
    out = {}
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(30)
        if p.poll() is None:
            p.kill()
            p.wait(5)
        path = p.out  # type: ignore[attr-defined]
        if path.exists():
            out[p.node] = hot_spots(path)  # type: ignore[attr-defined]
            out[p.node]["file"] = str(path)
    return out


_GLUE = ("asyncio/", "<frozen", "runpy", "threading.py")
_GLUE_FUNCS = ("cmd_up ", "main ", "<module> ")


def hot_spots(path: Path, top: int = 12) -> dict[str, Any]:
    """Self time (per line, with the line's code) and inclusive time per function.

    Read from py-spy's raw (collapsed) output right after the run, so the quoted code is the
    code that was profiled even if the file changes later.
    """
    own_lines: collections.Counter[str] = collections.Counter()
    code: dict[str, str] = {}
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        raw = stack.split(";")[1:]  # the first frame names the process/thread
        if not raw:
            continue
        total += c
        key = _short(raw[-1], keep_line=True)
        own_lines[key] += c
        if key not in code:
            code[key] = _source(raw[-1])
        for f in {_short(f) for f in raw}:
            if not f.startswith(_GLUE_FUNCS) and not any(g in f for g in _GLUE):
                incl[f] += c
    pct = 100.0 / max(1, total)
    return {
        "samples": total,
        "self_lines": [(f, round(c * pct, 1), code.get(f, "")) for f, c in
                       own_lines.most_common(top)],
        "inclusive": [(f, round(c * pct, 1)) for f, c in incl.most_common(top)],
    }


def _source(frame: str) -> str:
    """The code at a py-spy frame's ``(path:line)``, stripped (empty when unreadable)."""
    where = frame.partition(" (")[2].rstrip(")")
    file, _, lineno = where.rpartition(":")
    if not file or not lineno.isdigit():
        return ""
    return linecache.getline(file, int(lineno)).strip()[:90]


def _short(frame: str, *, keep_line: bool = False) -> str:
    """``func (/long/path/crdt/sync.py:123)`` -> ``func (crdt/sync.py)`` (or ``...:123``)."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file, _, lineno = where.rpartition(":")
    if not file:
        file, lineno = where, ""
    parts = Path(file).parts
    for anchor in ("crdt", "node", "aiohttp", "automerge", "lmdb", "nacl", "msgpack", "asyncio"):
        if anchor in parts:
            file = "/".join(parts[parts.index(anchor):])
            break
    else:
        file = Path(file).name
    return f"{name} ({file}:{lineno})" if keep_line and lineno else f"{name} ({file})"


# -- report --------------------------------------------------------------------------------------

def section(result: dict[str, Any], info: dict[str, Any]) -> tuple[str, str]:
    n = result["n"]
    title = f"Catch-up of {n:,} signed memory changes to a fresh peer"
    c = info["corpus"]
    method = (
        f"Node A holds {n:,} memory entries imported with `maia memory import` (one signed "
        f"batch per shard per 1000 entries, one Automerge change per entry; text "
        f"{c['text_bytes_min']}-{c['text_bytes_max']} bytes, mean {c['text_bytes_mean']:.0f}, "
        f"one or two tags, five kinds, {info['shards']} shards), compacted by its upkeep and "
        "restarted (no document loaded). A fresh node B (joined, never synced) adds A as a "
        "static peer; the time runs from B's `connected_since` to B's `changes_accepted` "
        f"reaching its final value (polled every {POLL * 1000:.0f} ms). Real `maia up` "
        "processes on loopback; both nodes share the machine's cores"
        + (f"; other processes used {result['other_load']:.0%} of the machine's CPU "
           "meanwhile." if result.get("other_load") is not None else ".")
    )
    if not result.get("complete"):
        body = method + "\n\n" + f"**Did not complete**: {result.get('error')}."
        return title, body
    net = result.get("net") or {}
    rate = result["rate"]
    runs = result.get("runs") or []
    rows = [
        ("changes to catch up", f"{n:,} memory changes (B accepted {result['accepted']:,}, "
                                "the rest are identity-document changes)"),
        ("time from B's connection to all verified and applied", f"{result['duration_s']:.2f} s"),
        ("rate until stored", f"{rate:,.0f} changes/s"
         + (" — median run below" if len(runs) > 1 else "")),
        ("first 100 changes applied on B after its connection",
         f"{result.get('first_changes_s', float('nan')):.2f} s"),
        ("B CPU time (all B did meanwhile: receive, verify, store, apply, upkeep)",
         f"{result['cpu_b_s']:.2f} s ({100 * result['cpu_b_s'] / result['duration_s']:.0f}% "
         "of one core)"),
        ("A CPU time (serve)", f"{result['cpu_a_s']:.2f} s"),
    ]
    if net:
        rows.append(("bytes on the peer connection", f"A→B {harness.fmt_bytes(net['sent'])}, "
                     f"B→A {harness.fmt_bytes(net['received'])} "
                     f"({net['sent'] / n:.0f} B per change)"))
    rows += [
        ("connection set-up (peer added → connected)", f"{result['connect_s'] * 1000:.0f} ms"),
        ("B's memory index brought up to date afterwards (`/v1/status`)",
         f"{result['index_s']:.2f} s, {result['b_entries']:,} entries"),
        ("B's RSS right after catch-up", harness.mb(result['b_rss_kib'].get('VmRSS', 0))),
        ("import on A (`maia memory import`, not part of catch-up)",
         f"{info['import_s']:.1f} s ({n / info['import_s']:,.0f} entries/s)"),
    ]
    done = [r for r in runs if r.get("complete") and r.get("searchable_ratio")]
    if done:
        sr = ceilings.spread([r["searchable_ratio"] for r in done])
        ra = ceilings.spread([r["ratio"] for r in done])
        rt = ceilings.spread([r["searchable_rate"] for r in done])
        peak = max(r["peak_rss_kib"] or 0 for r in done)
        rows[2:2] = [
            ("**until searchable on B, as a ratio to the binding's one-document sync in the "
             "same run**", f"**{ceilings.fmt_spread(sr)}x** (target >= 1.0x: "
             f"{harness.verdict(sr['median'] >= 1.0)})"),
            ("the floor of any receiver over this binding and this search index (the "
             "binding's receiving half into 40 shards, reading each entry back, the search "
             "index's SQL; no verification, storage, transport or Memory index), as the same "
             "ratio, same runs (`ceilings.catchup_floor`): the highest ratio reachable",
             ceilings.fmt_spread(ceilings.spread([r["floor_ratio"] for r in done])) + "x"
             + (" (1.0x is above it)" if max(r["floor_ratio"] for r in done) < 1.0 else "")),
            ("spread of the time until searchable (max/min over the runs)",
             f"{rt['spread']:.2f}x (target < 1.25x: {harness.verdict(rt['spread'] < 1.25)})"),
            ("until stored and applied only, ratio to the binding", ceilings.fmt_spread(ra) + "x"),
            ("by CPU time: changes per second of B's CPU against the binding's sync per second "
             "of CPU (less disturbed by other work on the machine)",
             ceilings.fmt_spread(ceilings.spread([r["cpu_ratio"] for r in done])) + "x"),
            ("binding alone: one-document sync / load from change bytes (changes/s)",
             " / ".join(ceilings.fmt_spread(ceilings.spread([r[k] for r in done]), "{:,.0f}")
                        for k in ("binding_sync", "binding_load"))),
            ("B's peak RSS (VmHWM) over the catch-up and indexing, highest run",
             f"{harness.mb(peak)} (target < 250 MB: {harness.verdict(peak * 1024 / 1e6 < 250)})"),
            ("B's peak RSS, median (min, max) of the runs",
             ceilings.fmt_spread(ceilings.spread([r["peak_rss_kib"] * 1024 / 1e6 for r in done]),
                                 "{:.1f}") + " MB"),
        ]
        if all(r.get("idle_rss_kib") for r in done):
            rows[2:2] = [
                ("B's peak RSS as a ratio to its own idle RSS just before the catch-up "
                 "(a fresh node, nothing loaded)",
                 ceilings.fmt_spread(ceilings.spread(
                     [r["peak_rss_kib"] / r["idle_rss_kib"] for r in done])) + "x (idle "
                 + ceilings.fmt_spread(ceilings.spread(
                     [r["idle_rss_kib"] * 1024 / 1e6 for r in done]), "{:.1f}") + " MB)")]
    body = method + "\n\n" + table(rows, ("figure", "value"))
    if len(runs) > 1:
        body += (
            f"\n\nEvery run ({len(runs)} fresh nodes B, A restarted cold before each; the table "
            "above is the median run):\n\n" + table(
                [(i + 1, f"{r['duration_s']:.2f} s", f"{r['rate']:,.0f}",
                  f"{r.get('searchable_s') or 0:.2f} s",
                  f"{r.get('binding_sync') or 0:,.0f}", f"{r.get('searchable_ratio') or 0:.2f}x",
                  f"{r.get('floor_ratio') or 0:.2f}x",
                  f"{r['cpu_b_s']:.2f} s", f"{r['cpu_a_s']:.2f} s",
                  harness.mb(r.get("peak_rss_kib") or 0), harness.mb(r.get("idle_rss_kib") or 0),
                  f"{r.get('other_load') or 0:.0%}", f"{r.get('loadavg') or 0:.1f}")
                 for i, r in enumerate(runs) if r.get("complete")],
                ("run", "stored", "changes/s", "searchable", "binding sync/s",
                 "ratio (searchable)", "floor's ratio", "B CPU", "A CPU", "B peak RSS",
                 "B idle RSS before", "other CPU load", "load average (1 min) at start")))
    return title, body


def profile_markdown(prof: dict[str, Any], during: str = "the catch-up") -> str:
    out = [f"Profile (py-spy, 250 Hz, during {during}; % of the process's samples). Self "
           "time is by line, with the code of that line when it was profiled; time spent in "
           "a native call (Automerge, libsodium, LMDB) counts as the line that made it."]
    for name, p in prof.items():
        out.append(f"\nNode {name} ({p['samples']:,} samples), self time:\n")
        out.append(table([(f"`{f}`", f"`{c}`" if c else "", f"{v:.1f}%")
                          for f, v, c in p["self_lines"][:10]], ("line", "code", "self")))
        out.append(f"\nNode {name}, inclusive time:\n")
        out.append(table([(f"`{f}`", f"{v:.1f}%") for f, v in p["inclusive"][:12]],
                         ("function", "inclusive")))
    return "\n".join(out)


def print_result(result: dict[str, Any]) -> None:
    if not result.get("complete"):
        say(f"catch-up INCOMPLETE: {result.get('error')}")
        return
    net = result.get("net") or {}
    say(f"catch-up: {result['n']:,} changes in {result['duration_s']:.2f} s from connection "
        f"= {result['rate']:,.0f} changes/s (target > 20,000/s: "
        f"{'met' if result['rate'] > TARGET_RATE else 'MISSED'})")
    say(f"  B CPU {result['cpu_b_s']:.2f} s, A CPU {result['cpu_a_s']:.2f} s, "
        f"connect {result['connect_s'] * 1000:.0f} ms, first changes after "
        f"{result.get('first_changes_s', 0):.2f} s, bytes A→B {net.get('sent', 0):,} "
        f"B→A {net.get('received', 0):,}")
    say(f"  B index up to date in {result['index_s']:.2f} s: {result['b_entries']} entries; "
        f"B RSS {harness.mb(result['b_rss_kib'].get('VmRSS', 0))}")
    for name, p in (result.get("profile") or {}).items():
        say(f"  profile {name} ({p['samples']} samples), self by line:")
        for f, v, c in p["self_lines"][:10]:
            say(f"    {v:5.1f}%  {f}  {c}")
        say(f"  profile {name}, inclusive:")
        for f, v in p["inclusive"][:12]:
            say(f"    {v:5.1f}%  {f}")


def profile_section(result: dict[str, Any], info: dict[str, Any]) -> tuple[str, str]:
    n = result["n"]
    title = f"Catch-up profile ({n:,} changes)"
    body = (
        "The catch-up benchmark run again with py-spy sampling both nodes (`sync_catchup.py "
        f"--profile`). Under the profiler: {result.get('duration_s', float('nan')):.2f} s, "
        f"{result.get('rate', float('nan')):,.0f} changes/s, B CPU "
        f"{result.get('cpu_b_s', float('nan')):.2f} s, A CPU "
        f"{result.get('cpu_a_s', float('nan')):.2f} s.\n\n"
        + profile_markdown(result.get("profile") or {})
    )
    return title, body


def run(n: int, *, cap: float, runs: int = 5, profile: bool = False, write: bool = True
        ) -> dict[str, Any]:
    busy = harness.wait_quiet()
    items = harness.corpus(n)
    runs = 1 if profile else max(1, runs)
    with harness.mesh(["a"] + [f"b{i + 1}" for i in range(runs)]) as (_root, (a, *bs)):
        info = prepare(a, items)
        if profile:
            bs[0].start()
            say(f"catch-up of {n:,} changes under py-spy: B connects to A...")
            result = measure(a, bs[0], n, cap=cap, profile_dir=harness.SCRATCH / "profile")
        else:
            result = series(a, bs, n, cap=cap, items=items)
        result["info"] = info
    print_result(result)
    harness.save_result(f"catchup-{n}" + ("-profile" if profile else ""), result)
    if write:
        # A profiled run reports its profile only: the figures come from an unprofiled run.
        make = profile_section if profile and result.get("profile") else section
        title, body = make(result, info)
        write_section(title, body, extra_machine=harness.load_note(busy))
        say(f"wrote '{title}' to docs/benchmarks.md")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=harness.parse_n, default=100_000, help="changes (default 100k)")
    ap.add_argument("--quick", action="store_true", help="N = 10k, for a smoke run")
    ap.add_argument("--cap", type=float, default=300.0, help="give up after this many seconds")
    ap.add_argument("--runs", type=int, default=5, help="catch-ups, each to a fresh node")
    ap.add_argument("--profile", action="store_true", help="sample A and B with py-spy")
    ap.add_argument("--no-write", action="store_true", help="print only, leave the report")
    args = ap.parse_args(argv)
    n = 10_000 if args.quick else args.n
    result = run(n, cap=args.cap, runs=args.runs, profile=args.profile,
                 write=not args.no_write)
    return 0 if result.get("complete") else 1


if __name__ == "__main__":
    sys.exit(main())
