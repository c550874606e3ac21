"""Who hosts which cortex, live: this node's cortices and every connected peer's (SPEC-006 §3).

Runtime state only: advertisements (``cx.ad``) arrive over the peer channel when a connection
opens, when a host's cortices or their health change, and every few seconds with fresh load;
``cx.ping``/``cx.pong`` measure each peer's round-trip time. A peer's cortices stop being
candidates the moment its connection closes, but are kept as *offline*, with when the peer was
last connected, so a person can see what the mesh hosts while a device is away (SPEC-006 §3.3).
Nothing here is persisted or synced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from crdt import Rejected

from ..transport import TransportError
from .config import CAPABILITIES, EMBEDDING, KINDS, MAX_CORTICES, MAX_DIMENSIONS, NAME_RE
from .trust import HostApprovals

if TYPE_CHECKING:
    from ..mesh.peers import PeerConnection, PeerManager
    from .backend import LocalCortices

log = logging.getLogger(__name__)

AD_VERSION = 1
AD_INTERVAL = 5.0
AD_MIN_GAP = 1.0
RTT_WEIGHT = 0.3
MAX_KNOWN_NAMES = 1024
MAX_PINGS_OUT = 16
MAX_OFFLINE_HOSTS = 256  # SPEC-006 §3.3
OFFLINE_FORGET_S = 7 * 86_400


@dataclass(frozen=True, slots=True)
class Advertised:
    """One cortex as its host describes it (validated)."""

    name: str
    kind: str
    model: str
    capabilities: frozenset[str]
    context_window: int
    max_concurrency: int
    remote: bool
    healthy: bool
    in_flight: int
    dimensions: int | None = None  # embedding cortices: the length of their vectors (§13.2)


@dataclass
class Host:
    """A node that hosts cortices: this one (``local``) or a connected peer."""

    key: bytes
    device_id: str
    name: str
    local: bool
    cortices: dict[str, Advertised] = field(default_factory=dict)
    rtt_ms: float | None = None
    ours_in_flight: int = 0  # our own open calls to it, fresher than its advertisement
    updated: float = 0.0
    last_seen: float | None = None  # wall-clock time its connection closed; None while online

    def load(self, cortex: Advertised) -> float:
        busy = max(cortex.in_flight, self.ours_in_flight)
        return busy / cortex.max_concurrency


def parse_ad(frame: dict[str, Any]) -> list[Advertised]:
    """The cortices of a ``cx.ad`` frame; Rejected("malformed") if anything is off (§3.3)."""
    if frame.get("v") != AD_VERSION:
        raise Rejected("malformed", "cx.ad: unsupported version")
    items = frame.get("cortices")
    if not isinstance(items, list) or len(items) > MAX_CORTICES:
        raise Rejected("malformed", "cx.ad: cortices must be a list of at most 64")
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise Rejected("malformed", "cx.ad: a cortex is not a map")
        name, kind, model = item.get("name"), item.get("kind"), item.get("model")
        caps = item.get("capabilities")
        if not (isinstance(name, str) and NAME_RE.match(name) and name != "auto"):
            raise Rejected("malformed", "cx.ad: bad cortex name")
        if kind not in KINDS or not isinstance(model, str) or len(model) > 200:
            raise Rejected("malformed", f"cx.ad: bad kind or model for {name}")
        if not isinstance(caps, list) or not caps or any(c not in CAPABILITIES for c in caps):
            raise Rejected("malformed", f"cx.ad: bad capabilities for {name}")
        ints = [item.get(k) for k in ("context_window", "max_concurrency", "in_flight")]
        if any(isinstance(v, bool) or not isinstance(v, int) for v in ints):
            raise Rejected("malformed", f"cx.ad: bad limits for {name}")
        window, concurrency, in_flight = ints
        if not (256 <= window <= 10_000_000 and 1 <= concurrency <= 256 and 0 <= in_flight < 2**31):
            raise Rejected("malformed", f"cx.ad: limits out of range for {name}")
        remote, healthy = item.get("remote"), item.get("healthy")
        if not isinstance(remote, bool) or not isinstance(healthy, bool):
            raise Rejected("malformed", f"cx.ad: bad flags for {name}")
        dims = item.get("dimensions")
        if kind == EMBEDDING and (isinstance(dims, bool) or not isinstance(dims, int)
                                  or not 1 <= dims <= MAX_DIMENSIONS):
            raise Rejected("malformed", f"cx.ad: an embedding cortex without dimensions: {name}")
        out.append(Advertised(name, kind, model, frozenset(caps), window, concurrency, remote,
                              healthy, in_flight, dims if kind == EMBEDDING else None))
    return out


class Registry:
    """The live cortex map of the mesh, as seen from this node."""

    def __init__(
        self,
        key: bytes,
        device_id: str,
        name: str,
        local: LocalCortices,
        *,
        peer_name: Callable[[bytes], str] = lambda key: "",
        on_fault: Callable[[bytes, str], None] = lambda key, why: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.local = local
        self.me = Host(key, device_id, name, local=True)
        # who may be sent prompts (SPEC-006 006.6.7); None: every peer (in-process tests)
        self.approvals: HostApprovals | None = None
        self.peers: dict[bytes, Host] = {}
        self.offline: OrderedDict[bytes, Host] = OrderedDict()  # oldest first (§3.3)
        self.known_kinds: OrderedDict[str, str] = OrderedDict()
        self._peer_name = peer_name
        self._on_fault = on_fault
        self._clock = clock
        self._manager: PeerManager | None = None
        self._pings: dict[tuple[bytes, int], float] = {}
        self._ping_n = 0
        self._tasks: set[asyncio.Task] = set()
        self._dirty = asyncio.Event()
        self._last_ad = 0.0
        local.on_health_change.append(self.local_changed)
        self.refresh_local()

    # -- this node ----------------------------------------------------------------------------
    def refresh_local(self) -> None:
        items = self.local.advertised()
        self.me.cortices = {
            i["name"]: Advertised(
                i["name"], i["kind"], i["model"], frozenset(i["capabilities"]),
                i["context_window"], i["max_concurrency"], i["remote"], i["healthy"],
                i["in_flight"], i.get("dimensions"),
            )
            for i in items
        }
        self.me.updated = self._clock()
        for cortex in self.me.cortices.values():
            self._remember(cortex)

    def local_changed(self) -> None:
        """Health or set of local cortices changed: advertise soon (at most once a second)."""
        self.refresh_local()
        self._dirty.set()

    def ad_frame(self) -> dict[str, Any]:
        return {"t": "cx.ad", "v": AD_VERSION, "cortices": self.local.advertised()}

    # -- the peer channel ---------------------------------------------------------------------
    def attach(self, manager: PeerManager) -> None:
        self._manager = manager
        manager.register("cx.ad", self._on_ad)
        manager.register("cx.ping", self._on_ping)
        manager.register("cx.pong", self._on_pong)
        manager.on_connected.append(self._connected)
        manager.on_disconnected.append(self._disconnected)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _connected(self, conn: PeerConnection) -> None:
        self._spawn(self._send(conn, self.ad_frame()))
        self._spawn(self._ping(conn))

    def _disconnected(self, conn: PeerConnection) -> None:
        manager = self._manager
        still = manager.connections.get(conn.peer_key) if manager is not None else None
        if still is None or still is conn:
            host = self.peers.pop(conn.peer_key, None)
            if host is not None and host.cortices:
                log.info("cortices of %s are offline (disconnected)", conn.peer_device_id)
                self._keep_offline(host)
        self._pings = {k: v for k, v in self._pings.items() if k[0] != conn.peer_key}

    def _keep_offline(self, host: Host) -> None:
        host.last_seen = time.time()
        host.rtt_ms, host.ours_in_flight = None, 0
        self.offline.pop(host.key, None)
        self.offline[host.key] = host
        cutoff = host.last_seen - OFFLINE_FORGET_S
        while self.offline and (len(self.offline) > MAX_OFFLINE_HOSTS
                                or next(iter(self.offline.values())).last_seen < cutoff):
            self.offline.popitem(last=False)

    async def _send(self, conn: PeerConnection, frame: dict[str, Any]) -> None:
        with contextlib.suppress(TransportError):
            await conn.send(frame)

    async def _on_ad(self, conn: PeerConnection, frame: dict[str, Any]) -> None:
        try:
            cortices = parse_ad(frame)
        except Rejected as exc:
            self._on_fault(conn.peer_key, f"invalid advertisement: {exc.detail}")
            raise
        host = self.peers.get(conn.peer_key)
        if host is None:
            host = self.peers[conn.peer_key] = Host(
                conn.peer_key, conn.peer_device_id, self._peer_name(conn.peer_key), local=False
            )
            log.info("peer %s hosts %s", conn.peer_device_id,
                     ", ".join(c.name for c in cortices) or "no cortex")
        self.offline.pop(conn.peer_key, None)  # back: its advertisement replaces the old entry
        host.cortices = {c.name: c for c in cortices}
        host.updated = self._clock()
        if self.approvals is not None:  # approved while learning, pending after (§6.7)
            for cortex in cortices:
                self.approvals.allows(host.key, cortex.name)
        for cortex in cortices:
            if self.approved(host, cortex):  # a pending peer's kinds steer nothing (§6.7)
                self._remember(cortex)

    async def _on_ping(self, conn: PeerConnection, frame: dict[str, Any]) -> None:
        n = frame.get("n")
        if isinstance(n, int) and not isinstance(n, bool):
            await self._send(conn, {"t": "cx.pong", "n": n})

    async def _on_pong(self, conn: PeerConnection, frame: dict[str, Any]) -> None:
        sent = self._pings.pop((conn.peer_key, frame.get("n")), None)  # type: ignore[arg-type]
        host = self.peers.get(conn.peer_key)
        if sent is None or host is None:
            return
        self.observe_rtt(host, (self._clock() - sent) * 1000)

    def observe_rtt(self, host: Host, ms: float) -> None:
        old = host.rtt_ms
        host.rtt_ms = ms if old is None else (1 - RTT_WEIGHT) * old + RTT_WEIGHT * ms

    async def _ping(self, conn: PeerConnection) -> None:
        if len(self._pings) >= MAX_PINGS_OUT * max(1, len(self.peers)):
            self._pings.clear()  # answers that never came; start over
        self._ping_n += 1
        self._pings[(conn.peer_key, self._ping_n)] = self._clock()
        await self._send(conn, {"t": "cx.ping", "n": self._ping_n})

    async def run(self) -> None:
        """Advertise on change (at most once a second) and every 5 s; ping every 5 s."""
        next_beat = self._clock()
        while True:
            now = self._clock()
            due_beat = now >= next_beat
            due_ad = self._dirty.is_set() and now - self._last_ad >= AD_MIN_GAP
            if not (due_beat or due_ad):
                if self._dirty.is_set():
                    await asyncio.sleep(min(next_beat, self._last_ad + AD_MIN_GAP) - now)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._dirty.wait(), next_beat - now)
                continue
            self._dirty.clear()
            self.refresh_local()
            if self._manager is not None and (due_ad or self.local):
                await self._manager.broadcast(self.ad_frame())
                self._last_ad = now
            if due_beat:
                conns = list(self._manager.connections.values()) if self._manager else []
                for conn in conns:
                    await self._ping(conn)
                next_beat = now + AD_INTERVAL

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    # -- queries ------------------------------------------------------------------------------
    def _remember(self, cortex: Advertised) -> None:
        self.known_kinds[cortex.name] = cortex.kind
        self.known_kinds.move_to_end(cortex.name)
        while len(self.known_kinds) > MAX_KNOWN_NAMES:
            self.known_kinds.popitem(last=False)

    def hosts(self) -> Iterator[Host]:
        yield self.me
        yield from self.peers.values()

    def offers(self) -> Iterator[tuple[Host, Advertised]]:
        """Every (host, cortex) reachable now and approved here (SPEC-006 006.6.7), this node
        first: a peer's cortex not approved is no candidate for anything, by name, by kind,
        ``auto``, embeddings or a cortex job."""
        for host in self.hosts():
            for cortex in host.cortices.values():
                if self.approved(host, cortex):
                    yield host, cortex

    def pending(self) -> Iterator[tuple[Host, Advertised]]:
        """Connected peers' cortices waiting for the owner's approval on this node."""
        for host in self.hosts():
            for cortex in host.cortices.values():
                if not self.approved(host, cortex):
                    yield host, cortex

    def approved(self, host: Host, cortex: Advertised) -> bool:
        return host.local or self.approvals is None or self.approvals.approved(
            host.key, cortex.name)

    def offline_offers(self) -> Iterator[tuple[Host, Advertised]]:
        """Every (host, cortex) of a peer that is away now, most recently seen first."""
        for host in reversed(self.offline.values()):
            for cortex in host.cortices.values():
                yield host, cortex

    def reachable_names(self) -> list[str]:
        return sorted({c.name for _, c in self.offers()})

    def reachable_kinds(self) -> list[str]:
        kinds = {c.kind for _, c in self.offers()}
        return [k for k in KINDS if k in kinds]
