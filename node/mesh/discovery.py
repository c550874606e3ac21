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

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger(__name__)

SERVICE_TYPE = "_maia._tcp.local."
PROTOCOL_VERSION = "1"
RESOLVE_TIMEOUT_MS = 3000


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
        self.members_seen: dict[str, dict[str, Any]] = {}
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
        task = asyncio.get_running_loop().create_task(self._resolve(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        addresses = [f"{a}:{info.port}" for a in info.parsed_addresses(IPVersion.V4Only)]
        if not addresses:
            return
        self._candidate(name, device, addresses)

    def _candidate(self, name: str, device: str, addresses: list[str]) -> None:
        node = self.node
        assert node is not None
        entry = {"name": name, "addresses": addresses, "seen": time.time()}
        members = {device_id(k) for k in node.repo.roster.members}
        if device in members:
            self.nearby.pop(device, None)
            self.members_seen[device] = entry
            # Both sides discover each other: the one with the larger id waits a moment, so
            # usually only one connection is made (the manager drops a duplicate anyway).
            delay = 0.0 if node.key.device_id < device else 0.3
            log.info("mDNS: member %s at %s", device, ", ".join(addresses))
            node.peers.add_discovered(device, addresses, delay=delay)
        else:
            self.nearby[device] = entry
            log.info("mDNS: nearby unpaired node %s at %s", device, ", ".join(addresses))

    def _forget(self, name: str) -> None:
        for table in (self.nearby, self.members_seen):
            for device, entry in list(table.items()):
                if entry["name"] == name:
                    del table[device]
                    if table is self.members_seen and self.node is not None:
                        self.node.peers.remove_discovered(device)

    def _on_doc_change(self, doc_id: str, local: bool) -> None:
        """A roster change may turn a nearby node into a member (pairing) or the reverse."""
        if doc_id != "identity" or self.node is None:
            return
        members = {device_id(k) for k in self.node.repo.roster.members}
        for device, entry in list(self.nearby.items()):
            if device in members:
                self._candidate(entry["name"], device, entry["addresses"])
        for device in list(self.members_seen):
            if device not in members:
                entry = self.members_seen.pop(device)
                self.node.peers.remove_discovered(device)
                self.nearby[device] = entry


def create() -> Discovery:
    return Discovery()
