"""A small LAN of Linux network namespaces joined by veth pairs to one bridge (needs root).

Used by the multi-host tests and benchmarks so mDNS multicast really crosses interfaces:

    with NamespaceLan("maiat", ["a", "b", "c"]) as lan:
        lan.run("a", ["python", "-m", "node.cli", ...])   # a process inside host "a"
        lan.link_down("c"); lan.link_up("c")                # partition and heal

Addresses come from 10.231.<n>.0/24, a range used only inside these namespaces. The bridge
lives in the root namespace with the .1 address so the test process can reach each host.

Several LANs can be up at once on one machine (pytest-xdist workers, two checkouts running their
tests): each claims its own <n> with an exclusive lock held while it is up, and its namespaces,
veths and bridge carry <n> in their names (``maiat7-a``). The lock dies with its process, so a
later LAN that claims the same <n> first removes what an interrupted run left under it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def namespaces_available() -> tuple[bool, str]:
    """Can this process build namespaces? (root and iproute2, and the kernel lets us)."""
    if os.geteuid() != 0:
        return False, "network namespaces need root"
    if shutil.which("ip") is None:
        return False, "iproute2 ('ip') is not installed"
    # one name per process: two test workers probing at once under one name made the second
    # fail ("File exists") and skip every namespace test of its files
    probe = f"maia-probe-{os.getpid()}"
    res = _ip("netns", "add", probe, check=False)
    if res.returncode != 0:
        return False, f"cannot create a network namespace: {res.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return True, ""


def _claim_index(base: str, subnet: int) -> tuple[int, int]:
    """The lowest <n> no live LAN on this machine holds, and the open lock file that holds it.
    An <n> whose subnet is on an interface that is not a leftover of ours (a LAN made by code
    that takes no lock, or anything else) is skipped."""
    for index in range(1, 255):
        fd = os.open(os.path.join(tempfile.gettempdir(), f"maia-netns-{index}.lock"),
                     os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        listed = _ip("-4", "-o", "addr", "show", "to", f"10.{subnet}.{index}.0/24", check=False)
        holders = {line.split()[1] for line in listed.stdout.splitlines() if line.strip()}
        if holders - {f"{base}{index}br"[:15]}:
            os.close(fd)
            continue
        return index, fd
    raise RuntimeError("all 254 namespace LAN slots are in use")


@dataclass
class NamespaceLan:
    base: str  # at most 8 characters: interface names are limited to 15
    hosts: Sequence[str]
    subnet: int = 231
    index: int = 0  # claimed at __enter__ (see the module's docstring)
    addresses: dict[str, str] = field(default_factory=dict)
    _lock: int = -1

    @property
    def prefix(self) -> str:
        return f"{self.base}{self.index}"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"[:15]

    @property
    def gateway(self) -> str:
        return f"10.{self.subnet}.{self.index}.1"

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def _veth(self, host: str) -> str:
        return f"{self.prefix}{host}"[:13] + "br"

    def __enter__(self) -> NamespaceLan:
        self.index, self._lock = _claim_index(self.base, self.subnet)
        try:
            return self._up()
        except BaseException:
            self.__exit__()
            raise

    def _up(self) -> NamespaceLan:
        self.down()  # leftovers of an interrupted run that held the same index
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for n, host in enumerate(self.hosts, start=2):
            ns, outer = self.ns(host), self._veth(host)
            _ip("netns", "add", ns)
            _ip("link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", outer, "master", self.bridge)
            _ip("link", "set", outer, "up")
            addr = f"10.{self.subnet}.{self.index}.{n}"
            _ip("addr", "add", f"{addr}/24", "dev", "eth0", ns=ns)
            _ip("link", "set", "eth0", "up", ns=ns)
            _ip("link", "set", "lo", "up", ns=ns)
            # mDNS: let multicast leave through eth0
            _ip("route", "add", "224.0.0.0/4", "dev", "eth0", ns=ns, check=False)
            self.addresses[host] = addr
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.down()
        finally:
            if self._lock >= 0:
                os.close(self._lock)  # releases the index
                self._lock = -1

    def down(self) -> None:
        for host in self.hosts:
            _ip("netns", "del", self.ns(host), check=False)
            _ip("link", "del", self._veth(host), check=False)
        _ip("link", "del", self.bridge, check=False)

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside ``host``'s namespace."""
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def link_down(self, host: str) -> None:
        _ip("link", "set", self._veth(host), "down")

    def link_up(self, host: str) -> None:
        _ip("link", "set", self._veth(host), "up")
