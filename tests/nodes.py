"""Test harness: real node processes on loopback, each with its own data dir.

Nodes are set up with the real CLI (``maia init``, ``device add``, ``join``) and run with
``maia up`` as separate processes, so tests exercise exactly what a user runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.cli import main as cli_main

# Ports for nodes come from below the kernel's ephemeral range (32768-60999 here): a port the
# kernel handed out by bind(0) can be handed out again, for an outgoing connection of this or
# another test process, before the node binds it. Picked at random (not from `random`, which
# pytest-randomly reseeds identically in every xdist worker), never twice in one process.
_PORT_RANGE = (20000, 32768)
_handed_out: set[int] = set()
_pick = random.SystemRandom()


def free_port() -> int:
    for _ in range(1000):
        port = _pick.randrange(*_PORT_RANGE)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))  # also free on every address, 127.0.0.1 included
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {_PORT_RANGE}")


def cli(data_dir: Path, *args: str) -> int:
    """Run a CLI command in-process (fast) against ``data_dir``; returns its exit code."""
    return cli_main(["--data-dir", str(data_dir), *args])


def cli_out(data_dir: Path, *args: str) -> str:
    """Run the CLI as a subprocess and return stdout (for commands whose output we parse)."""
    res = subprocess.run(
        [sys.executable, "-m", "node.cli", "--data-dir", str(data_dir), *args],
        capture_output=True, text=True, timeout=60,
    )
    if res.returncode != 0:
        raise AssertionError(f"maia {' '.join(args)} failed: {res.stderr}")
    return res.stdout


class _PortTaken(Exception):
    """The node could not bind a port ``free_port`` picked: another process took it first."""


@dataclass
class NodeProc:
    """One running ``maia up`` process."""

    data_dir: Path
    name: str
    port: int = 0
    peer_port: int = 0
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    peer_listen: str = "127.0.0.1"
    host: str = "127.0.0.1"  # where the local API listens (a namespace's address in netns tests)
    prefix: list[str] = field(default_factory=list)  # e.g. ["ip", "netns", "exec", "ns-a"]

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token(self) -> str:
        return (self.data_dir / "runtime" / "api.token").read_text().strip()

    def start(self, timeout: float = 60.0) -> NodeProc:
        """Start ``maia up`` and return once this process serves (not merely once something
        answers on its port). Ports this call picks are picked again if another process on
        the machine (another test run) took one before the node bound it."""
        if self.proc is not None and self.proc.poll() is None:
            # a second process would fail on the data dir's lock and orphan this one
            raise AssertionError(f"node {self.name} is already running (pid {self.proc.pid})")
        picked = (not self.port, not self.peer_port)
        for attempt in range(3):
            if attempt:
                self.port = 0 if picked[0] else self.port
                self.peer_port = 0 if picked[1] else self.peer_port
            try:
                return self._start_once(timeout)
            except _PortTaken as exc:
                if not any(picked) or attempt == 2:
                    raise AssertionError(str(exc)) from None
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> NodeProc:
        if not self.port:
            self.port = free_port()
        if not self.peer_port:
            self.peer_port = free_port()
        self.log_path = self.data_dir.parent / f"{self.name}.log"
        log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
        logf = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        # mDNS stays off unless a test turns it on (the netns tests): nothing multicasts on
        # the machine's real interfaces.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "MAIA_DISCOVERY": "0", **self.env}
        launched = time.time()
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "node.cli", "--data-dir", str(self.data_dir),
             "--log-level", "INFO", "up", "--listen", self.host, "--port", str(self.port),
             "--peer-port", str(self.peer_port), "--peer-listen", self.peer_listen],
            stdout=logf, stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (code := self.proc.poll()) is not None:
                out = self.log()[log_from:]
                if "address already in use" in out.lower():
                    raise _PortTaken(f"node {self.name}: a port was taken: {out}")
                raise AssertionError(f"node {self.name} exited with code {code}: {self.log()}")
            # Something else on the machine may answer on this port (a port is free when
            # picked, not necessarily when bound): the node is ready once it recorded its own
            # start (node.json, written after both listeners are up) and its API answers.
            if self._started_since(launched):
                try:
                    self.request("GET", "/health", auth=False)
                    return self
                except (OSError, urllib.error.URLError):
                    pass
            time.sleep(0.05)
        raise AssertionError(f"node {self.name} did not start: {self.log()}")

    def _started_since(self, launched: float) -> bool:
        """node.json names this port and this process: its pid, or with a prefix (which may
        run the node as a child) a file written after ``launched``. Not ``started_at``: a
        node may run on a shifted clock (tests/test_sessions_clocks.py); file times are the
        kernel's."""
        path = self.data_dir / "runtime" / "node.json"
        try:
            info = json.loads(path.read_text())
            written = path.stat().st_mtime
        except (OSError, ValueError):
            return False
        if info.get("port") != self.port or self.proc is None:
            return False
        return info.get("pid") == self.proc.pid if not self.prefix else written >= launched - 0.05

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        code = self.proc.returncode
        self.proc = None
        return code

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    def request(
        self, method: str, path: str, body: Any = None, *, auth: bool = True,
        timeout: float = 10.0,
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if auth:
            req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")

    # conveniences
    def add_memory(self, text: str, **kw: Any) -> dict[str, Any]:
        return self.request("POST", "/v1/memory", {"text": text, **kw})

    def entries(self) -> list[dict[str, Any]]:
        return self.request("GET", "/v1/memory?limit=1000")["entries"]

    def entry(self, entry_id: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", f"/v1/memory/{entry_id}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def add_peer(self, other: NodeProc) -> None:
        self.request("POST", "/v1/peers", {"address": f"127.0.0.1:{other.peer_port}"})

    def connected(self) -> set[str]:
        peers = self.request("GET", "/v1/peers")["peers"]
        return {p["device_id"] for p in peers if p.get("connected")}

    def device_id(self) -> str:
        return self.request("GET", "/v1/status")["device_id"]


def make_mesh(root: Path, names: list[str]) -> list[NodeProc]:
    """Set up one mesh: the first node founds it, the others are enrolled and join (CLI)."""
    nodes = []
    first = root / names[0]
    assert cli(first, "init", "--new-mesh", "--name", names[0]) == 0
    nodes.append(NodeProc(first, names[0]))
    for name in names[1:]:
        d = root / name
        assert cli(d, "init", "--name", name) == 0
        request = cli_out(d, "device", "request").split("maia device add ")[1].split()[0]
        invite = cli_out(first, "device", "add", request, "--name", name)
        invitation = invite.split("maia join ")[1].split()[0]
        assert cli(d, "join", invitation) == 0
        nodes.append(NodeProc(d, name))
    return nodes


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what or predicate}: last={last!r}")


@contextlib.contextmanager
def connected_pair(root: Path) -> Iterator[tuple[NodeProc, NodeProc]]:
    """Two started nodes of one mesh, b dialling a, stopped on exit (module-scoped fixtures)."""
    a, b = make_mesh(root, ["a", "b"])
    try:
        a.start()
        b.start()
        b.add_peer(a)
        wait_for(lambda: a.connected() and b.connected(), what="a and b connected")
        yield a, b
    finally:
        a.stop()
        b.stop()
