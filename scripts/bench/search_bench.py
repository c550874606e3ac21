"""Benchmark: memory search on N entries (default 100,000), side by side with a baseline.

A real ``maia up`` node holds N entries (random-vocabulary notes from ``harness.corpus`` plus
the project's labelled retrieval set, tests/data/search_retrieval.json, mixed in). Measured:

- the default local model alone embedding the N texts (in this process, batches of 256);
- the node building its index from Memory after start (FTS5, vectors, HNSW), until nothing
  is pending, and the incremental case: 10 entries added through the API until embedded;
- hybrid search through the HTTP API (keep-alive client), p50 and p99, several runs;
- recall@5 of the labelled queries, now among N entries (text, semantic, hybrid);
- idle RSS of the node after a restart, indexes loaded;
- the baseline (``search_baseline.py``: FTS5 + exact numpy vectors + the same fusion, plain
  aiohttp) on the same data in the same run: build time, latency, recall@5, RSS.

    .venv/bin/python scripts/bench/search_bench.py             # N = 100k, writes the report
    .venv/bin/python scripts/bench/search_bench.py --n 10k     # another size
    .venv/bin/python scripts/bench/search_bench.py --quick     # N = 10k, report not written
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import harness
from harness import Api, mb, percentile, say, verdict
from report import table, write_section

DATA = harness.ROOT / "tests" / "data" / "search_retrieval.json"
TITLE = "Memory search (ranked and semantic, issue 13)"


def labelled() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    data = json.loads(DATA.read_text())
    return data["entries"], data["queries"]


def query_mix(queries: list[dict[str, Any]], n: int, seed: int = 7) -> list[str]:
    """The labelled queries plus random 2-3 word queries over the corpus vocabulary."""
    rng = random.Random(seed)
    words = harness._WORDS
    out = [q["q"] for q in queries]
    while len(out) < n:
        out.append(" ".join(rng.sample(words, rng.randint(2, 3))))
    rng.shuffle(out)
    return out[:n]


def latencies(get: Any, queries: list[str]) -> list[float]:
    out = []
    for q in queries:
        t0 = time.perf_counter()
        status, _ = get(q)
        out.append(time.perf_counter() - t0)
        if status != 200:
            raise RuntimeError(f"search answered {status} for {q!r}")
    return sorted(out)


def recall(get_texts: Any, queries: list[dict[str, Any]], by_text: dict[str, str]) -> float:
    total = 0.0
    for q in queries:
        got = {by_text.get(t) for t in get_texts(q["q"])}
        total += len(got & set(q["relevant"])) / len(q["relevant"])
    return total / len(queries)


def search_status(api: Api) -> dict[str, Any]:
    status, body = api.request("GET", "/v1/status")
    return body.get("search", {}) if status == 200 else {}


def wait_settled(api: Api, total: int, timeout: float) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        s = search_status(api)
        ok = (s.get("entries") == total and s.get("pending") == 0
              and s.get("shards_to_index") == 0 and s.get("vector_index") == s.get("vectors"))
        return s if ok else None
    return harness.wait_until(done, timeout, interval=0.2, what="the search index to settle")


def idle_rss(pid: int, data_dir: Path, max_wait: float = 90.0) -> dict[str, int]:
    """RSS once two readings 5 s apart agree within 1% (the node's upkeep has gone idle)."""
    last = harness.memory_kib(pid)["VmRSS"]
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        time.sleep(5)
        now = harness.memory_kib(pid)["VmRSS"]
        if abs(now - last) <= 0.01 * last:
            break
        last = now
    return harness.memory_kib(pid) | harness.rss_breakdown(pid, data_dir)


def run(n: int, runs: int, per_run: int) -> dict[str, Any]:
    from node.search.embedder import WordLlamaEmbedder

    busy = harness.wait_quiet()
    label_entries, label_queries = labelled()
    items = harness.corpus(n - len(label_entries)) + [
        {"text": e["text"], "kind": e["kind"], "tags": e["tags"]} for e in label_entries]
    random.Random(3).shuffle(items)
    by_text = {e["text"]: e["key"] for e in label_entries}
    queries = query_mix(label_queries, per_run)
    result: dict[str, Any] = {"n": n, "runs": runs, "per_run": per_run, "busy": busy}

    say(f"embedding {n:,} texts with the default model in this process...")
    model = WordLlamaEmbedder()
    texts = [i["text"] for i in items]
    t0 = time.perf_counter()
    for at in range(0, n, 256):
        model.embed(texts[at : at + 256])
    result["model_embed_s"] = time.perf_counter() - t0
    say(f"  {result['model_embed_s']:.1f} s")
    del model, texts

    with harness.mesh(["a"]) as (root, (node,)):
        say(f"importing {n:,} entries (maia memory import, node stopped)...")
        result["import_s"] = harness.import_offline(node, items)
        say(f"  {result['import_s']:.1f} s; starting the node, which builds its search index...")
        t0 = time.perf_counter()
        node.start(timeout=120)
        api = Api(node)
        status = wait_settled(api, n, timeout=1800)
        result["node_index_s"] = time.perf_counter() - t0
        result["status_after_build"] = status
        say(f"  index built in {result['node_index_s']:.1f} s: {status}")

        say("incremental: 10 entries through the API...")
        t0 = time.perf_counter()
        for i in range(10):
            api.request("POST", "/v1/memory",
                        {"text": f"Incremental entry {i}: the heron survey moved to Thursday"})
        wait_settled(api, n + 10, timeout=120)
        result["incremental_s"] = time.perf_counter() - t0
        say(f"  {result['incremental_s']:.2f} s until all 10 are embedded")
        api.close()

        say("restarting the node (indexes loaded from Runtime) for idle RSS and latency...")
        node.stop()
        t0 = time.perf_counter()
        node.start(timeout=120)
        api = Api(node)
        wait_settled(api, n + 10, timeout=600)
        result["restart_settled_s"] = time.perf_counter() - t0
        result["node_rss"] = idle_rss(node.proc.pid, node.data_dir)
        say(f"  idle RSS {mb(result['node_rss']['VmRSS'])}")

        jsonl = harness.write_jsonl(items, root / "baseline.jsonl")
        say("starting the baseline (FTS5 + numpy + RRF over plain aiohttp)...")
        port = harness.free_port() if hasattr(harness, "free_port") else _free_port()
        base = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("search_baseline.py")), str(jsonl),
             str(root / "baseline.sqlite3"), str(port)],
            stdout=subprocess.PIPE, text=True, cwd=harness.ROOT)
        try:
            ready = json.loads(base.stdout.readline())
            result["baseline_build"] = ready
            say(f"  baseline built: FTS {ready['fts_s']:.1f} s, embed {ready['embed_s']:.1f} s")
            bapi = _PlainApi(port)
            harness.wait_until(lambda: bapi.ok(), 30, what="the baseline to listen")

            def maia_get(q: str, mode: str = "hybrid", limit: int = 20) -> tuple[int, Any]:
                path = "/v1/memory/search?" + urllib.parse.urlencode(
                    {"q": q, "mode": mode, "limit": limit})
                return api.request("GET", path)

            def base_get(q: str, limit: int = 20) -> tuple[int, Any]:
                return bapi.get("/search?" + urllib.parse.urlencode({"q": q, "limit": limit}))

            for q in queries[:20]:  # warm both
                maia_get(q)
                base_get(q)
            per: list[dict[str, float]] = []
            for r in range(runs):
                m = latencies(maia_get, queries)
                b = latencies(base_get, queries)
                per.append({"maia_p50": percentile(m, 0.5), "maia_p99": percentile(m, 0.99),
                            "base_p50": percentile(b, 0.5), "base_p99": percentile(b, 0.99)})
                say(f"  run {r + 1}: maia p50 {per[-1]['maia_p50'] * 1e3:.1f} ms, p99 "
                    f"{per[-1]['maia_p99'] * 1e3:.1f} ms; baseline p50 "
                    f"{per[-1]['base_p50'] * 1e3:.1f} ms, p99 {per[-1]['base_p99'] * 1e3:.1f} ms")
            result["latency_runs"] = per
            result["loadavg"] = " / ".join(f"{x:.1f}" for x in __import__("os").getloadavg())
            result["api_limited"] = api.limited

            def maia_texts(mode: str) -> Any:
                return lambda q: [e["text"] for e in maia_get(q, mode, 5)[1]["entries"]]

            result["recall"] = {
                mode: recall(maia_texts(mode), label_queries, by_text)
                for mode in ("text", "semantic", "hybrid")}
            result["recall"]["baseline"] = recall(
                lambda q: [e["text"] for e in base_get(q, 5)[1]["entries"]], label_queries,
                by_text)
            say(f"  recall@5: {result['recall']}")
            result["baseline_rss"] = idle_rss(base.pid, root, max_wait=15)
            bapi.close()
        finally:
            base.terminate()
            base.wait(10)
        api.close()
    harness.save_result("search", result)
    return result


def _free_port() -> int:
    from tests.nodes import free_port

    return free_port()


class _PlainApi:
    """Keep-alive GETs to the baseline (no token, no rate limit)."""

    def __init__(self, port: int) -> None:
        import http.client

        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def ok(self) -> bool:
        try:
            return self.get("/search?q=x")[0] == 200
        except OSError:
            self.close_reopen()
            return False

    def close_reopen(self) -> None:
        import http.client

        port = self.conn.port
        self.conn.close()
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def get(self, path: str) -> tuple[int, Any]:
        self.conn.request("GET", path)
        resp = self.conn.getresponse()
        return resp.status, json.loads(resp.read())

    def close(self) -> None:
        self.conn.close()


def stats(values: list[float]) -> str:
    return (f"{statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})")


def ms(values: list[float]) -> str:
    v = [x * 1e3 for x in values]
    return f"{statistics.median(v):.1f} ms (min {min(v):.1f}, max {max(v):.1f})"


def write(r: dict[str, Any]) -> None:
    per = r["latency_runs"]
    m50 = [p["maia_p50"] for p in per]
    m99 = [p["maia_p99"] for p in per]
    b50 = [p["base_p50"] for p in per]
    b99 = [p["base_p99"] for p in per]
    rss = r["node_rss"]
    rec = r["recall"]
    n = r["n"]
    rows = [
        ("hybrid search through the HTTP API, p50", ms(m50), ms(b50),
         stats([a / b for a, b in zip(m50, b50, strict=True)]),
         f"< 15 ms: {verdict(statistics.median(m50) < 0.015)}"),
        ("hybrid search through the HTTP API, p99", ms(m99), ms(b99),
         stats([a / b for a, b in zip(m99, b99, strict=True)]),
         f"< 50 ms: {verdict(statistics.median(m99) < 0.050)}"),
        ("recall@5 of the labelled queries (hybrid)", f"{rec['hybrid']:.3f}",
         f"{rec['baseline']:.3f}", f"{rec['hybrid'] / max(rec['baseline'], 1e-9):.2f}", ""),
        (f"embedding {n:,} texts with the default model alone (same model in both columns: "
         f"the ratio is the machine's load varying between the two moments)",
         f"{r['model_embed_s']:.1f} s", f"{r['baseline_build']['embed_s']:.1f} s",
         f"{r['model_embed_s'] / r['baseline_build']['embed_s']:.2f}",
         f"< 60 s: {verdict(r['model_embed_s'] < 60)}"),
        (f"node start to {n:,} entries indexed and embedded (documents read, FTS5, vectors)",
         f"{r['node_index_s']:.1f} s",
         f"{r['baseline_build']['fts_s'] + r['baseline_build']['embed_s']:.1f} s (FTS5 + "
         f"matrix)", f"{r['node_index_s'] / (r['baseline_build']['fts_s'] + r['baseline_build']['embed_s']):.2f}",  # noqa: E501
         ""),
        ("10 new entries through the API until embedded", f"{r['incremental_s']:.2f} s", "",
         "", ""),
        ("idle RSS, indexes loaded (node restarted)", mb(rss["VmRSS"]),
         mb(r["baseline_rss"]["VmRSS"]),
         f"{rss['VmRSS'] / r['baseline_rss']['VmRSS']:.2f}",
         f"< 150 MB: {verdict(rss['VmRSS'] * 1024 / 1e6 < 150)}"),
    ]
    body = [
        f"A real `maia up` node holds {n:,} memory entries: random-vocabulary notes "
        f"(`harness.corpus`, 100-300 characters, one or two tags) with the project's labelled "
        f"retrieval set (tests/data/search_retrieval.json: {len(labelled()[0])} entries, "
        f"{len(labelled()[1])} queries, most sharing no word with their answer) mixed in. The "
        f"baseline (`scripts/bench/search_baseline.py`) does the same job on the same data in "
        f"the same run: SQLite FTS5 with BM25, every vector of the same model in one float32 "
        f"numpy matrix searched exactly, the same reciprocal rank fusion, served by plain "
        f"aiohttp with no authentication or validation. Latency: {r['runs']} runs of "
        f"{r['per_run']} hybrid queries (the labelled ones plus random 2-3 word ones, limit 20) "
        f"over one keep-alive connection each, the node's client kept under its rate limit "
        f"({r['api_limited']} answers were 429); figures are the median (min, max) over runs, "
        f"and the ratio is node / baseline per run.",
        "",
        table(rows, ("what", "maia-node", "baseline", "ratio node/baseline", "target")),
        "",
        f"recall@5 among {n:,} entries: text {rec['text']:.3f}, semantic {rec['semantic']:.3f}, "
        f"hybrid {rec['hybrid']:.3f}; baseline hybrid {rec['baseline']:.3f}.",
        "",
        f"Node idle RSS made of: heap/anonymous {mb(rss.get('anon', 0))}, data-dir file maps "
        f"(LMDB, SQLite) {mb(rss.get('lmdb', 0))}, other files (code, libraries, the model) "
        f"{mb(rss.get('other_files', 0))}. The restarted node loaded its vector file and was "
        f"settled {r['restart_settled_s']:.1f} s after start. Import of the entries (offline "
        f"`maia memory import`): {r['import_s']:.1f} s. Status after the build: "
        f"`{json.dumps(r['status_after_build'])}`. CPU busy with other work at start: "
        f"{r['busy']:.0%}; load average during the latency runs: {r.get('loadavg', '?')}.",
        "",
        "The corpus is a worst case for full-text ranking: its notes draw on a vocabulary of "
        "about 150 words, so each query word occurs in roughly a fifth of all entries and BM25 "
        "scores thousands of matches per query; notes in natural language, with a long-tailed "
        "vocabulary, match far fewer.",
    ]
    write_section(TITLE if n == 100_000 else f"{TITLE}, {n:,} entries", "\n".join(body))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="100k")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--per-run", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="10k entries, report not written")
    args = ap.parse_args()
    n = 10_000 if args.quick else harness.parse_n(args.n)
    result = run(n, args.runs, args.per_run)
    if not args.quick:
        write(result)
        say("written to docs/benchmarks.md")


if __name__ == "__main__":
    main()
