"""LAN discovery over mDNS (``_maia._tcp.local.``): a list of candidates, never a grant of trust.

A node announces itself at start (TXT: protocol version, device id, peer port — nothing
secret), updates the record when its port or cortices change, says goodbye at a clean stop, and
browses continuously. A discovered member is handed to the connection manager, which dials it
and connects only if the handshake proves the advertised key and the roster admits it; anyone
else is listed as "nearby" (SPEC-005 §9, design §5).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import ifaddr
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from crdt import device_id

from ..features import FeatureBase
from .addresses import usable_host

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger(__name__)

SERVICE_TYPE = "_maia._tcp.local."
PROTOCOL_VERSION = "1"
RESOLVE_TIMEOUT_MS = 3000
#: Bounds on what strangers on the LAN can make a node hold (SPEC-005 005.12.2): service names
#: held (least recently seen out), nearby devices listed, names kept per device, addresses
#: per name, and resolves in flight (each may wait RESOLVE_TIMEOUT_MS). Why: zeroconf evicts
#: expired records without a Removed event, and anyone can announce thousands of names.
MAX_SERVICES = 128
MAX_NEARBY = 64
NAMES_PER_DEVICE = 4
ADDRESSES_PER_NAME = 4
MAX_RESOLVES = 16
#: A service unseen for this long and gone from zeroconf's cache is forgotten.
SERVICE_TTL = 600.0


def lan_addresses(interfaces: Sequence[str] = ()) -> list[str]:
    """IPv4 addresses of the chosen interfaces (default: every non-loopback interface)."""
    out = []
    for adapter in ifaddr.get_adapters():
        if interfaces and adapter.nice_name not in interfaces and adapter.name not in interfaces:
            continue
        for ip in adapter.ips:
            if not ip.is_IPv4:
                continue
            addr = ipaddress.ip_address(ip.ip)
            if addr.is_loopback or (addr.is_link_local and not interfaces):
                continue
            out.append(str(addr))
    return sorted(set(out))


class Discovery(FeatureBase):
    """The mDNS feature of a node (see node/features.py)."""

    name = "discovery"

    def __init__(self) -> None:
        self.node: Node | None = None
        self.enabled = True
        self.interfaces: list[str] = []
        self.addresses: list[str] = []
        self.nearby: dict[str, dict[str, Any]] = {}
        #: service name -> {device, addresses, seen}: what each announcement says, so a
        #: goodbye removes only what that name brought (a stranger's goodbye for a forged
        #: name claiming a member's id must not remove the member's own addresses).
        self.services: dict[str, dict[str, Any]] = {}
        self._resolving: set[str] = set()
        self.properties: dict[str, str] = {}
        self._azc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._tasks: set[asyncio.Task] = set()
        self._registered = False

    # -- Feature ---------------------------------------------------------------------------------
    def setup(self, node: Node) -> None:
        self.node = node
        cfg = node.config.extra.get("discovery", {})
        self.enabled = bool(cfg.get("enabled", True))
        if os.environ.get("MAIA_DISCOVERY", "").lower() in ("0", "off", "false", "no"):
            self.enabled = False
        self.interfaces = [str(i) for i in cfg.get("interfaces", [])]
        node.repo.subscribe(self._on_doc_change)

    async def start(self) -> None:
        if not self.enabled:
            log.info("mDNS discovery is off in the config")
            return
        node = self.node
        assert node is not None
        self.addresses = lan_addresses(self.interfaces)
        if not self.addresses:
            log.warning("mDNS discovery: no usable interface (%s); static peers still work",
                        ", ".join(self.interfaces) or "no non-loopback IPv4 address")
            return
        self._azc = AsyncZeroconf(interfaces=self.addresses, ip_version=IPVersion.V4Only)
        self._info = self._service_info()
        # Browse first: members already on the LAN answer our query within milliseconds,
        # while announcing ourselves takes ~1 s of probing for name conflicts (RFC 6762 §8).
        self._browser = AsyncServiceBrowser(
            self._azc.zeroconf, SERVICE_TYPE, handlers=[self._on_service_state_change]
        )
        task = asyncio.get_running_loop().create_task(self._announce(), name="mdns-announce")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _announce(self) -> None:
        assert self._azc is not None and self._info is not None and self.node is not None
        try:
            await self._azc.async_register_service(self._info, allow_name_change=True)
        except Exception as exc:  # announcing is best effort; browsing and static peers go on
            log.warning("mDNS: could not announce this node (%s); others will not find it, "
                        "but it still finds them and static peers work", exc)
            return
        self._registered = True
        log.info("mDNS: announced %s on %s", self.node.key.device_id, ", ".join(self.addresses))
        if self._info.properties != self._service_info().properties:
            await self.set_properties()  # changed while we were probing

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        if self._azc is not None:
            with contextlib.suppress(Exception):
                if self._info is not None and self._registered:
                    await self._azc.async_unregister_service(self._info)  # goodbye
            await self._azc.async_close()
            self._azc = None

    def status(self) -> dict[str, Any]:
        now = time.time()
        return {
            "enabled": self.enabled and self._azc is not None,
            "addresses": self.addresses,
            "nearby": [
                {"device_id": d, **{k: v for k, v in info.items() if k != "seen"},
                 "seen_seconds_ago": round(now - info["seen"], 1)}
                for d, info in sorted(self.nearby.items())
            ],
        }

    # -- announcing ------------------------------------------------------------------------------
    def _service_info(self) -> AsyncServiceInfo:
        node = self.node
        assert node is not None
        me = node.key.device_id
        props = {"v": PROTOCOL_VERSION, "id": me, "port": str(node.peer_port), **self.properties}
        return AsyncServiceInfo(
            SERVICE_TYPE,
            f"maia-{me[:7].lower()}-{me[8:15].lower()}.{SERVICE_TYPE}",
            addresses=[socket.inet_aton(a) for a in self.addresses],
            port=node.peer_port,
            properties=props,
            server=f"maia-{me[:7].lower()}.local.",
        )

    async def set_properties(self, **props: str) -> None:
        """Change what the TXT record carries (e.g. the cortices a node hosts) and re-announce."""
        self.properties.update({k: str(v) for k, v in props.items()})
        if self._azc is not None and self._registered:
            fresh = self._service_info()
            fresh.name = self._info.name  # keep the (possibly de-conflicted) registered name
            self._info = fresh
            await self._azc.async_update_service(self._info)

    # -- browsing --------------------------------------------------------------------------------
    def _on_service_state_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            self._forget(name)
            return
        if name in self._resolving or len(self._resolving) >= MAX_RESOLVES:
            # One resolve per name at a time, MAX_RESOLVES in all: a flood of announcements
            # must not start thousands of 3 s resolves. A dropped event of an honest node
            # comes again (zeroconf re-queries; the node re-announces on every change).
            log.debug("mDNS: not resolving %s now (%d resolves in flight)", name,
                      len(self._resolving))
            return
        self._resolving.add(name)
        task = asyncio.get_running_loop().create_task(self._resolve(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _t: self._resolving.discard(name))

    async def _resolve(self, name: str) -> None:
        if self._azc is None:
            return
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(self._azc.zeroconf, RESOLVE_TIMEOUT_MS):
            return
        props = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in (info.properties or {}).items()
        }
        device = props.get("id")
        if not device or props.get("v") != PROTOCOL_VERSION or not info.port:
            return
        node = self.node
        if node is None or device == node.key.device_id:
            return
        addresses = candidate_addresses(info.parsed_addresses(IPVersion.V4Only), info.port,
                                        link_local=bool(self.interfaces))
        if not addresses:
            log.info("mDNS: %s announces no address this node may dial", name)
            return
        self._candidate(name, device, addresses)

    def _candidate(self, name: str, device: str, addresses: list[str]) -> None:
        """Hold what the service ``name`` announces, and hand the device's addresses (of
        every name claiming it) to the dialler when it is a member."""
        assert self.node is not None
        self.services.pop(name, None)  # re-inserted last: the most recently seen
        self.services[name] = {"device": device, "addresses": addresses, "seen": time.time()}
        self._prune()
        self._update(device, fresh=True)

    def _forget(self, name: str) -> None:
        """A goodbye (or expiry) of ``name``: only the addresses that name announced go."""
        entry = self.services.pop(name, None)
        if entry is not None:
            self._update(entry["device"], fresh=False)

    def _prune(self) -> None:
        """Forget services beyond MAX_SERVICES (least recently seen first), beyond
        NAMES_PER_DEVICE for one device, and those unseen for SERVICE_TTL that zeroconf no
        longer holds (it drops expired records without telling its browser)."""
        now = time.time()
        cache = self._azc.zeroconf.cache if self._azc is not None else None
        per_device: dict[str, int] = {}
        for name, entry in reversed(list(self.services.items())):  # newest first
            if cache is not None and now - entry["seen"] > SERVICE_TTL:
                if cache.current_entry_with_name_and_alias(SERVICE_TYPE, name) is None:
                    self._drop(name)
                    continue
                entry["seen"] = now - SERVICE_TTL / 2  # still announced: check again later
            n = per_device[entry["device"]] = per_device.get(entry["device"], 0) + 1
            if n > NAMES_PER_DEVICE:
                self._drop(name)
        while len(self.services) > MAX_SERVICES:
            self._drop(next(iter(self.services)))

    def _drop(self, name: str) -> None:
        entry = self.services.pop(name, None)
        if entry is not None and self.node is not None:
            self._update(entry["device"], fresh=False)

    def addresses_of(self, device: str) -> list[str]:
        """Every address announced for ``device``, the most recently seen name first."""
        out: list[str] = []
        for entry in reversed(list(self.services.values())):
            if entry["device"] == device:
                out += entry["addresses"]
        return list(dict.fromkeys(out))

    def _update(self, device: str, *, fresh: bool) -> None:
        """Bring the dialler and the nearby list in line with what is announced for
        ``device``; ``fresh``: a new announcement, which wakes the dialler (§12.3)."""
        node = self.node
        assert node is not None
        addresses = self.addresses_of(device)
        members = {device_id(k) for k in node.repo.roster.members}
        if device in members:
            self.nearby.pop(device, None)
            if not addresses:
                node.peers.remove_discovered(device)  # kept while connected
                return
            if fresh:
                log.info("mDNS: member %s at %s", device, ", ".join(addresses))
            # Both sides discover each other: the one with the larger id waits a moment, so
            # usually only one connection is made (the manager drops a duplicate anyway).
            delay = 0.0 if node.key.device_id < device else 0.3
            node.peers.add_discovered(device, addresses, delay=delay, wake=fresh)
            return
        node.peers.remove_discovered(device, keep_connected=False)  # not (or no longer) a member
        if not addresses:
            self.nearby.pop(device, None)
            return
        name = next(n for n, e in reversed(list(self.services.items()))
                    if e["device"] == device)
        if fresh:
            log.info("mDNS: nearby unpaired node %s at %s", device, ", ".join(addresses))
        self.nearby.pop(device, None)
        self.nearby[device] = {"name": name, "addresses": addresses, "seen": time.time()}
        while len(self.nearby) > MAX_NEARBY:
            del self.nearby[next(iter(self.nearby))]  # the least recently seen

    def _on_doc_change(self, doc_id: str, local: bool) -> None:
        """A roster change may turn a nearby node into a member (pairing) or the reverse."""
        if doc_id != "identity" or self.node is None:
            return
        for device in {e["device"] for e in self.services.values()}:
            self._update(device, fresh=False)


def candidate_addresses(hosts: Sequence[str], port: int, *, link_local: bool) -> list[str]:
    """The ``HOST:PORT`` of an announcement that a node may dial: the same filter as for
    address records (005.12.10: no loopback, multicast, broadcast, reserved or cloud
    metadata address), link-local only when ``[discovery] interfaces`` names interfaces
    (005.12.1), at most ADDRESSES_PER_NAME. Why: anyone on the LAN can announce anything,
    and an unfiltered candidate let a stranger make the node dial its own loopback."""
    return list(dict.fromkeys(
        f"{h}:{port}" for h in hosts if usable_host(h, link_local=link_local)
    ))[:ADDRESSES_PER_NAME]


def create() -> Discovery:
    return Discovery()
