"""Shared pieces of the sync benchmarks: real nodes on loopback, a corpus, process figures.

Nodes are set up and run with the test harness (``tests/nodes.py``): the real CLI creates the
mesh and every node is a real ``maia up`` process on 127.0.0.1. Nothing here talks to any
other host.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCRATCH = ROOT / "scripts" / "bench" / ".scratch"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.nodes import NodeProc, cli, make_mesh  # noqa: E402

# The node's API allows 100 requests/s per principal with a burst of 200 (node/api/middleware.py);
# pollers stay under it so no figure is distorted by a 429.
API_RATE = 100.0
API_BURST = 200.0


def say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# -- corpus ------------------------------------------------------------------------------------

_VOCABULARY = (
    "meeting notes plan idea garden recipe budget travel train ticket doctor appointment "
    "project deadline review draft email reply call mother father friend birthday gift book "
    "chapter article summary question answer model prompt router backup laptop phone server "
    "update install config password rotate key device sync memory note fact skill journal "
    "morning evening weekend monday tuesday wednesday thursday friday coffee walk run bike "
    "weather rain sun cold warm remember buy milk bread cheese apples invoice tax receipt "
    "flight hotel museum concert movie series podcast episode learn practice guitar piano "
    "python rust automerge sqlite lmdb websocket latency throughput benchmark profile cache"
)
_WORDS = tuple(_VOCABULARY.split())
_TAGS = ("work", "home", "idea", "health", "travel", "code", "family", "finance", "reading",
         "music", "todo", "later")
KIND_WEIGHTS = {"note": 50, "fact": 20, "conversation": 15, "journal": 10, "skill": 5}


def corpus(n: int, seed: int = 20261125) -> list[dict[str, Any]]:
    """``n`` memory entries of realistic size: 100-300 characters of text, one or two tags."""
    rng = random.Random(seed)
    kinds = rng.choices(list(KIND_WEIGHTS), weights=list(KIND_WEIGHTS.values()), k=n)
    out = []
    for kind in kinds:
        size = rng.randint(100, 300)
        words: list[str] = []
        length = -1
        while length < size:
            w = rng.choice(_WORDS)
            words.append(w)
            length += len(w) + 1
        text = " ".join(words)[:size].rstrip()
        text = text[0].upper() + text[1:] + "."
        out.append({"text": text, "kind": kind, "tags": rng.sample(_TAGS, rng.randint(1, 2))})
    return out


def corpus_stats(items: list[dict[str, Any]]) -> dict[str, float]:
    sizes = [len(i["text"].encode()) for i in items]
    return {"entries": len(items), "text_bytes_mean": sum(sizes) / max(1, len(sizes)),
            "text_bytes_min": min(sizes), "text_bytes_max": max(sizes)}


def write_jsonl(items: list[dict[str, Any]], path: Path) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for item in items:
            fh.write(json.dumps(item) + "\n")
    return path


# -- a mesh of real nodes ----------------------------------------------------------------------

@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow what the in-process CLI prints (keys, invitations) so output stays figures."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


@contextlib.contextmanager
def mesh(names: list[str], *, keep: bool = False) -> Iterator[tuple[Path, list[NodeProc]]]:
    """A fresh mesh in a temporary directory; every node is stopped and the directory removed."""
    root = Path(tempfile.mkdtemp(prefix="maia-bench-"))
    nodes: list[NodeProc] = []
    try:
        with quiet():
            nodes = make_mesh(root, names)
        yield root, nodes
    finally:
        for node in nodes:
            with contextlib.suppress(Exception):
                node.stop()
        if keep:
            say(f"(kept the mesh in {root})")
        else:
            shutil.rmtree(root, ignore_errors=True)


def import_offline(node: NodeProc, items: list[dict[str, Any]]) -> float:
    """``maia memory import FILE`` on a stopped node's data dir; returns the seconds it took."""
    path = write_jsonl(items, node.data_dir.parent / f"{node.name}-import.jsonl")
    t0 = time.perf_counter()
    with quiet():
        code = cli(node.data_dir, "memory", "import", str(path))
    if code != 0:
        raise RuntimeError(f"maia memory import failed with exit code {code}")
    path.unlink()
    return time.perf_counter() - t0


def doc_ids(data_dir: Path, layer: str | None = None) -> list[str]:
    """Documents in a stopped node's store."""
    from crdt.store import Store

    store = Store(data_dir)
    try:
        return store.doc_ids(layer)
    finally:
        store.close()


def docs_due_for_compaction(data_dir: Path) -> set[str]:
    """Documents whose change log the node's upkeep will fold into a snapshot (node stopped)."""
    from crdt.documents import COMPACT_AFTER
    from crdt.store import Store

    store = Store(data_dir)
    try:
        return {d for d in store.doc_ids()
                if (m := store.doc_meta(d)) is not None and m.pending >= COMPACT_AFTER}
    finally:
        store.close()


def settle(node: NodeProc, timeout: float = 300.0) -> float:
    """Start ``node`` and let its upkeep compact what an import left, then restart it.

    The restart leaves the node as after a long idle spell: snapshots written, no document
    loaded. Returns the seconds the upkeep took.
    """
    due = docs_due_for_compaction(node.data_dir)
    node.start()
    t0 = time.perf_counter()
    deadline = time.monotonic() + timeout
    while due:
        done = set(re.findall(r"compacted (\S+)", node.log()))
        if due <= done:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{node.name} did not compact {sorted(due - done)[:3]}...")
        time.sleep(0.2)
    wait_search_settled(node, deadline - time.monotonic())
    took = time.perf_counter() - t0
    node.stop()
    node.start()
    return took


def wait_search_settled(node: NodeProc, timeout: float) -> dict[str, Any]:
    """Wait until ``node``'s search index has indexed and embedded every entry it holds.

    A node started on a fresh import indexes and embeds it in the background; left to a
    later start, that work ran during the measured catch-up, on the same two cores as the
    receiver (40% of the serving node's samples in a profile)."""
    api = Api(node)

    def done() -> dict[str, Any] | None:
        status, body = api.request("GET", "/v1/status")
        s = body.get("search") if status == 200 and isinstance(body, dict) else None
        if not isinstance(s, dict):
            return {"search": "off"}  # no search feature: nothing to wait for
        return s if s.get("pending") == 0 and s.get("shards_to_index") == 0 else None
    try:
        return wait_until(done, max(timeout, 1.0), interval=0.5,
                          what=f"{node.name}'s search index to settle")
    finally:
        api.close()


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05,
               what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what or predicate}")


# -- HTTP with keep-alive ----------------------------------------------------------------------

class Api:
    """A keep-alive client for one node's API that stays under the node's rate limit."""

    def __init__(self, node: NodeProc, *, rate: float = API_RATE * 0.9,
                 burst: float = API_BURST * 0.9) -> None:
        self.port = node.port
        self.headers = {"Authorization": f"Bearer {node.token}"}
        self.rate, self.burst = rate, burst
        self.tokens, self.at = burst, time.monotonic()
        self.conn: http.client.HTTPConnection | None = None
        self.requests = 0
        self.limited = 0

    def _take(self) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            time.sleep((1 - self.tokens) / self.rate)

    def wait_turn(self) -> None:
        """Wait until the rate limit allows one more request (see :meth:`request`)."""
        self._take()

    def request(self, method: str, path: str, body: Any = None, *,
                paced: bool = True) -> tuple[int, Any]:
        """One request; ``paced=False`` when the caller called :meth:`wait_turn` itself, so
        a latency it times does not include this client's own wait for the rate limit."""
        if paced:
            self._take()
        data = json.dumps(body).encode() if body is not None else None
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt == 2:
                    raise
                continue
            self.requests += 1
            if resp.status == 429:
                self.limited += 1
            try:
                return resp.status, json.loads(raw) if raw else None
            except ValueError:
                return resp.status, raw
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# -- process and socket figures ----------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM and friends of a process, in KiB (from /proc/PID/status)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS", "VmHWM", "RssAnon", "RssFile", "VmSwap")):
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0])
    return out


def rss_breakdown(pid: int, data_dir: Path) -> dict[str, int]:
    """Resident KiB split into anonymous memory, the node's LMDB maps and other file maps.

    LMDB maps its files, so pages it has read count in RSS as file-backed pages: they belong
    to the page cache and the kernel can drop them, unlike the anonymous (heap) part.
    """
    out = {"anon": 0, "lmdb": 0, "other_files": 0}
    path = None
    root = str(data_dir)
    try:
        lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        head = line.split()
        if not head:
            continue
        if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            path = head[5] if len(head) >= 6 else ""
        elif head[0] == "Rss:":
            kib = int(head[1])
            if path and path.startswith(root):
                out["lmdb"] += kib
            elif path and path.startswith("/"):
                out["other_files"] += kib
            else:
                out["anon"] += kib
    return out


def tcp_bytes(port: int) -> dict[str, int]:
    """Bytes sent (acknowledged) and received on established TCP sockets bound to ``port``.

    Read with ``ss -ti`` while the connection is open; this counts everything on the wire
    above TCP: WebSocket framing, the encrypted channel and the sync messages.
    """
    ss = shutil.which("ss")
    if not ss:
        return {}
    res = subprocess.run(
        [ss, "-tinH", "state", "established", f"( sport = :{port} )"],
        capture_output=True, text=True, timeout=10,
    )
    sent = received = sockets = 0
    for m in re.finditer(r"bytes_acked:(\d+)|bytes_received:(\d+)", res.stdout):
        if m.group(1):
            sent += int(m.group(1))
            sockets += 1
        else:
            received += int(m.group(2))
    return {"sent": sent, "received": received, "sockets": sockets}


def _proc_stat() -> tuple[int, int]:
    """(all ticks, idle ticks) summed over every CPU, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields), idle


def cpu_busy(interval: float = 2.0) -> float:
    """Fraction (0..1) of all CPUs busy over ``interval`` seconds (from /proc/stat)."""
    total0, idle0 = _proc_stat()
    time.sleep(interval)
    total1, idle1 = _proc_stat()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


class OtherLoad:
    """Share of the machine's CPU that processes other than ours used during a measurement.

    Ours: the given pids, this process and the children it has waited for. Other work on
    the machine slows the nodes down, so the share goes into the report with the figures.
    """

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.start = self._snap()

    def _ours(self) -> float:
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        for pid in self.pids:
            with contextlib.suppress(OSError, ValueError, IndexError):
                own += cpu_seconds(pid)
        return own

    def _snap(self) -> tuple[int, int, float]:
        total, idle = _proc_stat()
        return total, idle, self._ours()

    def stop(self) -> float:
        total0, idle0, ours0 = self.start
        total1, idle1, ours1 = self._snap()
        ticks = max(1, total1 - total0)
        busy = ticks - (idle1 - idle0)
        return max(0.0, (busy - (ours1 - ours0) * _CLK_TCK) / ticks)


def wait_quiet(threshold: float = 0.15, max_wait: float = 300.0) -> float:
    """Wait (bounded) until other work leaves the CPUs mostly idle; returns the last reading.

    Both nodes share this machine's cores, so another busy process would slow them down;
    the reading goes into the report next to the machine.
    """
    # MAIA_BENCH_QUIET_WAIT caps the wait on a machine shared with other work for hours: the
    # figures are ratios to a reference measured beside them, and the load goes in the report.
    max_wait = min(max_wait, float(os.environ.get("MAIA_BENCH_QUIET_WAIT", max_wait)))
    deadline = time.monotonic() + max_wait
    busy = cpu_busy()
    while busy > threshold and time.monotonic() < deadline:
        say(f"the machine is {busy:.0%} busy with other work; waiting for it to calm down...")
        time.sleep(10)
        busy = cpu_busy()
    return busy


def load_note(busy: float) -> dict[str, str]:
    return {"CPU busy with other work at start": f"{busy:.0%}"}


# -- figures -----------------------------------------------------------------------------------

def percentile(sorted_values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (``p`` in 0..1)."""
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def mb(kib: float) -> str:
    """KiB (as /proc reports them) in decimal megabytes, the unit of the targets."""
    return f"{kib * 1024 / 1e6:.1f} MB"


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def save_result(name: str, result: dict[str, Any]) -> Path:
    """Keep the raw figures of the last run (git-ignored) for later comparison."""
    path = SCRATCH / "results" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))
    return path


def parse_n(text: str) -> int:
    """``100000``, ``100k`` or ``100_000``."""
    text = text.strip().lower().replace("_", "")
    return int(float(text[:-1]) * 1000) if text.endswith("k") else int(text)
