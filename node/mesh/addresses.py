"""Signed, expiring address records: how a member says where it can be reached (SPEC-005 §12.9-12).

Each node signs one record with its device key listing its LAN and tunnel addresses (and any
configured ``[peers] advertise``); members pass records on over the mesh, so a laptop paired at
home once knows the home server's tunnel address when it wakes up at a café. A record is a hint,
never a grant: the dialler still proves the key in the handshake. Every rule below exists for a
member who turned hostile: records are bounded, dropped unless signed by a current member, and
their addresses are kept only when dialling them cannot reach anything but a peer socket on
another host (no names, no loopback, no link-local, no multicast or broadcast).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ifaddr
import msgpack

from crdt import DeviceKey, device_id, verify_signature

from ..files import write_atomic

log = logging.getLogger(__name__)

DOMAIN = b"maia-addr-v1"
VERSION = 1
#: Longest a record may live (and be trusted to reflect a network), plus clock skew.
TTL = 24 * 3600
SKEW = 300
MAX_ADDRS = 16
MAX_BODY = 1024
MAX_RECORDS_PER_FRAME = 512
MAX_FRAME_BYTES = 1 << 20
KINDS = ("lan", "tunnel", "address")
TUNNEL_PREFIXES = ("wg", "tailscale", "utun", "tun")
CGNAT = ipaddress.ip_network("100.64.0.0/10")  # Tailscale's addresses


class BadRecord(ValueError):
    """A record (or an addrs frame) that is not what SPEC-005 §12.9-12.11 allows."""


#: Cloud metadata services (the usual link-local one, which mDNS on a named link-local
#: interface would otherwise admit; AWS's IPv6 endpoint; Alibaba's; Azure's wire server):
#: they hand out instance credentials, so no dial ever goes there.
METADATA_HOSTS = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "fd00:ec2::254", "100.100.100.200", "168.63.129.16"))


def usable_host(host: str, *, link_local: bool = False) -> bool:
    """May a node dial this host from a member's record? IP literals only, unicast, not our
    own machine, not link-local (cloud metadata lives at 169.254.169.254), not a cloud
    metadata address, not reserved. ``link_local`` admits link-local addresses (mDNS on
    interfaces named in ``[discovery] interfaces``, SPEC-005 005.12.1), metadata still not."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False  # a name: the dialler never resolves what a member wrote
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    bad = (ip.is_loopback or (ip.is_link_local and not link_local) or ip.is_multicast
           or ip.is_unspecified or ip.is_reserved or ip in METADATA_HOSTS)
    if isinstance(ip, ipaddress.IPv4Address) and (ip == ipaddress.IPv4Address("255.255.255.255")
                                                  or int(ip) >> 24 == 0):
        bad = True
    return not bad


def split_address(address: str) -> tuple[str, int] | None:
    """``HOST:PORT`` (IPv6 in brackets or bare) -> (host, port), or None when it is not one."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or len(port) > 5:
        return None
    number = int(port)
    if not 1 <= number <= 65535:
        return None
    return host.strip("[]"), number


def usable_address(address: object) -> bool:
    if not isinstance(address, str) or len(address) > 64:
        return False
    parts = split_address(address)
    return parts is not None and usable_host(parts[0])


@dataclass(frozen=True)
class AddressRecord:
    """One verified record: whose, which version, until when, and the addresses kept."""

    key: bytes
    seq: int
    exp: float
    addrs: tuple[tuple[str, str], ...]
    body: bytes
    sig: bytes

    @property
    def device_id(self) -> str:
        return device_id(self.key)

    def wire(self) -> dict[str, bytes]:
        return {"body": self.body, "sig": self.sig}

    def verify(self) -> bool:
        return verify_signature(self.key, DOMAIN + self.body, self.sig)


def sign_record(key: DeviceKey, mesh_id: bytes, seq: int, addrs: Sequence[tuple[str, str]],
                *, now: float | None = None, ttl: float = TTL) -> dict[str, bytes]:
    """This node's record on the wire (``{body, sig}``)."""
    now = time.time() if now is None else now
    body = msgpack.packb({
        "v": VERSION, "mesh": mesh_id, "key": key.public_key, "seq": int(seq),
        "exp": int(now + ttl), "addrs": [[a, k] for a, k in list(addrs)[:MAX_ADDRS]],
    }, use_bin_type=True)
    if len(body) > MAX_BODY:
        raise BadRecord("record larger than 1 KiB")
    return {"body": body, "sig": key.sign(DOMAIN + body)}


def parse_record(raw: object, mesh_id: bytes, *, now: float | None = None) -> AddressRecord:
    """Decode and verify one ``{body, sig}``: shape, bounds, mesh, signature, expiry. The
    roster and ``seq`` checks belong to the book. Raises BadRecord."""
    record = decode_record(raw, mesh_id, now=now)
    if not record.verify():
        raise BadRecord("bad signature")
    return record


def decode_record(raw: object, mesh_id: bytes, *, now: float | None = None) -> AddressRecord:
    """Everything of ``parse_record`` but the signature, which the caller checks with
    ``AddressRecord.verify`` only for a record it would keep (SPEC-005 005.12.11): a
    signature check costs ~0.25 ms, decoding a few microseconds."""
    now = time.time() if now is None else now
    if not isinstance(raw, dict) or set(raw) != {"body", "sig"}:
        raise BadRecord("a record is {body, sig}")
    body, sig = raw["body"], raw["sig"]
    if not isinstance(body, bytes) or not isinstance(sig, bytes) or len(sig) != 64:
        raise BadRecord("body and sig are bytes")
    if len(body) > MAX_BODY:
        raise BadRecord("record larger than 1 KiB")
    try:
        doc = msgpack.unpackb(body, raw=False, max_bin_len=MAX_BODY, max_str_len=MAX_BODY,
                              max_array_len=MAX_ADDRS * 2, max_map_len=16)
    except Exception as exc:  # msgpack raises many types on junk
        raise BadRecord(f"body is not msgpack: {type(exc).__name__}") from None
    if not isinstance(doc, dict) or set(doc) != {"v", "mesh", "key", "seq", "exp", "addrs"}:
        raise BadRecord("body fields")
    key, seq, exp, addrs = doc["key"], doc["seq"], doc["exp"], doc["addrs"]
    if doc["v"] != VERSION or doc["mesh"] != mesh_id:
        raise BadRecord("another version or mesh")
    if not isinstance(key, bytes) or len(key) != 32:
        raise BadRecord("key")
    if (not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 1 << 63
            or not isinstance(exp, int) or isinstance(exp, bool)):
        raise BadRecord("seq and exp are integers")
    if not isinstance(addrs, list) or len(addrs) > MAX_ADDRS:
        raise BadRecord(f"at most {MAX_ADDRS} addresses")
    if exp <= now:
        raise BadRecord("expired")
    if exp > now + TTL + SKEW:
        raise BadRecord("expires too far ahead")
    kept: list[tuple[str, str]] = []
    for item in addrs:
        if (isinstance(item, list) and len(item) == 2 and item[1] in KINDS
                and usable_address(item[0]) and (item[0], item[1]) not in kept):
            kept.append((item[0], item[1]))
    return AddressRecord(key=key, seq=seq, exp=float(exp), addrs=tuple(kept), body=body, sig=sig)


def parse_frame(frame: dict[str, Any]) -> list[Any]:
    """The records of an ``addrs`` frame, or BadRecord when the frame breaks its bounds
    (at most 512 records and 1 MiB, SPEC-005 005.12.11)."""
    records = frame.get("records")
    if not isinstance(records, list) or len(records) > MAX_RECORDS_PER_FRAME:
        raise BadRecord(f"records: a list of at most {MAX_RECORDS_PER_FRAME}")
    try:
        size = len(msgpack.packb(frame, use_bin_type=True))
    except Exception:  # it came off the wire as msgpack, but be sure: junk is refused
        raise BadRecord("an addrs frame that does not encode") from None
    if size > MAX_FRAME_BYTES:
        raise BadRecord(f"an addrs frame of {size} bytes; at most {MAX_FRAME_BYTES}")
    return records


@dataclass
class FrameVerdict:
    """What one ``addrs`` frame brought (``AddressBook.offer_frame``)."""

    fresh: list[AddressRecord]
    bad_signatures: int = 0
    own_raised: bool = False


class AddressBook:
    """The newest accepted record of each member (Runtime, SPEC-005 §12.11).

    Bounded by the roster: one record per current member; a revoked member's record goes when
    the roster changes (``prune``)."""

    def __init__(self, mesh_id: bytes, own_key: bytes, path: Path | None = None) -> None:
        self.mesh_id = mesh_id
        self.own_key = own_key
        self.path = path
        self.records: dict[bytes, AddressRecord] = {}
        self.highest_own_seq = 0
        self.dropped = 0

    def offer(self, raw: object, is_member, *, now: float | None = None) -> AddressRecord | None:
        """Accept ``raw`` if it is newer and valid; the accepted record, else None."""
        try:
            record = parse_record(raw, self.mesh_id, now=now)
        except BadRecord as exc:
            self.dropped += 1
            log.debug("dropped an address record: %s", exc)
            return None
        if record.key == self.own_key:
            self.highest_own_seq = max(self.highest_own_seq, record.seq)
            return None
        if not is_member(record.key):
            self.dropped += 1
            log.debug("dropped the address record of non-member %s", record.device_id)
            return None
        held = self.records.get(record.key)
        if held is not None and held.seq >= record.seq:
            return None
        self.records[record.key] = record
        return record

    def offer_frame(self, records: list[Any], is_member, *,
                    now: float | None = None) -> FrameVerdict:
        """Accept what a frame of records brings (SPEC-005 005.12.11): decode every record,
        keep for each member key only the one of highest ``seq`` above the one held, and
        verify only those, so a frame costs at most one signature per member (and one for
        our own key) whatever it repeats. A frame naming one key twice is BadRecord: an
        honest node sends each record it holds once (005.12.11), and 512 copies of one valid
        record cost 130 ms of signature checks before. A signature that fails is counted
        (the caller refuses the frame as ``bad_signature``, §11.3)."""
        best: dict[bytes, AddressRecord] = {}
        seen: set[bytes] = set()
        for raw in records:
            try:
                record = decode_record(raw, self.mesh_id, now=now)
            except BadRecord as exc:
                self.dropped += 1
                log.debug("dropped an address record: %s", exc)
                continue
            if record.key in seen:
                raise BadRecord(f"two records of {record.device_id} in one frame")
            seen.add(record.key)
            if record.key == self.own_key:
                if record.seq > self.highest_own_seq:
                    best[record.key] = record
                continue
            if not is_member(record.key):
                self.dropped += 1
                log.debug("dropped the address record of non-member %s", record.device_id)
                continue
            held = self.records.get(record.key)
            if held is None or held.seq < record.seq:
                best[record.key] = record
        verdict = FrameVerdict(fresh=[])
        for key, record in best.items():
            if not record.verify():
                self.dropped += 1
                verdict.bad_signatures += 1
                continue
            if key == self.own_key:
                self.highest_own_seq = record.seq
                verdict.own_raised = True
            else:
                self.records[key] = record
                verdict.fresh.append(record)
        return verdict

    def prune(self, is_member, *, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for key, record in list(self.records.items()):
            if record.exp <= now or not is_member(key):
                del self.records[key]

    def next_seq(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        seq = max(int(now * 1000), self.highest_own_seq + 1)
        self.highest_own_seq = seq
        return seq

    # -- Runtime persistence: a cache, verified again on load ---------------------------------
    def save(self, own: dict[str, bytes] | None = None) -> None:
        if self.path is None:
            return
        records = [r.wire() for r in self.records.values()]
        if own is not None:
            records.append(own)
        with contextlib.suppress(OSError):  # Runtime: a cache, verified again on load
            write_atomic(self.path, msgpack.packb(records, use_bin_type=True), durable=False)

    def load(self, is_member) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            records = msgpack.unpackb(self.path.read_bytes(), raw=False,
                                      max_array_len=MAX_RECORDS_PER_FRAME * 4)
        except Exception as exc:
            log.warning("ignoring %s: %s", self.path, exc)
            return
        for raw in records if isinstance(records, list) else []:
            self.offer(raw, is_member)


def _kind_of(adapter_name: str, ip: ipaddress._BaseAddress) -> str:
    if adapter_name.startswith(TUNNEL_PREFIXES) or (ip.version == 4 and ip in CGNAT):
        return "tunnel"
    return "lan"


def interface_addresses() -> list[tuple[str, str, ipaddress._BaseNetwork]]:
    """(address, kind, network) of every usable interface address of this machine."""
    out = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if ip.is_IPv4:
                host = str(ip.ip)
            elif isinstance(ip.ip, tuple) and not ip.ip[2]:  # IPv6 without a scope id
                host = ip.ip[0]
            else:
                continue
            if not usable_host(host):
                continue
            addr = ipaddress.ip_address(host)
            net = ipaddress.ip_network(f"{host}/{ip.network_prefix}", strict=False)
            out.append((host, _kind_of(adapter.nice_name, addr), net))
    return sorted(set(out), key=lambda t: (KINDS.index(t[1]), t[0]))


def link_states() -> tuple[tuple[str, str], ...]:
    """Each interface's operational state (``up``, ``down``, ``lowerlayerdown``...) from
    /sys/class/net: a cable or Wi-Fi that comes back changes it while the address stays, and
    that is the moment to redial (SPEC-005 §9.13). Empty where /sys is not Linux's."""
    states = []
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir("/sys/class/net")):
            with contextlib.suppress(OSError), open(f"/sys/class/net/{name}/operstate") as f:
                states.append((name, f.read().strip()))
    return tuple(states)


#: Operational states of a link that carries nothing (/sys/class/net/*/operstate).
DOWN_STATES = frozenset({"down", "lowerlayerdown", "notpresent"})


def down_networks(links: Sequence[tuple[str, str]]) -> list[ipaddress._BaseNetwork]:
    """The networks of this machine's interfaces whose link is down (``links`` as from
    :func:`link_states`), less those another interface that is up also reaches."""
    state = dict(links)
    down, up = [], []
    for adapter in ifaddr.get_adapters():
        is_down = state.get(adapter.name) in DOWN_STATES
        for ip in adapter.ips:
            host = ip.ip if ip.is_IPv4 else ip.ip[0]
            with contextlib.suppress(ValueError):
                net = ipaddress.ip_network(f"{host}/{ip.network_prefix}", strict=False)
                (down if is_down else up).append(net)
    return [net for net in down if net not in up]


def on_down_link(address: str, networks: Sequence[ipaddress._BaseNetwork]) -> bool:
    """Is ``address`` (HOST:PORT) on one of ``networks`` (from :func:`down_networks`)? A dial
    there cannot leave this machine, and trying it anyway costs more than nothing: the kernel
    queues it behind a neighbour lookup that fails for 3 s, and a link that comes back in
    that time still fails every dial queued behind it."""
    parts = split_address(address)
    if parts is None or not networks:
        return False
    try:
        ip = ipaddress.ip_address(parts[0])
    except ValueError:
        return False
    return any(ip.version == n.version and ip in n for n in networks)


#: Netlink groups: link state (RTMGRP_LINK) and IPv4/IPv6 addresses (RTMGRP_IPV4/6_IFADDR).
_NETLINK_GROUPS = 0x1 | 0x10 | 0x100


class LinkEvents:
    """The kernel's notices of link and address changes (a netlink route socket, Linux):
    ``on_change`` runs in the event loop whenever one arrives, so a cable, Wi-Fi or tunnel
    that comes back is redialled at once rather than at the next poll (SPEC-005 §9.13). The
    messages are only a cue to read the interface list again; their content is not parsed."""

    def __init__(self, sock: socket.socket, on_change) -> None:
        self._sock, self._on_change = sock, on_change
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        with contextlib.suppress(OSError):
            while self._sock.recv(65536):
                pass
        self._on_change()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


def link_events(on_change) -> LinkEvents | None:
    """Subscribe to the kernel's link and address notices; None where there are none (not
    Linux, or netlink refused): the caller then polls only."""
    family = getattr(socket, "AF_NETLINK", None)
    if family is None:
        return None
    try:
        sock = socket.socket(family, socket.SOCK_RAW | socket.SOCK_NONBLOCK,
                             socket.NETLINK_ROUTE)
        sock.bind((0, _NETLINK_GROUPS))
    except OSError as exc:
        log.info("no netlink link notices (%s); polling the interface list only", exc)
        return None
    return LinkEvents(sock, on_change)


def own_addresses(peer_port: int, peer_listen: str, advertise: Iterable[str],
                  interfaces: list[tuple[str, str, Any]] | None = None) -> list[tuple[str, str]]:
    """What this node publishes: its interfaces' addresses when it listens on all of them
    (or the one it listens on), then each configured ``advertise`` entry, names resolved here."""
    interfaces = interface_addresses() if interfaces is None else interfaces
    out: list[tuple[str, str]] = []
    if peer_listen in ("0.0.0.0", "::", ""):
        out += [(_join(h, peer_port), kind) for h, kind, _net in interfaces]
    elif usable_host(peer_listen):
        kinds = {h: kind for h, kind, _net in interfaces}
        out.append((_join(peer_listen, peer_port), kinds.get(peer_listen, "lan")))
    for entry in advertise:
        parts = split_address(str(entry))
        if parts is None:
            log.warning("[peers] advertise: %r is not HOST:PORT; skipped", entry)
            continue
        host, port = parts
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            log.warning("[peers] advertise: cannot resolve %s: %s", host, exc)
            continue
        for info in infos[:4]:
            resolved = str(info[4][0])
            if usable_host(resolved):
                out.append((_join(resolved, port), "address"))
    return list(dict.fromkeys(out))[:MAX_ADDRS]


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def dial_order(record: AddressRecord, local_networks: Sequence[ipaddress._BaseNetwork],
               own_hosts: Iterable[str] = ()) -> list[tuple[str, str]]:
    """The record's addresses, those on one of our own networks first (SPEC-005 §12.12),
    less those of this machine (``own_hosts``): a member that names our own address with
    another port would make us dial a local service that trusts its own machine (005.12.10:
    the dialler never dials its own machine)."""
    own = {ipaddress.ip_address(h.strip("[]")) for h in own_hosts}
    def on_link(address: str) -> bool:
        parts = split_address(address)
        if parts is None:
            return False
        ip = ipaddress.ip_address(parts[0])
        return any(ip.version == n.version and ip in n for n in local_networks)

    def mine(address: str) -> bool:
        parts = split_address(address)
        return parts is not None and ipaddress.ip_address(parts[0]) in own

    return sorted((a for a in record.addrs if not mine(a[0])),
                  key=lambda a: (not on_link(a[0]), KINDS.index(a[1])))
