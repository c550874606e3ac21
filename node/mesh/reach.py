"""Reachability: publish this node's signed address record, learn members' records over the
mesh, dial members from them, and notice when this machine's links change (SPEC-005 §9.13,
§12.9-12.12).

A laptop paired at home once learns the home server's tunnel address from the server's own
record; when it wakes up at a café with the tunnel up, it dials that address without anyone
typing it, and the handshake proves the key like for an mDNS candidate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from crdt import Rejected, device_id

from ..transport import TransportError
from .addresses import (
    TTL,
    AddressBook,
    BadRecord,
    dial_order,
    down_networks,
    interface_addresses,
    link_events,
    link_states,
    on_down_link,
    own_addresses,
    parse_frame,
    sign_record,
)

if TYPE_CHECKING:
    from ..node import Node
    from .peers import PeerConnection

log = logging.getLogger(__name__)

#: How often the interface list is read (a cheap getifaddrs) to notice a link or address change
#: where the kernel's own notices (netlink, Linux) are not available; with them, at once.
POLL_INTERVAL = 1.0
SETTLE = 0.2
#: A member's newer record is relayed at most this often (the newest one when the interval
#: ends), and the Runtime copy written at most this often (SPEC-005 005.12.11). Why: a member
#: publishing a record per frame would otherwise make every node relay one frame per frame to
#: every member (each honest relayer then floods its peers, §9.10) and write a file per frame.
RELAY_INTERVAL = 4.0


class Reach:
    """The address records of one node: its own, and the newest of each member."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.advertise: list[str] = list(node.config.advertise)
        self.book = AddressBook(node.repo.mesh_id, node.key.public_key,
                                node.paths.root / "runtime" / "addresses")
        self.own: dict[str, bytes] | None = None
        self.own_addrs: list[tuple[str, str]] = []
        self.published_at = 0.0
        self._interfaces: list[Any] = []
        self._links: tuple[tuple[str, str], ...] = ()
        self._down: list[Any] = []  # networks of links that are down: not dialled (§9.13)
        self._task: asyncio.Task | None = None
        self.started = False
        self._relayed_at: dict[bytes, float] = {}  # member key -> monotonic time of the relay
        self._pending: dict[bytes, bytes | None] = {}  # member key -> the connection not sent to
        self._save_handle: asyncio.TimerHandle | None = None

    def is_member(self, key: bytes) -> bool:
        return self.node.repo.roster.is_member(key)

    async def start(self) -> None:
        self.started = True
        peers = self.node.peers
        peers.register("addrs", self._on_frame)
        peers.on_connected.append(self._on_connected)
        self.book.load(self.is_member)
        self._interfaces = interface_addresses()
        self._links = link_states()
        self._down = down_networks(self._links)
        peers.unreachable = lambda address: on_down_link(address, self._down)
        self.publish()
        for record in list(self.book.records.values()):
            self._dial(record)
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="reach-watch")

    async def stop(self) -> None:
        if self._save_handle is not None:
            self._save_handle.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        self.book.save(self.own)

    # -- our own record --------------------------------------------------------------------------
    def publish(self) -> None:
        """Sign a fresh record of this node's addresses and send it to every member."""
        node = self.node
        self.own_addrs = own_addresses(node.peer_port, node.config.peer_listen, self.advertise,
                                       self._interfaces)
        self.own = sign_record(node.key, node.repo.mesh_id, self.book.next_seq(), self.own_addrs)
        self.published_at = time.time()
        log.info("address record %d: %s", self.book.highest_own_seq,
                 ", ".join(f"{a} ({k})" for a, k in self.own_addrs) or "no address")
        self.book.save(self.own)
        self._send_all([self.own])

    def status(self) -> dict[str, Any]:
        now = time.time()
        return {
            "own": [{"address": a, "kind": k} for a, k in self.own_addrs],
            "members": [
                {"device_id": r.device_id, "seq": r.seq, "expires_in": round(r.exp - now),
                 "addresses": [{"address": a, "kind": k} for a, k in r.addrs]}
                for r in sorted(self.book.records.values(), key=lambda r: r.device_id)
            ],
            "dropped": self.book.dropped,
        }

    # -- the mesh --------------------------------------------------------------------------------
    def _frames(self, records: list[dict[str, bytes]]) -> list[dict[str, Any]]:
        return [{"t": "addrs", "records": records[i:i + 256]} for i in range(0, len(records), 256)]

    def _on_connected(self, conn: PeerConnection) -> None:
        held = [r.wire() for r in self.book.records.values() if r.key != conn.peer_key]
        records = [*([self.own] if self.own else []), *held]
        self._spawn_send(conn, self._frames(records))

    def _spawn_send(self, conn: PeerConnection, frames: list[dict[str, Any]]) -> None:
        async def send() -> None:
            for frame in frames:
                with contextlib.suppress(TransportError):
                    await conn.send(frame)

        self.node.peers._spawn(send(), f"addrs-{conn.peer_device_id[:7]}")

    def _send_all(self, records: list[dict[str, bytes]], *, but: bytes | None = None) -> None:
        for key, conn in list(self.node.peers.connections.items()):
            if key != but:
                self._spawn_send(conn, self._frames(records))

    async def _on_frame(self, conn: PeerConnection, frame: dict[str, Any]) -> None:
        try:
            verdict = self.book.offer_frame(parse_frame(frame), self.is_member)
        except BadRecord as exc:
            raise Rejected("malformed", f"addrs frame: {exc}") from None
        if verdict.own_raised:
            # A record of ours newer than the one we hold (the clock went back, or the data
            # dir was restored): publish above it so members do not keep the stale one.
            self.publish()
        for record in verdict.fresh:
            log.info("address record of %s (seq %d): %s", record.device_id, record.seq,
                     ", ".join(a for a, _k in record.addrs) or "no usable address")
            self._dial(record)
            self._relay(record.key, but=conn.peer_key)  # relay (§12.11)
        if verdict.fresh:
            self._save_soon()
        if verdict.bad_signatures:
            # Only a forger sends one: a relayer verified what it relays, and a signature
            # verifies alike everywhere. Counted toward disconnection (§11.3).
            raise Rejected("bad_signature",
                           f"{verdict.bad_signatures} address record(s) with a bad signature")

    def _relay(self, key: bytes, *, but: bytes | None) -> None:
        """Send ``key``'s newest record on to every other member, at most once every
        RELAY_INTERVAL; a record arriving sooner is relayed when the interval ends (the
        newest then, RELAY_INTERVAL)."""
        now = time.monotonic()
        wait = self._relayed_at.get(key, -RELAY_INTERVAL) + RELAY_INTERVAL - now
        if wait <= 0:
            record = self.book.records.get(key)
            if record is not None:
                self._relayed_at[key] = now
                self._send_all([record.wire()], but=but)
            return
        if key not in self._pending:
            asyncio.get_running_loop().call_later(wait, self._relay_pending, key)
        self._pending[key] = but

    def _relay_pending(self, key: bytes) -> None:
        if key in self._pending:
            self._relay(key, but=self._pending.pop(key))

    def _save_soon(self) -> None:
        """Write the Runtime copy within RELAY_INTERVAL, once however many records came."""
        if self._save_handle is None:
            def save() -> None:
                self._save_handle = None
                self.book.save(self.own)

            self._save_handle = asyncio.get_running_loop().call_later(RELAY_INTERVAL, save)

    def _dial(self, record) -> None:
        networks = [net for _h, _k, net in self._interfaces]
        own = [host for host, _k, _net in self._interfaces]
        self.node.peers.add_recorded(record.device_id, dial_order(record, networks, own))

    # -- watching this machine's links -----------------------------------------------------------
    async def _watch(self) -> None:
        changed = asyncio.Event()
        events = link_events(changed.set)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), POLL_INTERVAL)
                if changed.is_set():
                    # The kernel said something changed: look now, and again a moment later
                    # (an address may still be tentative, a carrier still settling).
                    changed.clear()
                    self._safe_tick()
                    await asyncio.sleep(SETTLE)
                self._safe_tick()
        finally:
            if events is not None:
                events.close()

    def _safe_tick(self) -> None:
        try:
            self._tick()
        except Exception:
            log.exception("address watch failed")

    def _tick(self) -> None:
        interfaces, links = interface_addresses(), link_states()
        if links != self._links or interfaces != self._interfaces:
            self._down = down_networks(links)
        if links != self._links and interfaces == self._interfaces:
            log.info("a network link changed state; redialling")
            self.node.peers.probe_all()
            self.node.peers.wake_all()
        self._links = links
        if interfaces != self._interfaces:
            log.info("network interfaces changed; republishing and redialling")
            self._interfaces = interfaces
            self.publish()
            for record in list(self.book.records.values()):
                self._dial(record)  # an address that became ours is no longer dialled
            self.node.peers.probe_all()
            self.node.peers.wake_all()
        elif time.time() - self.published_at > TTL / 2:
            self.publish()
        before = set(self.book.records)
        self.book.prune(self.is_member)
        for key in before - set(self.book.records):
            self.node.peers.remove_recorded(device_id(key))
        for key in [k for k in self._relayed_at if k not in self.book.records]:
            del self._relayed_at[key]  # bounded by the book, so by the roster
