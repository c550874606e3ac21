"""MCP ``memory_search`` round trip over stdio (SPEC-004 §15; target p50 < 30 ms).

One real node holding a corpus of memory entries; the official ``mcp`` client starts
``maia mcp`` exactly as an agent CLI does and calls ``memory_search``; the reference, measured in
the same run on the same node with the same session token and the same queries, is a direct
HTTP call of the search the tool makes (``GET /v1/memory/search?q=…&mode=hybrid``,
keep-alive). The ratio MCP/HTTP is the figure that travels between machines; the absolute
milliseconds say whether the target holds here. Median, min and max are over the runs' p50s.

    python scripts/bench/mcp_bench.py [--entries 2000] [--runs 5] [--calls 200]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import random
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from scripts.bench.harness import _WORDS, corpus  # noqa: E402
from scripts.bench.report import table, write_section  # noqa: E402
from tests.mcp_helpers import mcp_client  # noqa: E402
from tests.nodes import make_mesh  # noqa: E402
from tests.sessions_helpers import configure, register  # noqa: E402

TITLE = "MCP: memory_search round trip over stdio (SPEC-004 §15)"
FAST_API = {"rate_per_second": 10000, "rate_burst": 10000}


def say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def http_run(base: str, session: dict, queries: list[str], limit: int) -> list[float]:
    """Direct HTTP: the same search the tool makes, one keep-alive connection, in ms."""
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    token = session["token"]
    conn.request("POST", f"/v1/sessions/{session['session_id']}/heartbeat",
                 headers={"Authorization": f"Bearer {token}"})
    conn.getresponse().read()  # a session without heartbeats expires (SPEC-004 §2.6)
    out = []
    for q in queries:
        path = "/v1/memory/search?" + urllib.parse.urlencode(
            {"q": q, "limit": limit, "mode": "hybrid"})
        t0 = time.perf_counter()
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        body = resp.read()
        out.append((time.perf_counter() - t0) * 1000)
        assert resp.status == 200, body[:200]
        json.loads(body)
    conn.close()
    return out


async def interleaved(node, session: dict, queries: list[str], runs: int, limit: int) -> tuple[
        list[list[float]], list[list[float]], float]:
    """MCP runs over stdio and HTTP runs, alternating so both see the same machine; in ms.
    Also the time to the server's first answer."""
    t0 = time.perf_counter()
    mcp: list[list[float]] = []
    direct: list[list[float]] = []
    async with mcp_client(node, "--agent", "other") as client:
        started = (time.perf_counter() - t0) * 1000
        for q in queries[:20]:  # warm-up: imports, connections
            await client.call_tool("memory_search", {"query": q, "limit": limit})
        await asyncio.to_thread(http_run, node.base, session, queries[:20], limit)
        for _ in range(runs):
            times = []
            for q in queries:
                t = time.perf_counter()
                res = await client.call_tool("memory_search", {"query": q, "limit": limit})
                times.append((time.perf_counter() - t) * 1000)
                assert not res.is_error, res.content
            mcp.append(times)
            direct.append(await asyncio.to_thread(http_run, node.base, session, queries, limit))
    return mcp, direct, started


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entries", type=int, default=2000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--no-write", action="store_true", help="print only; leave benchmarks.md")
    args = p.parse_args()
    rng = random.Random(13)
    queries = [" ".join(rng.sample(_WORDS, rng.choice((1, 1, 2)))) for _ in range(args.calls)]
    with tempfile.TemporaryDirectory(prefix="maia-mcp-bench-") as tmp:
        (node,) = make_mesh(Path(tmp), ["bench"])
        configure(node, api=FAST_API)
        node.start()
        try:
            entries = corpus(args.entries)
            for i in range(0, len(entries), 2000):
                node.request("POST", "/v1/memory/import", {"entries": entries[i:i + 2000]})
            say(f"{args.entries} entries imported; {args.runs} runs of {args.calls} searches")
            session = register(node, Path(tmp))
            mcp, direct, started = asyncio.run(
                interleaved(node, session, queries, args.runs, args.limit))
        finally:
            node.stop()
    mcp_p50 = [statistics.median(r) for r in mcp]
    http_p50 = [statistics.median(r) for r in direct]
    ratios = [m / h for m, h in zip(mcp_p50, http_p50, strict=True)]
    overhead = [m - h for m, h in zip(mcp_p50, http_p50, strict=True)]
    all_mcp = [x for r in mcp for x in r]
    rows = [
        ("MCP memory_search over stdio, p50 (ms)", f"{statistics.median(mcp_p50):.2f}",
         f"{min(mcp_p50):.2f}", f"{max(mcp_p50):.2f}", "< 30"),
        ("direct HTTP GET /v1/memory/search?q= (reference), p50 (ms)",
         f"{statistics.median(http_p50):.2f}", f"{min(http_p50):.2f}", f"{max(http_p50):.2f}",
         ""),
        ("ratio MCP / HTTP (p50 of each run)", f"{statistics.median(ratios):.2f}",
         f"{min(ratios):.2f}", f"{max(ratios):.2f}", ""),
        ("MCP overhead: MCP p50 - HTTP p50 (ms)", f"{statistics.median(overhead):.2f}",
         f"{min(overhead):.2f}", f"{max(overhead):.2f}", ""),
        ("MCP p99 over all calls (ms)", f"{pct(all_mcp, 0.99):.2f}", "", "", ""),
    ]
    body = (
        f"{args.entries:,} memory entries (the sync benchmarks' corpus), {args.runs} runs of "
        f"{args.calls} searches of one or two words, limit {args.limit}, on one `maia up` "
        "process. The official `mcp` client (the SDK's `Client` over stdio) started "
        f"`maia mcp` as an agent CLI would (first answer after {started:.0f} ms: interpreter, "
        "session registration, SDK import); the HTTP reference runs alternate with the MCP "
        "runs, with a session token of the same scopes and the same queries, after 20 warm-up "
        "calls each."
        + "\n\n" + table(rows, ("what", "median", "min", "max", "target"))
        + "\n\nThe MCP figure includes the SDK's JSON-RPC framing and pydantic validation on "
        "both ends, and the server's own HTTP call to the node; the ratio is what MCP adds to "
        "the search itself: the node's ranked hybrid search (node/search/, the same call the "
        "tool makes)."
    )
    say(body)
    if not args.no_write:
        write_section(TITLE, body, extra_machine={"mcp (Python SDK)": _mcp_version()})
    return 0


def _mcp_version() -> str:
    from importlib import metadata

    return metadata.version("mcp")


if __name__ == "__main__":
    sys.exit(main())
