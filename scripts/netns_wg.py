"""A WireGuard tunnel between two hosts of a NamespaceLan, over a slow "internet" (needs root).

Used by the away-from-home test and the heal benchmark: the home server and the laptop get a
second veth pair (the internet: 192.0.2.0/30), slowed by ``tc netem`` delay and loss on the
laptop's side or, where the kernel has no netem qdisc, by a UDP relay that delays and drops
WireGuard's datagrams the same way (scripts/udp_impair.py). The server refuses TCP on it (a
home router forwards only WireGuard's UDP port), and userspace ``wireguard-go`` runs a ``wg*``
interface in both (10.99.0.1 and 10.99.0.2). The laptop's end comes up only when a test says
so: the laptop "joins the tunnel".

    with NamespaceLan("maiaw", ["server", "desktop", "laptop"]) as lan, \\
            WireGuardLink(lan, "server", "laptop", delay_ms=60, loss=1.0) as wg:
        wg.up()                      # the laptop joins the tunnel
        wg.down()                    # the tunnel drops
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

from scripts.netns_lan import NamespaceLan, namespaces_available

SERVER_INET, LAPTOP_INET = "192.0.2.1", "192.0.2.2"
SERVER_WG, LAPTOP_WG = "10.99.0.1", "10.99.0.2"
WG_PORT = 51820
RELAY_PORT = 51821
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wireguard_available() -> tuple[bool, str]:
    """Namespaces, wireguard-go, wg, tc and iptables, and a TUN device."""
    ok, why = namespaces_available()
    if not ok:
        return ok, why
    for tool, package in (("wireguard-go", "wireguard-go"), ("wg", "wireguard-tools"),
                          ("tc", "iproute2"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            return False, f"'{tool}' is not installed (Debian package {package})"
    if not os.path.exists("/dev/net/tun"):
        return False, "no /dev/net/tun: userspace WireGuard needs a TUN device"
    return True, ""


def _run(*argv: str, ns: str | None = None, stdin: str | None = None) -> str:
    cmd = [*(["ip", "netns", "exec", ns] if ns else []), *argv]
    res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {res.stderr.strip()}")
    return res.stdout.strip()


@dataclass
class WireGuardLink:
    lan: NamespaceLan
    server: str
    laptop: str
    delay_ms: int = 60
    loss: float = 1.0

    def __post_init__(self) -> None:
        self.server_ns = self.lan.ns(self.server)
        self.laptop_ns = self.lan.ns(self.laptop)
        self._keys: dict[str, tuple[str, str]] = {}
        self._relay: subprocess.Popen | None = None
        self.endpoint_port = WG_PORT
        self.impairment = ""

    def __enter__(self) -> WireGuardLink:
        try:
            self._internet()
            for host in (self.server, self.laptop):
                private = _run("wg", "genkey")
                self._keys[host] = (private, _run("wg", "pubkey", stdin=private + "\n"))
            self._wg(self.server_ns, self.server, SERVER_WG, self.laptop, LAPTOP_WG, None)
            self._wg(self.laptop_ns, self.laptop, LAPTOP_WG, self.server, SERVER_WG,
                     f"{SERVER_INET}:{self.endpoint_port}", up=False)
            return self
        except BaseException:
            self.__exit__()
            raise

    def _internet(self) -> None:
        _run("ip", "link", "add", "inet0", "type", "veth", "peer", "name", "inet0",
             "netns", self.laptop_ns, ns=self.server_ns)
        for ns, addr in ((self.server_ns, SERVER_INET), (self.laptop_ns, LAPTOP_INET)):
            _run("ip", "addr", "add", f"{addr}/30", "dev", "inet0", ns=ns)
            _run("ip", "link", "set", "inet0", "up", ns=ns)
        try:
            _run("tc", "qdisc", "add", "dev", "inet0", "root", "netem", "delay",
                 f"{self.delay_ms}ms", "loss", f"{self.loss}%", ns=self.laptop_ns)
            self.impairment = "tc netem"
        except RuntimeError:
            # This kernel has no netem qdisc: WireGuard's datagrams then cross a relay in the
            # server's namespace that delays and drops them the same way.
            self._relay = subprocess.Popen(
                ["ip", "netns", "exec", self.server_ns, sys.executable, "-m", "scripts.udp_impair",
                 f"{SERVER_INET}:{RELAY_PORT}", f"127.0.0.1:{WG_PORT}",
                 "--delay-ms", str(self.delay_ms), "--loss", str(self.loss)],
                stdout=subprocess.PIPE, text=True, cwd=ROOT)
            assert self._relay.stdout is not None
            if self._relay.stdout.readline().strip() != "ready":
                raise RuntimeError("the UDP delay relay did not start") from None
            self.endpoint_port = RELAY_PORT
            self.impairment = "UDP relay (no netem qdisc in this kernel)"
        # The home router forwards WireGuard's UDP port only: no TCP reaches the server from
        # the internet (a refusal, so a dial there fails at once rather than timing out).
        _run("iptables", "-A", "INPUT", "-i", "inet0", "-p", "tcp", "-j", "REJECT",
             "--reject-with", "tcp-reset", ns=self.server_ns)

    def dev(self, host: str) -> str:
        """The WireGuard interface of ``host``: its name is unique on the machine because
        wireguard-go's control socket (/var/run/wireguard/NAME.sock) is shared by every
        namespace; it starts with ``wg`` like WireGuard's own (a node counts it a tunnel)."""
        return f"wg{self.lan.index}{host}"[:15]

    def _wg(self, ns: str, host: str, addr: str, other: str, other_addr: str,
            endpoint: str | None, *, up: bool = True) -> None:
        dev = self.dev(host)
        subprocess.run(["ip", "netns", "exec", ns, "wireguard-go", dev], check=True,
                       capture_output=True, timeout=20)
        key_file = f"/tmp/maia-wg-{ns}.key"
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self._keys[host][0] + "\n")
        try:
            args = ["wg", "set", dev, "private-key", key_file, "listen-port", str(WG_PORT),
                    "peer", self._keys[other][1], "allowed-ips", f"{other_addr}/32",
                    "persistent-keepalive", "5"]
            if endpoint:
                args += ["endpoint", endpoint]
            _run(*args, ns=ns)
        finally:
            os.unlink(key_file)
        _run("ip", "addr", "add", f"{addr}/24", "dev", dev, ns=ns)
        if up:
            _run("ip", "link", "set", dev, "up", ns=ns)

    def up(self) -> None:
        """The laptop joins the tunnel."""
        _run("ip", "link", "set", self.dev(self.laptop), "up", ns=self.laptop_ns)

    def down(self) -> None:
        """The tunnel drops (the laptop's wg interface goes down)."""
        _run("ip", "link", "set", self.dev(self.laptop), "down", ns=self.laptop_ns)

    def rtt_ms(self, count: int = 9) -> float:
        """Median round trip through the tunnel, laptop to server (the reference): the time of
        a TCP connect to a closed port of the server's tunnel address (SYN, then RST)."""
        script = (
            "import socket, statistics, sys, time\n"
            "out = []\n"
            f"for _ in range({count}):\n"
            "    s = socket.socket(); s.settimeout(5); t = time.perf_counter()\n"
            "    try:\n"
            f"        s.connect(('{SERVER_WG}', 9))\n"
            "    except ConnectionRefusedError:\n"
            "        out.append(time.perf_counter() - t)\n"
            "    except OSError:\n"
            "        pass\n"
            "    s.close()\n"
            "print(statistics.median(out) * 1000 if out else -1)\n"
        )
        return float(_run(sys.executable, "-c", script, ns=self.laptop_ns))

    def __exit__(self, *exc: object) -> None:
        if self._relay is not None:
            self._relay.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._relay.wait(5)
            self._relay = None
        for ns, host in ((self.laptop_ns, self.laptop), (self.server_ns, self.server)):
            # wireguard-go exits when its TUN device goes away
            subprocess.run(["ip", "-n", ns, "link", "del", self.dev(host)], capture_output=True,
                           check=False)
            subprocess.run(["ip", "-n", ns, "link", "del", "inet0"], capture_output=True,
                           check=False)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self._wg_pids():
            time.sleep(0.1)
        for pid in self._wg_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 15)

    def _wg_pids(self) -> list[int]:
        pids = []
        for ns in (self.laptop_ns, self.server_ns):
            res = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                                 check=False)
            for pid in res.stdout.split():
                with contextlib.suppress(OSError), open(f"/proc/{pid}/comm") as comm:
                    if comm.read().strip() == "wireguard-go":
                        pids.append(int(pid))
        return pids
