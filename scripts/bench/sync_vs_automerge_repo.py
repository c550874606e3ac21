"""Benchmark: the same two-peer workload through maia-node and through automerge-repo.

automerge-repo (JavaScript, Node.js) is the reference for Automerge sync. Its side runs
``automerge_repo/sync_bench.mjs``: a WebSocket server repo (peer A) and a client repo (peer B)
in two Node.js processes over a real loopback WebSocket. A holds one document with the
benchmark's N entries, one change per entry, with the same fields and text as a maia-node
memory entry (written with the Python Automerge binding from the same corpus); a fresh B
finds it and syncs it (time from B's connection to B holding A's heads). Then 300 single-entry
writes on A, each timed until B's change event shows it. The same runs once more with an
empty document for the fresh-mesh propagation case, and once more with both repos keeping
their documents on disk through automerge-repo's Node.js file-system storage adapter
(``@automerge/automerge-repo-storage-nodefs``), since maia-node writes to disk too.

The npm packages (pinned in ``automerge_repo/package.json``) are installed with
``npm install --no-audit --no-fund`` into ``scripts/bench/.scratch/automerge_repo/``.
maia-node's side is the catch-up and propagation benchmarks (run here, or ``--reuse`` their
last saved results). Loopback only; automerge-repo is capped at ``--cap`` seconds.

    .venv/bin/python scripts/bench/sync_vs_automerge_repo.py            # N = 100k
    .venv/bin/python scripts/bench/sync_vs_automerge_repo.py --quick    # N = 10k
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import harness
import sync_catchup
import sync_propagation
from harness import SCRATCH, say
from report import table, write_section

HERE = Path(__file__).resolve().parent
JS_SRC = HERE / "automerge_repo"
JS_DIR = SCRATCH / "automerge_repo"
SAMPLES, WARMUP = sync_propagation.SAMPLES, sync_propagation.WARMUP


# -- automerge-repo side -----------------------------------------------------------------------

def npm_install(timeout: float = 600.0) -> dict[str, str]:
    """Install the pinned packages into the scratch dir (again only when package.json changed)."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise RuntimeError("Node.js and npm are needed for the automerge-repo side")
    JS_DIR.mkdir(parents=True, exist_ok=True)
    pkg = (JS_SRC / "package.json").read_bytes()
    stamp = JS_DIR / ".installed"
    digest = hashlib.sha256(pkg).hexdigest()
    for name in ("package.json", "sync_bench.mjs"):
        shutil.copyfile(JS_SRC / name, JS_DIR / name)
    if not (stamp.exists() and stamp.read_text() == digest
            and (JS_DIR / "node_modules").is_dir()):
        say("npm install (automerge-repo, pinned versions)...")
        res = subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=JS_DIR,
                             capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"npm install failed:\n{res.stderr[-2000:]}")
        stamp.write_text(digest)
    return js_versions()


def js_versions() -> dict[str, str]:
    out = {}
    for name in ("@automerge/automerge-repo", "@automerge/automerge-repo-network-websocket",
                 "@automerge/automerge-repo-storage-nodefs", "@automerge/automerge", "ws"):
        meta = JS_DIR / "node_modules" / name / "package.json"
        if meta.exists():
            out[name] = json.loads(meta.read_text())["version"]
    return out


def build_document(items: list[dict[str, Any]], path: Path) -> dict[str, Any]:
    """One Automerge document, one change per entry, fields as in maia-node's memory."""
    from automerge.core import ROOT, Document, ObjType
    from ceilings import write_entry

    t0 = time.perf_counter()
    doc = Document(actor_id=os.urandom(16))
    with doc.transaction() as tx:
        entries = tx.put_object(ROOT, "entries", ObjType.Map)
    author = "BENCHAA-" + "A" * 55  # the shape of a device id
    month = time.strftime("%Y%m", time.gmtime())
    for item in items:
        entry_id = f"{item['kind']}-{month}-{base64.b32encode(os.urandom(7)).decode()[:10]}"
        at = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        write_entry(doc, item, entry_id, at, parent=entries, author=author)
    data = doc.save()
    path.write_bytes(data)
    return {"entries": len(items), "bytes": len(data), "build_s": time.perf_counter() - t0}


def run_js(doc_path: Path, *, samples: int, warmup: int, cap: float,
           storage: Path | None = None) -> dict[str, Any]:
    """Run the Node.js side once; its last stdout line is one JSON object of figures.
    With ``storage``, both repos keep their documents there (the file-system adapter)."""
    cmd = ["node", "sync_bench.mjs", "--doc", str(doc_path), "--samples", str(samples),
           "--warmup", str(warmup), "--cap", str(int(cap))]
    if storage is not None:
        shutil.rmtree(storage, ignore_errors=True)
        storage.mkdir(parents=True)
        cmd += ["--storage", str(storage)]
    others = harness.OtherLoad([])
    try:
        res = subprocess.run(cmd, cwd=JS_DIR, capture_output=True, text=True,
                             timeout=cap + 120)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {cap + 120:.0f} s"}
    other_load = others.stop()
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"error": f"no result (exit {res.returncode}): {res.stderr[-1500:]}"}
    out = json.loads(lines[-1])
    out["other_load"] = other_load
    if storage is not None:
        out["storage_bytes"] = sum(f.stat().st_size for f in storage.rglob("*") if f.is_file())
        shutil.rmtree(storage, ignore_errors=True)
    if res.returncode != 0 and "error" not in out:
        out["error"] = f"exit {res.returncode}: {res.stderr[-500:]}"
    return out


# -- maia-node side ----------------------------------------------------------------------------

def run_maia(n: int, *, cap: float, samples: int, warmup: int, runs: int = 3
             ) -> dict[str, Any]:
    """Catch-ups of ``n`` changes, then propagation with them held; plus a fresh-mesh run."""
    items = harness.corpus(n)
    names = ["a"] + [f"b{i + 1}" for i in range(max(1, runs))]
    with harness.mesh(names) as (_root, (a, *bs)):
        info = sync_catchup.prepare(a, items)
        say(f"maia-node: catch-up of {n:,} changes...")
        catchup = sync_catchup.series(a, bs, n, cap=cap)
        catchup["info"] = info
        loaded = None
        if catchup["runs"][-1].get("complete"):
            say("maia-node: propagation with the entries held...")
            b = bs[len(catchup["runs"]) - 1]
            loaded = sync_propagation.measure(a, b, samples=samples, warmup=warmup)
    say("maia-node: propagation on a fresh mesh...")
    fresh = sync_propagation.measure_fresh(samples, warmup)
    return {"catchup": catchup, "loaded": loaded, "fresh": fresh}


def reuse_maia(n: int) -> dict[str, Any]:
    res = SCRATCH / "results"
    catchup = json.loads((res / f"catchup-{n}.json").read_text())
    prop = json.loads((res / f"propagation-{n}.json").read_text())
    return {"catchup": catchup, "loaded": prop.get("loaded"), "fresh": prop.get("fresh")}


# -- report ------------------------------------------------------------------------------------

def _ratio(m: float | None, j: float | None) -> str:
    if m is None or j is None or not j or m != m or j != j:
        return "n/a"
    return f"{m / j:.2f}"


def _fmt(v: float | None, spec: str, unit: str = "") -> str:
    if v is None or v != v:
        return "n/a"
    return f"{v:{spec}}{unit}"


def comparison_rows(n: int, maia: dict[str, Any], js: dict[str, Any],
                    js_fresh: dict[str, Any], js_fs: dict[str, Any] | None = None
                    ) -> list[tuple]:
    """Rows of maia-node against automerge-repo in memory, and (with ``js_fs``) against
    automerge-repo with its file-system storage: two more columns, value and ratio."""
    rows = _rows_against(n, maia, js, js_fresh)
    if js_fs is None:
        return rows
    fs_rows = _rows_against(n, maia, js_fs, {}, flushed=True)
    return [(*r, f[2], f[3]) for r, f in zip(rows, fs_rows, strict=True)]


def _rows_against(n: int, maia: dict[str, Any], js: dict[str, Any],
                  js_fresh: dict[str, Any], *, flushed: bool = False) -> list[tuple]:
    mc = maia["catchup"] if maia["catchup"].get("complete") else {}
    jc = dict(js.get("catchup") or {})
    jc_ok = bool(jc.get("complete"))
    if flushed and jc.get("flushed_from_connection_s"):
        # with storage: until B's repo has written what it received, as maia-node's figure
        # counts until stored
        jc["from_connection_s"] = jc["flushed_from_connection_s"]
        jc["changes_per_s"] = (jc.get("entries") or 0) / jc["from_connection_s"]
    mnet, jnet = mc.get("net") or {}, jc.get("net") or {}
    m_rss = (mc.get("b_rss_kib") or {}).get("VmRSS")
    m_rss = m_rss * 1024 / 1e6 if m_rss else None
    j_rss = jc.get("b_rss") / 1e6 if jc.get("b_rss") else None
    rows = [
        (f"catch-up of {n:,} changes: time from B's connection",
         _fmt(mc.get("duration_s"), ".2f", " s"),
         _fmt(jc.get("from_connection_s"), ".2f", " s") + ("" if jc_ok or not jc else
                                                           " (incomplete)"),
         _ratio(mc.get("duration_s"), jc.get("from_connection_s") if jc_ok else None)),
        ("catch-up rate (changes/s)", _fmt(mc.get("rate"), ",.0f"),
         _fmt(jc.get("changes_per_s") if jc_ok else None, ",.0f"),
         _ratio(mc.get("rate"), jc.get("changes_per_s") if jc_ok else None)),
        ("receiver (B) CPU time during catch-up", _fmt(mc.get("cpu_b_s"), ".2f", " s"),
         _fmt(jc.get("b_cpu_s"), ".2f", " s"), _ratio(mc.get("cpu_b_s"), jc.get("b_cpu_s"))),
        ("bytes A→B on the connection", harness.fmt_bytes(mnet["sent"]) if mnet else "n/a",
         harness.fmt_bytes(jnet["sent"]) if jnet else "n/a",
         _ratio(mnet.get("sent"), jnet.get("sent"))),
        ("receiver (B) RSS right after catch-up", _fmt(m_rss, ".0f", " MB"),
         _fmt(j_rss, ".0f", " MB"), _ratio(m_rss, j_rss)),
    ]
    for label, m, j in (("fresh", maia.get("fresh"), js_fresh.get("propagation")),
                        (f"{n:,} entries held", maia.get("loaded"), js.get("propagation"))):
        m, j = m or {}, j or {}
        for p in ("p50", "p99"):
            rows.append((f"live propagation {p}, {label}", _fmt(m.get(f"{p}_ms"), ".1f", " ms"),
                         _fmt(j.get(f"{p}_ms"), ".1f", " ms"),
                         _ratio(m.get(f"{p}_ms"), j.get(f"{p}_ms"))))
    return rows


def section(n: int, maia: dict[str, Any], js: dict[str, Any], js_fresh: dict[str, Any],
            versions: dict[str, str], doc_info: dict[str, Any],
            js_fs: dict[str, Any] | None = None) -> tuple[str, str]:
    title = f"Side by side with automerge-repo ({n:,} changes)"
    jc = js.get("catchup") or {}
    notes = [
        "Same workload, same machine, two peers over loopback. maia-node: two `maia up` "
        "processes, the entries in signed, sharded documents in LMDB (fsync per accepted "
        "batch), an authenticated, encrypted channel; propagation timed from before "
        "`POST /v1/memory` on A to the first 200 from polling B's API. automerge-repo "
        f"{versions.get('@automerge/automerge-repo', '?')} (`@automerge/automerge` "
        f"{versions.get('@automerge/automerge', '?')}, websocket adapter "
        f"{versions.get('@automerge/automerge-repo-network-websocket', '?')}, ws "
        f"{versions.get('ws', '?')}): a `WebSocketServerAdapter` repo and a "
        "`WebSocketClientAdapter` repo in two Node.js processes, no storage adapter (memory "
        "only), no signatures, no encryption, one unsharded document "
        f"({doc_info['entries']:,} entries, {harness.fmt_bytes(doc_info['bytes'])} saved) "
        "loaded into A with `repo.import`; propagation timed from just before "
        "`handle.change` on A to B's `change` event (no HTTP, no polling), with the repo's "
        "default 100 ms sync throttle.",
        "Ratio = maia-node ÷ automerge-repo: below 1 is better for maia-node in times, "
        "bytes and memory; above 1 is better in the rate.",
    ]
    if js_fs is not None:
        fc = js_fs.get("catchup") or {}
        notes.insert(1, (
            "File system: the same run with both repos keeping their documents on disk through "
            "`@automerge/automerge-repo-storage-nodefs` "
            f"{versions.get('@automerge/automerge-repo-storage-nodefs', '?')} (A's imported "
            "and flushed before B connects); the catch-up counts until B holds A's heads and "
            "`repo.flush()` has written them "
            f"({_fmt(fc.get('from_connection_s'), '.2f', ' s')} until the heads alone). The "
            "adapter writes each file with `fs.promises.writeFile` and never calls fsync, and "
            "keeps every binary it saved in a cache in memory; maia-node fsyncs every accepted "
            "batch before it acknowledges it. Files left on B's and A's disks: "
            f"{harness.fmt_bytes(js_fs.get('storage_bytes') or 0)}."
            + (f" The run stopped: {js_fs['error']}." if js_fs.get("error") else "")))
    loads = [("maia-node catch-up", (maia.get("catchup") or {}).get("other_load")),
             ("maia-node propagation (b)", (maia.get("loaded") or {}).get("other_load")),
             ("automerge-repo runs", js.get("other_load"))]
    if any(v is not None for _, v in loads):
        notes.append("Other processes used " + ", ".join(
            f"{v:.0%} ({k})" for k, v in loads if v is not None) + " of the machine's CPU.")
    if js.get("error"):
        notes.append(f"automerge-repo run stopped: {js['error']}.")
    if jc and not jc.get("complete"):
        notes.append(
            f"automerge-repo did not finish the catch-up within the cap ({js.get('cap_s')} s): "
            f"B held {jc.get('entries', 0):,} of {n:,} entries when it stopped.")
    jnet = jc.get("net") or {}
    if jnet.get("closed"):
        notes.append(
            f"During the automerge-repo catch-up, A's server accepted {jnet.get('connections')} "
            f"WebSocket connection(s) from B, and {jnet['closed']} had closed by the time B held "
            "every change: most likely the adapter's 5 s keep-alive, which B could not answer "
            "while applying the document. Bytes are counted on A's sockets, closed or not.")
    prop = js.get("propagation") or {}
    if prop.get("timeouts"):
        notes.append(f"automerge-repo propagation: writes not seen on B within 5 s (left out "
                     f"of its percentiles): {prop['timeouts']}.")
    body = "\n\n".join(notes[:1]) + "\n\n" + table(
        comparison_rows(n, maia, js, js_fresh, js_fs),
        ("figure", "maia-node", "automerge-repo", "ratio")
        + (("automerge-repo, file system", "ratio") if js_fs is not None else ())
    ) + "\n\n" + "\n\n".join(notes[1:])
    return title, body


def machine_extra(versions: dict[str, str], busy: float) -> dict[str, str]:
    return {"automerge-repo": versions.get("@automerge/automerge-repo", "?"),
            "@automerge/automerge": versions.get("@automerge/automerge", "?"),
            **harness.load_note(busy)}


def run(n: int, *, cap: float, js_cap: float, reuse: bool = False, samples: int = SAMPLES,
        warmup: int = WARMUP, write: bool = True, maia: dict[str, Any] | None = None
        ) -> dict[str, Any]:
    busy = harness.wait_quiet()
    versions = npm_install()
    say("automerge-repo versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if maia is None:
        maia = reuse_maia(n) if reuse else run_maia(n, cap=cap, samples=samples, warmup=warmup)
    work = SCRATCH / "automerge_repo_docs"
    work.mkdir(parents=True, exist_ok=True)
    doc_path, empty_path = work / f"entries-{n}.automerge", work / "entries-0.automerge"
    doc_info = build_document(harness.corpus(n), doc_path)
    build_document([], empty_path)
    say(f"automerge-repo: catch-up of {n:,} changes and propagation (cap {js_cap:.0f} s)...")
    js = run_js(doc_path, samples=samples, warmup=warmup, cap=js_cap)
    say("automerge-repo: propagation on an empty document...")
    js_fresh = run_js(empty_path, samples=samples, warmup=warmup, cap=js_cap)
    say("automerge-repo with its file-system storage: catch-up and propagation...")
    js_fs = run_js(doc_path, samples=samples, warmup=warmup, cap=js_cap,
                   storage=work / "nodefs")
    result = {"n": n, "versions": versions, "doc": doc_info, "maia": maia,
              "automerge_repo": js, "automerge_repo_fresh": js_fresh,
              "automerge_repo_nodefs": js_fs}
    harness.save_result(f"vs-automerge-repo-{n}", result)
    rows = comparison_rows(n, maia, js, js_fresh, js_fs)
    for r in rows:
        say(f"  {r[0]:<48} maia-node {r[1]:>12}  automerge-repo {r[2]:>12}  ratio {r[3]}"
            f"  file system {r[4]:>12}  ratio {r[5]}")
    if write:
        title, body = section(n, maia, js, js_fresh, versions, doc_info, js_fs)
        write_section(title, body, extra_machine=machine_extra(versions, busy))
        say(f"wrote '{title}' to docs/benchmarks.md")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=harness.parse_n, default=100_000, help="changes (default 100k)")
    ap.add_argument("--quick", action="store_true", help="N = 10k, for a smoke run")
    ap.add_argument("--cap", type=float, default=300.0, help="maia-node catch-up limit, s")
    ap.add_argument("--js-cap", type=float, default=300.0, help="automerge-repo run limit, s")
    ap.add_argument("--samples", type=int, default=SAMPLES)
    ap.add_argument("--warmup", type=int, default=WARMUP)
    ap.add_argument("--reuse", action="store_true",
                    help="take maia-node's figures from the last catch-up/propagation runs")
    ap.add_argument("--no-write", action="store_true", help="print only, leave the report")
    args = ap.parse_args(argv)
    n = 10_000 if args.quick else args.n
    run(n, cap=args.cap, js_cap=args.js_cap, reuse=args.reuse, samples=args.samples,
        warmup=args.warmup, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
