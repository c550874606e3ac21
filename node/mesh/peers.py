"""The connection manager: one authenticated channel per peer, fed by static peers and discovery.

Static addresses (``maia peer add``) and, later, mDNS candidates go through the same path:
dial with backoff, handshake, roster check, then per-document sync and live push. A peer
that keeps sending rejected messages or floods is disconnected and backed off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from crdt import ROSTER_CODES, PeerSync, Rejected, Repo, StorageFull, device_id

from ..transport import (
    ChannelClosed,
    HandshakeGate,
    SecureChannel,
    TransportError,
    accept,
    connect,
    peer_session,
)

log = logging.getLogger(__name__)

BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
#: A dial target whose device is a known member backs off to at most this (SPEC-005 §9.13):
#: a member's node that is away comes back within seconds of its link returning.
MEMBER_BACKOFF_MAX = 4.0
#: Application-level liveness (SPEC-005 §9.14): an idle connection sends a ping this often, and
#: one that hears nothing at all for LIVENESS_TIMEOUT is closed (and redialled) rather than
#: waiting for TCP's retransmission timer.
LIVENESS_INTERVAL = 2.0
LIVENESS_TIMEOUT = 8.0
#: An address of a member's record that failed n times waits 4 s * 2^(n-1), at most this.
ADDRESS_BACKOFF_MAX = 300.0
#: Hosts whose failures one dial target remembers (SPEC-005 005.12.10). A host is forgotten
#: only ADDRESS_BACKOFF_MAX after its backoff ended; while the table is full, a host it does
#: not hold is not dialled. So a member publishing record after record of fresh hosts gets at
#: most this many dialled per few minutes, and the table never grows past it.
MAX_BACKED_OFF = 64
#: A newer record of a member wakes its dialler at most this often (SPEC-005 005.9.13).
RECORD_WAKE_INTERVAL = 4.0
#: Addresses one discovered target holds (SPEC-005 005.12.2): those that proved the key first.
MAX_TARGET_ADDRESSES = 16
#: After a link change every connection is pinged and must answer within its probe time
#: (§9.14): PROBE_MIN plus four of its measured round trips, at most PROBE_TIMEOUT;
#: PROBE_UNMEASURED before any round trip was measured on it (a peer that never idled: it
#: may be busy applying a large message, and a link change elsewhere on the machine, a
#: container's veth, must not cut it off).
PROBE_TIMEOUT = 2.0
PROBE_MIN = 0.75
PROBE_UNMEASURED = PROBE_TIMEOUT
#: For this long after a link change, a dial that fails is tried again within URGENT_RETRY
#: rather than after its backoff (§9.13): a link that just came back often fails the first
#: attempt (a neighbour entry still failing, a tunnel still handshaking) and works a moment later.
URGENT_WINDOW = 3.0
URGENT_RETRY = 0.2
#: Racing connects (``PeerManager._connect``): a fresh attempt after STAGGER, then after twice
#: that, at most RACE at once.
STAGGER = 0.25
RACE = 3
MEMBER_REFUSED_RETRY = 3.0  # a member refused as not_member/revoked redials this soon
MAX_REJECTS = 8
ROSTER_RETRIES = 3  # answers to roster refusals of one document per REJECT_WINDOW
REJECT_WINDOW = 10.0
FRAME_RATE = 500.0
FRAME_BURST = 2000.0
PENALTY_START = 60.0
PENALTY_MAX = 3600.0
#: Certificates a peer may hand over before it is known: its own admission chain and the
#: tombstones it knows, no more.
MAX_CHAIN = 256
#: A member's certs frame (SPEC-005 §8.9): bounded in count and, when sent, in bytes.
MAX_CERTS_PER_FRAME = 10_000
CERTS_FRAME_BYTES = 4 << 20


def backoff_delays(start: float = BACKOFF_START, cap: float = BACKOFF_MAX):
    """Exponential backoff with full jitter on the upper half, so peers do not dial in step."""
    delay = start
    while True:
        yield delay / 2 + random.random() * delay / 2
        delay = min(cap, delay * 2)


@dataclass
class PeerState:
    """What the node knows about one peer (runtime only)."""

    key: bytes
    address: str = ""
    connected_since: float | None = None
    last_seen: float | None = None
    accepted: int = 0
    rejected: int = 0
    last_error: str = ""
    path: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "device_id": device_id(self.key),
            "address": self.address,
            "path": self.path,
            "last_traffic": self.last_seen,
            "connected": self.connected_since is not None,
            "connected_since": self.connected_since,
            "last_seen": self.last_seen,
            "changes_accepted": self.accepted,
            "messages_rejected": self.rejected,
            "last_error": self.last_error,
        }


@dataclass
class DialTarget:
    """A dial target: a configured address, or one found by discovery (``expected_id`` set)."""

    address: str
    task: asyncio.Task | None = None
    last_error: str = ""
    peer_key: bytes | None = None
    attempts: int = 0
    expected_id: str | None = None
    addresses: list[str] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: How each address was learned (``lan``/``tunnel``/``address`` from a record, ``mdns``,
    #: ``static``): shown as the connection's path.
    origin: str = "static"
    kinds: dict[str, str] = field(default_factory=dict)
    next_retry: float | None = None  # wall-clock time of the next dial, when waiting
    #: Per host (not HOST:PORT: a record naming one host with 16 ports would otherwise get
    #: 16 dials a round) of a member's record, and per host that proved another device:
    #: consecutive failures and when it may be dialled again. A hostile member's record can
    #: name a host that is no peer; that host then sees one attempt every
    #: ADDRESS_BACKOFF_MAX at most, not one every few seconds. At most MAX_BACKED_OFF hosts.
    fails: dict[str, int] = field(default_factory=dict)
    not_before: dict[str, float] = field(default_factory=dict)
    urgent_until: float = 0.0  # monotonic: the end of the quick retries after a link change
    woken_at: float = -RECORD_WAKE_INTERVAL  # monotonic: the last wake by a newer record

    @property
    def urgent(self) -> bool:
        return time.monotonic() < self.urgent_until

    def may_dial(self, address: str) -> bool:
        host = _host_of(address)
        if host in self.not_before:
            return self.not_before[host] <= time.monotonic()
        # A host not held while the table is full waits for room (MAX_BACKED_OFF).
        return self.origin != "address" or len(self.not_before) < MAX_BACKED_OFF or \
            self._prune()

    def failed(self, address: str, *, mismatch: bool = False) -> None:
        """A dial of ``address`` failed; ``mismatch``: it answered as another device, which
        backs the host off whatever the target's origin (a forged announcement of a member's
        id would otherwise be dialled at the member's short backoff for ever)."""
        if (self.origin == "address" or mismatch) and not self.urgent:
            host = _host_of(address)
            if host not in self.not_before and len(self.not_before) >= MAX_BACKED_OFF \
                    and not self._prune():
                return
            n = self.fails[host] = self.fails.get(host, 0) + 1
            delay = min(ADDRESS_BACKOFF_MAX, MEMBER_BACKOFF_MAX * 2 ** (n - 1))
            self.not_before[host] = time.monotonic() + delay

    def answered(self, address: str) -> None:
        """``address`` proved the device expected (only then: an address that proves another
        member is a failure, ``failed(mismatch=True)``)."""
        host = _host_of(address)
        self.fails.pop(host, None)
        self.not_before.pop(host, None)

    def _prune(self) -> bool:
        """Forget hosts whose backoff ended ADDRESS_BACKOFF_MAX ago; is there room now?"""
        stale = time.monotonic() - ADDRESS_BACKOFF_MAX
        for host in [h for h, t in self.not_before.items() if t <= stale]:
            del self.not_before[host]
            self.fails.pop(host, None)
        return len(self.not_before) < MAX_BACKED_OFF

    def links_changed(self) -> None:
        """Every address may work now: forget their failures (not on a new record, which a
        hostile member could publish every second)."""
        self.fails.clear()
        self.not_before.clear()
        self.urgent_until = time.monotonic() + URGENT_WINDOW


class _FrameBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


FrameHandler = Callable[["PeerConnection", dict[str, Any]], Awaitable[None]]


class PeerConnection:
    """One live, authenticated channel to one peer, and its sync loop."""

    def __init__(
        self, manager: PeerManager, channel: SecureChannel, *, initiator: bool, address: str
    ) -> None:
        self.manager = manager
        self.channel = channel
        self.initiator = initiator
        self.address = address
        self.peer_key = channel.peer_key
        self.sync = PeerSync(manager.repo, channel.peer_key)
        self._dirty: dict[str, None] = {}
        self._wake = asyncio.Event()
        self._rejects: list[float] = []
        self._bucket = _FrameBucket(manager.frame_rate, manager.frame_burst)
        self.closed = asyncio.Event()
        self.remote_error = ""
        self._roster_rejects: dict[str, list[float]] = {}
        self.heard_at = time.monotonic()  # the last frame of any kind from the peer
        # Round trips of our pings (liveness, probes): the probe after a link change waits
        # a few of them, not a fixed 2 s (§9.14).
        self._ping_at: float | None = None
        self.rtt: float | None = None
        self.synced_at = 0.0  # monotonic: the last sync frame received

    def probe_time(self) -> float:
        """How long a probe after a link change waits for this connection's answer (§9.14).

        Why not a fixed 2 s: the peer of a tunnel that dropped holds our unacknowledged data
        in TCP's retransmission backoff, so its pong waits behind it for up to seconds; a
        fresh connection is ready in a few round trips (the largest tunnel reconnect in the
        heal benchmark, 2.8 s, was that wait)."""
        if self.rtt is None or time.monotonic() - self.synced_at < PROBE_TIMEOUT:
            # unmeasured, or sync messages moved just now: the peer may be busy applying one
            return PROBE_UNMEASURED
        return min(PROBE_TIMEOUT, PROBE_MIN + 4 * self.rtt)

    async def ping(self) -> None:
        """Send a ping, timing its round trip unless one is already out."""
        if self._ping_at is None:
            self._ping_at = time.monotonic()
        await self.channel.send({"t": "ping"})

    def _pong(self) -> None:
        if self._ping_at is not None:
            sample = time.monotonic() - self._ping_at
            self._ping_at = None
            # the smaller of the last estimate and the new sample, loosened slowly: a pong
            # that waited behind a sync message is not the path's round trip
            self.rtt = sample if self.rtt is None else min(sample, self.rtt * 1.25)

    @property
    def initiator_key(self) -> bytes:
        return self.manager.repo.key.public_key if self.initiator else self.peer_key

    def repo_has(self, doc_id: str) -> bool:
        return self.manager.repo.store.doc_meta(doc_id) is not None

    @property
    def peer_device_id(self) -> str:
        return self.channel.peer_device_id

    async def send(self, frame: dict[str, Any]) -> None:
        """Send one frame to this peer (features use it for their own frame kinds)."""
        await self.channel.send(frame)

    def mark_dirty(self, doc_id: str) -> None:
        self._dirty[doc_id] = None
        self._wake.set()

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_loop(), name=f"send-{self.channel.peer_device_id}")
        alive = asyncio.create_task(self._liveness(), name=f"alive-{self.channel.peer_device_id}")
        self.heard_at = time.monotonic()
        try:
            for frame in self.manager.certs_frames():
                await self.channel.send(frame)
            await self.channel.send(self.sync.summary_frame())
            async for frame in self.channel:
                self.heard_at = time.monotonic()
                self.manager.touch(self.peer_key)
                if not self._bucket.take():
                    log.warning("peer %s floods; disconnecting", self.channel.peer_device_id)
                    await self._error("flooding", "too many messages per second")
                    return
                if not await self._handle(frame):
                    return
                # Frames already buffered would otherwise be handled back to back without ever
                # letting the sender run: yield, so an answer goes out while the peer works.
                await asyncio.sleep(0)
        except ChannelClosed:
            pass
        except TransportError as exc:
            log.info("channel to %s failed: %s", self.channel.peer_device_id, exc)
            self.manager.note_error(self.peer_key, str(exc))
        finally:
            for task in (sender, alive):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            await self.channel.close()
            self.closed.set()

    async def _liveness(self) -> None:
        """Ping when idle; hang up when the peer has been silent for LIVENESS_TIMEOUT (SPEC-005
        §9.14). A dead link is then noticed in seconds and the dialler starts over at once."""
        interval, timeout = self.manager.liveness_interval, self.manager.liveness_timeout
        while True:
            await asyncio.sleep(interval)
            silent = time.monotonic() - self.heard_at
            if silent >= timeout:
                log.info("peer %s silent for %.1f s; closing", self.channel.peer_device_id, silent)
                self.manager.note_error(self.peer_key, "liveness_timeout")
                self.manager.abandon(self, "liveness timeout")
                return
            if silent >= interval:
                with contextlib.suppress(TransportError):
                    await self.ping()

    async def _handle(self, frame: Any) -> bool:
        kind = frame.get("t") if isinstance(frame, dict) else None
        if kind == "ping":
            await self.channel.send({"t": "pong"})
        elif kind == "pong":
            self._pong()  # its arrival is what counts (self.heard_at), and its round trip
        elif kind == "summary":
            try:
                for doc_id in self.sync.docs_to_sync(frame):
                    # When the peer lacks a document entirely, let it open the exchange: its
                    # first message costs it nothing, while ours would make us load the
                    # document only to say hello. Our first answer then carries changes, and
                    # loading the next document overlaps with the peer applying this one.
                    if self.sync.their_heads.get(doc_id) or not self.repo_has(doc_id):
                        self.mark_dirty(doc_id)
            except Rejected as exc:
                return await self._rejected(None, exc)
        elif kind == "certs":
            certs = frame.get("certs")
            if (not isinstance(certs, list) or len(certs) > MAX_CERTS_PER_FRAME
                    or not all(isinstance(c, bytes) for c in certs)):
                return await self._rejected(None, Rejected("malformed", "certs frame"))
            if self.manager.repo.add_certs(certs) and self.manager.on_roster_change is not None:
                self.manager.on_roster_change()
        elif kind == "sync":
            self.synced_at = time.monotonic()
            doc_id = frame.get("doc")
            try:
                n = self.sync.receive(frame)
            except Rejected as exc:
                return await self._rejected(doc_id if isinstance(doc_id, str) else None, exc)
            except StorageFull as full:
                # Nothing of the message was stored (SPEC-005 §7.1). End this session; the
                # dialler's backoff paces the retries until space returns (issue 18.4).
                log.warning("pausing sync with %s: %s", self.channel.peer_device_id, full)
                self.manager.note_error(self.peer_key, "storage_full")
                self.remote_error = "storage_full"  # the dialler keeps backing off meanwhile
                return False
            self.manager.note_accepted(self.peer_key, n)
            if frame.get("final", True):
                self.mark_dirty(doc_id)  # answer: the protocol needs our side's next message
        elif kind == "reject":
            doc_id = frame.get("doc")
            log.warning(
                "peer %s rejected our message for %s: %s %s",
                self.channel.peer_device_id, doc_id, frame.get("code"), frame.get("detail"),
            )
            if isinstance(doc_id, str):
                self.sync.reset(doc_id)
        elif kind in self.manager.handlers:
            try:
                await self.manager.handlers[kind](self, frame)
            except Rejected as exc:
                return await self._rejected(None, exc)
            except Exception:
                log.exception("handler for %r frames failed", kind)
        elif kind == "error":
            self.remote_error = str(frame.get("code"))
            self.manager.learn_revocation(frame)
            log.warning(
                "peer %s closed the session: %s %s",
                self.channel.peer_device_id, frame.get("code"), frame.get("detail"),
            )
            self.manager.note_error(self.peer_key, f"{frame.get('code')}: {frame.get('detail')}")
            return False
        elif isinstance(kind, str):  # SPEC-005 005.9.9: an unknown type; the session goes on
            return await self._rejected(None, Rejected("unsupported", f"unknown frame {kind!r}"))
        else:
            return await self._rejected(None, Rejected("malformed", "not a frame map with a type"))
        return True

    async def _rejected(self, doc_id: str | None, exc: Rejected) -> bool:
        log.warning(
            "rejected a message from %s for %s: %s", self.channel.peer_device_id, doc_id, exc
        )
        self.manager.note_rejected(self.peer_key, f"{exc.code}: {exc.detail}")
        if exc.code == "duplicate_seq":
            self.manager.note_equivocation(self.peer_key, exc, doc_id)
        now = time.monotonic()
        self._rejects = [t for t in self._rejects if now - t < REJECT_WINDOW]
        if ((exc.code not in ("missing_dependency", "dropped") and exc.code not in ROSTER_CODES)
                or (exc.code == "dropped" and self.peer_key in exc.authors)):
            # A Bloom-filter miss of an honest peer is not misbehaviour (SPEC-005 §8.6), nor
            # is relaying a revoked author's changes before the tombstone reached it (§5.10),
            # nor relaying what another device wrote past its budget or this node dropped
            # (§6.6, §6.7): it is answered with what it lacks, and it converges. Sending
            # again one's own dropped documents is (§11.3).
            self._rejects.append(now)
        if doc_id is not None and exc.code in ROSTER_CODES:
            # Answer with what the peer lacks (the tombstone first), but not for ever: two
            # honest nodes split by an equivocating member would otherwise refuse each
            # other's messages as fast as the link allows. After a few, wait for a change.
            recent = [t for t in self._roster_rejects.get(doc_id, []) if now - t < REJECT_WINDOW]
            recent.append(now)
            self._roster_rejects[doc_id] = recent
            if len(recent) <= ROSTER_RETRIES:
                self.mark_dirty(doc_id)
        with contextlib.suppress(TransportError):
            await self.channel.send(reject_frame(doc_id, exc))
        if len(self._rejects) > MAX_REJECTS:  # SPEC-005 005.11.3: "more than 8"
            await self._error("too_many_rejections", "too many rejected messages")
            return False
        if doc_id is not None and exc.code == "missing_dependency":
            # Ask for what is missing now (SPEC-005 §8.6), after the reject: the peer resets
            # its state on the reject, then reads this ask. Waiting for the document's next
            # change left two nodes that wrote one shard at once apart until someone wrote
            # again. One message per refused one, so the peer's frame rate bounds the work.
            self.mark_dirty(doc_id)
        return True

    async def _error(self, code: str, detail: str) -> None:
        self.manager.note_error(self.peer_key, f"{code}: {detail}")
        if code in ("flooding", "too_many_rejections"):
            self.manager.penalise(self.peer_key)
        with contextlib.suppress(TransportError):
            await self.channel.send({"t": "error", "code": code, "detail": detail})
        await self.channel.close(1008, code)  # SPEC-005 005.9.11: the reason is the code

    async def _send_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._dirty:
                    doc_id = next(iter(self._dirty))
                    del self._dirty[doc_id]
                    frames = self.sync.generate(doc_id)
                    for frame in frames:
                        await self.channel.send(frame)  # awaits: backpressure from the socket
        except (asyncio.CancelledError, TransportError):
            raise
        except Exception:
            # A bug here must not leave a silent, half-dead connection: log it and hang up,
            # the dial loop reconnects and sync starts afresh.
            log.exception("sync sender for %s failed; closing", self.channel.peer_device_id)
            await self.channel.close(1011, "internal error")


class PeerManager:
    """Every peer connection of this node, incoming and outgoing."""

    def __init__(
        self,
        repo: Repo,
        *,
        frame_rate: float = FRAME_RATE,
        frame_burst: float = FRAME_BURST,
        handshake_timeout: float = 5.0,
        liveness_interval: float = LIVENESS_INTERVAL,
        liveness_timeout: float = LIVENESS_TIMEOUT,
    ) -> None:
        self.liveness_interval = liveness_interval
        self.liveness_timeout = liveness_timeout
        self.repo = repo
        self.frame_rate = frame_rate
        self.frame_burst = frame_burst
        self.handshake_timeout = handshake_timeout
        # incoming connections not yet proven members, peers and pairing alike (005.9.10a)
        self.handshakes = HandshakeGate()
        # devices seen signing two different changes with one number (note_equivocation)
        self.equivocations: dict[bytes, dict[str, Any]] = {}
        self.connections: dict[bytes, PeerConnection] = {}
        self.peers: dict[bytes, PeerState] = {}
        self.static: dict[str, DialTarget] = {}
        self.discovered: dict[str, DialTarget] = {}
        self.recorded: dict[str, DialTarget] = {}  # members' signed address records (§12.12)
        self._penalty: dict[bytes, tuple[float, float]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()
        self._closing = False
        self.on_connected: list[Callable[[PeerConnection], None]] = []
        self.on_disconnected: list[Callable[[PeerConnection], None]] = []
        self.handlers: dict[str, FrameHandler] = {}
        self.on_roster_change: Callable[[], None] | None = None
        #: Is this address on a link of ours that is down (set by node/mesh/reach.py)? Such
        #: an address is not dialled until the link returns, which wakes every dialler.
        self.unreachable: Callable[[str], bool] = lambda address: False
        repo.subscribe(self._on_change)

    # -- extension points for features (routing, sessions, ...) ----------------------------------
    def register(self, kind: str, handler: FrameHandler) -> None:
        """Route frames of ``kind`` to ``handler(conn, frame)``, awaited in the reader loop:
        a handler that does slow work (a model call) must spawn a task and return."""
        taken = ("summary", "sync", "reject", "error", "certs", "chain", "ping", "pong")
        if kind in taken or kind in self.handlers:
            raise ValueError(f"frame kind {kind!r} is taken")
        self.handlers[kind] = handler

    async def broadcast(self, frame: dict[str, Any]) -> int:
        """Send ``frame`` to every connected peer; returns how many it reached."""
        sent = 0
        for conn in list(self.connections.values()):
            try:
                await conn.send(frame)
                sent += 1
            except TransportError as exc:
                log.debug("broadcast to %s failed: %s", conn.peer_device_id, exc)
        return sent

    def enforce_roster(self) -> int:
        """Close every connection whose peer is no longer a member (revoked); returns count."""
        closing = [c for k, c in self.connections.items() if not self.repo.roster.is_member(k)]
        for conn in closing:
            code = "revoked" if conn.peer_key in self.repo.roster.revoked else "not_member"
            log.warning("disconnecting %s: %s", conn.peer_device_id, code)
            self.note_error(conn.peer_key, code)
            self._spawn(self._cut(conn, code), f"cut-{conn.peer_device_id[:7]}")
        return len(closing)

    def refusal(self, key: bytes, code: str, detail: str) -> dict[str, Any]:
        """An error frame; for a revoked device it carries the signed tombstone and its
        issuer's chain, so the device can verify it was revoked and say so (issue 15.6)."""
        frame: dict[str, Any] = {"t": "error", "code": code, "detail": detail}
        if code == "revoked":
            frame["certs"] = [c.encode() for c in self.repo.roster.revocation_proof(key)]
        return frame

    def learn_revocation(self, frame: dict[str, Any]) -> None:
        """A peer says we are revoked: merge the certificates it sent. They are verified
        like any others, so a peer that lies changes nothing."""
        certs = frame.get("certs")
        if (frame.get("code") != "revoked" or not isinstance(certs, list)
                or len(certs) > MAX_CHAIN or not all(isinstance(c, bytes) for c in certs)):
            return
        if self.repo.add_certs(certs) and self.on_roster_change:
            self.on_roster_change()
        info = self.repo.roster.revocation(self.repo.key.public_key)
        if info is not None:
            log.error("this device was revoked by %s (%s) at %s",
                      info["by_name"] or "another device", info["by"], info["at"])

    async def _cut(self, conn: PeerConnection, code: str) -> None:
        with contextlib.suppress(TransportError):
            await conn.channel.send(self.refusal(conn.peer_key, code, "removed from mesh"))
        await conn.channel.close(1008, code)

    def connection(self, key: bytes) -> PeerConnection | None:
        return self.connections.get(key)

    # -- bookkeeping -----------------------------------------------------------------------------
    def _peer(self, key: bytes) -> PeerState:
        state = self.peers.get(key)
        if state is None:
            state = self.peers[key] = PeerState(key)
        return state

    def touch(self, key: bytes) -> None:
        self._peer(key).last_seen = time.time()

    def note_accepted(self, key: bytes, n: int) -> None:
        self._peer(key).accepted += n

    def note_rejected(self, key: bytes, why: str) -> None:
        state = self._peer(key)
        state.rejected += 1
        state.last_error = why

    def note_equivocation(self, relay: bytes, exc: Rejected, doc_id: str | None) -> None:
        """A device signed two different changes with one number (a copied key or a forked
        data dir, SPEC-005 §6.1 f): shown by ``maia status`` until this node restarts, so the
        owner learns which device to look at and revoke, not only the log. Kept per author,
        the latest refusal each, for at most MAX_EQUIVOCATIONS authors."""
        for author in exc.authors:
            if author not in self.equivocations and len(self.equivocations) >= \
                    MAX_EQUIVOCATIONS:
                return
            seen = self.equivocations.get(author)
            self.equivocations[author] = {
                "device_id": device_id(author),
                "document": doc_id, "detail": exc.detail[:300],
                "relayed_by": device_id(relay), "at": time.time(),
                "refusals": (seen["refusals"] if seen else 0) + 1,
            }

    def equivocation_status(self) -> list[dict[str, Any]]:
        roster = self.repo.roster
        return [{**row, "name": str(roster.members.get(key, "")),
                 "roster": "member" if key in roster.members else
                 "revoked" if key in roster.revoked else "unknown"}
                for key, row in self.equivocations.items()]

    def note_error(self, key: bytes, why: str) -> None:
        self._peer(key).last_error = why

    def penalise(self, key: bytes) -> float:
        """Refuse a misbehaving peer for 60 s, doubling on each repeat up to 1 h (SPEC-005
        §11.3); returns the seconds."""
        previous = self._penalty.get(key, (0.0, 0.0))[1]
        seconds = min(PENALTY_MAX, previous * 2 if previous else PENALTY_START)
        self._penalty[key] = (time.monotonic() + seconds, seconds)
        log.warning("refusing %s for %.0f s", device_id(key), seconds)
        return seconds

    def penalised(self, key: bytes) -> float:
        until = self._penalty.get(key, (0.0, 0.0))[0]
        return max(0.0, until - time.monotonic())

    def _on_change(self, doc_id: str, local: bool) -> None:
        for conn in self.connections.values():
            conn.mark_dirty(doc_id)

    def certs_frames(self) -> list[dict[str, Any]]:
        """Every certificate this node holds, in frames of bounded size, for a member peer.

        Certificates also travel in the Identity document, but a document split by a member
        that signed two different changes with one number (SPEC-005 §6.1 f) carries nothing
        across the split; a revocation must still reach everyone (SPEC-005 §8.9)."""
        frames: list[dict[str, Any]] = []
        batch: list[bytes] = []
        size = 0
        for cert in self.repo.roster.certs.values():
            raw = cert.encode()
            full = size + len(raw) > CERTS_FRAME_BYTES or len(batch) >= MAX_CERTS_PER_FRAME
            if batch and full:
                frames.append({"t": "certs", "certs": batch})
                batch, size = [], 0
            batch.append(raw)
            size += len(raw)
        if batch:
            frames.append({"t": "certs", "certs": batch})
        return frames

    def share_certs(self) -> None:
        """Send every certificate to every connected peer (after the roster changed)."""
        if not self.connections:
            return

        async def share() -> None:
            for conn in list(self.connections.values()):
                for frame in self.certs_frames():
                    try:
                        await conn.send(frame)
                    except TransportError:
                        break

        self._spawn(share(), "share-certs")

    def own_chain(self) -> list[bytes]:
        """The genesis and endorsements that admit this device, and the tombstones this node
        knows: all a peer is shown of the roster before it has proved it is a member
        (SPEC-005 §9.8). The tombstones let a peer whose roster is behind (it still counts a
        thief's revocation of us) learn the more senior revocation that undoes it."""
        roster = self.repo.roster
        tombs = sorted((c for c in roster.certs.values() if c.kind == "revoke"),
                       key=lambda c: c.cert_id)
        chain = roster.chain_of(self.repo.key.public_key)
        return [c.encode() for c in [*chain, *tombs][:MAX_CHAIN]]

    async def _exchange_chains(self, channel: SecureChannel, *, initiator: bool) -> str:
        """After the handshake, prove membership both ways without telling strangers anything.

        The initiator sends its own chain only if it already knows the responder as a member;
        the responder merges nothing but the initiator's chain, checks it, and only then sends
        its own. Returns "" when the peer is a member, else the refusal code (SPEC-005 §9.8).
        """
        key = channel.peer_key
        try:
            async with asyncio.timeout(self.handshake_timeout):
                if initiator:
                    known = self.repo.roster.is_member(key)
                    await channel.send({"t": "chain", "certs": self.own_chain() if known else []})
                frame = await channel.recv()
                if isinstance(frame, dict) and frame.get("t") == "error":
                    self.learn_revocation(frame)
                    return f"remote:{frame.get('code')}"
                certs = frame.get("certs") if isinstance(frame, dict) else None
                if (not isinstance(frame, dict) or frame.get("t") != "chain"
                        or not isinstance(certs, list) or len(certs) > MAX_CHAIN
                        or not all(isinstance(c, bytes) for c in certs)):
                    return "malformed"
                if self.repo.add_certs(certs, chain_of=key) and self.on_roster_change:
                    self.on_roster_change()
                if not self.repo.roster.is_member(key):
                    return "revoked" if key in self.repo.roster.revoked else "not_member"
                if not initiator:
                    await channel.send({"t": "chain", "certs": self.own_chain()})
        except TimeoutError:
            return "handshake_timeout"
        except TransportError as exc:
            return f"remote:{getattr(exc, 'code', 'closed')}"
        return ""

    def status(self) -> list[dict[str, Any]]:
        out = []
        for p in self.peers.values():
            row = p.as_dict()
            conn = self.connections.get(p.key)
            if conn is not None:
                theirs = conn.sync.their_heads
                row["summary_received"] = bool(theirs)
                row["documents_differing"] = sum(
                    1 for d, h in theirs.items() if sorted(h) != sorted(self.repo.heads(d))
                )
                row["rtt_ms"] = None if conn.rtt is None else round(conn.rtt * 1000, 1)
            out.append(row)
        targets = {sp.expected_id or device_id_or_none(sp.peer_key): sp
                   for sp in [*self.static.values(), *self.recorded.values(),
                              *self.discovered.values()]}
        for row in out:
            sp = targets.get(row["device_id"])
            row["next_retry"] = None if row["connected"] or sp is None else sp.next_retry
        known = {p.address for p in self.peers.values()}
        for sp in self.static.values():
            if sp.address not in known:
                out.append({"address": sp.address, "connected": False, "path": "static",
                            "last_error": sp.last_error, "device_id": None,
                            "next_retry": sp.next_retry})
        return out

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        self._session = peer_session()  # refuses redirects (SPEC-005 005.9.6)

    async def stop(self) -> None:
        self._closing = True
        self.repo.unsubscribe(self._on_change)
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self.connections.values()):
            await conn.channel.close(1001, "node stopping")
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._session is not None:
            await self._session.close()

    def _spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- static peers ----------------------------------------------------------------------------
    def add_static(self, address: str) -> None:
        if address in self.static:
            return
        sp = DialTarget(address)
        self.static[address] = sp
        sp.task = self._spawn(self._dial_loop(sp), f"dial-{address}")

    def remove_static(self, address: str) -> None:
        sp = self.static.pop(address, None)
        if sp and sp.task:
            sp.task.cancel()

    def redial_now(self) -> None:
        """Dial every known address that is not connected now, without waiting out its
        backoff: after the roster changed, a refusal (``not_member``, ``revoked``) may no
        longer hold on either side, and a backed-off dialler would keep the mesh apart for up
        to the backoff's cap."""
        for sp in [*self.static.values(), *self.discovered.values()]:
            if sp.peer_key is None or sp.peer_key not in self.connections:
                sp.wake.set()

    # -- discovered peers (mDNS candidates) ------------------------------------------------------
    def add_discovered(self, device: str, addresses: list[str], *, delay: float = 0.0,
                       wake: bool = True) -> None:
        """Dial a discovered member at ``addresses`` (HOST:PORT), proving it is ``device``.

        ``addresses`` is every address discovery now holds for the id, across all service
        names announcing it (node/mesh/discovery.py): it replaces the target's list, after
        the address that proved the key, at most MAX_TARGET_ADDRESSES. Why not merge: a flood
        of announcements claiming the id would grow the list without bound; the proven
        address first means a forged one cannot displace the genuine one."""
        target = self.discovered.get(device)
        if target is not None:
            proven = [target.address] if target.peer_key is not None else []
            target.addresses = list(dict.fromkeys([*proven, *addresses]))[:MAX_TARGET_ADDRESSES]
            if wake:
                target.wake.set()  # a fresh announcement: try now, not at the next backoff
            return
        if not addresses:
            return
        addresses = list(dict.fromkeys(addresses))[:MAX_TARGET_ADDRESSES]
        target = DialTarget(addresses[0], expected_id=device, addresses=addresses,
                            origin="mdns")
        self.discovered[device] = target
        target.task = self._spawn(self._dial_loop(target, delay), f"dial-mdns-{device[:7]}")

    def add_recorded(self, device: str, addresses: list[tuple[str, str]]) -> None:
        """Dial a member at the addresses of its signed record (SPEC-005 §12.12), in the order
        given, proving it is ``device``. The newest record replaces the addresses held."""
        if not addresses:
            return
        target = self.recorded.get(device)
        if target is None:
            target = DialTarget(addresses[0][0], expected_id=device, origin="address")
            self.recorded[device] = target
            target.task = self._spawn(self._dial_loop(target), f"dial-rec-{device[:7]}")
        target.addresses = [a for a, _k in addresses]
        target.kinds = dict(addresses)
        # A newer record wakes the dialler at most every RECORD_WAKE_INTERVAL: a member that
        # publishes a record per frame must not turn the dialler into a loop (its addresses
        # are still the ones dialled next).
        now = time.monotonic()
        if now - target.woken_at >= RECORD_WAKE_INTERVAL:
            target.woken_at = now
            target.wake.set()

    def path_of(self, sp: DialTarget, address: str) -> str:
        """The path a connection to ``address`` takes (SPEC-005 §12.12): the kind the
        member's own record gives that address, whichever dialler reached it, else how the
        address was found (``mdns``, ``static``). The same address often reaches more than
        one dialler: a home server announces its WireGuard address over mDNS too, so at the
        café the mDNS dialler and the record's both dial it, and the label must not depend on
        which of the two finished its handshake last."""
        device = sp.expected_id or device_id_or_none(sp.peer_key)
        record = self.recorded.get(device) if device is not None else None
        kinds = {**(record.kinds if record is not None else {}), **sp.kinds}
        return kinds.get(address, sp.origin)

    def remove_recorded(self, device: str) -> None:
        target = self.recorded.pop(device, None)
        if target and target.task:
            target.task.cancel()

    def probe_all(self, timeout: float | None = None) -> None:
        """Ping every connection now and close those that answer nothing within ``timeout``
        (default: each connection's probe time): after a link change a connection's path may
        be gone, and a fresh dial beats waiting for TCP to retransmit or for the liveness
        timeout (SPEC-005 §9.14)."""
        async def probe(conn: PeerConnection) -> None:
            asked = time.monotonic()
            wait = conn.probe_time() if timeout is None else timeout
            with contextlib.suppress(TransportError):
                await conn.ping()
            await asyncio.sleep(wait)
            if conn.heard_at < asked and not conn.closed.is_set():
                log.info("peer %s did not answer a probe after a link change; redialling",
                         conn.peer_device_id)
                self.note_error(conn.peer_key, "probe_timeout")
                self.abandon(conn, "link changed")

        for conn in list(self.connections.values()):
            self._spawn(probe(conn), f"probe-{conn.peer_device_id[:7]}")

    def abandon(self, conn: PeerConnection, reason: str) -> None:
        """Give up a connection whose path is dead: forget it and wake its dialler now, and
        close it in the background (the close handshake cannot cross a dead path; waiting
        for it would hold the redial back by its timeout)."""
        if self.connections.get(conn.peer_key) is conn:
            del self.connections[conn.peer_key]
            self._peer(conn.peer_key).connected_since = None
        self.wake_member(conn.peer_device_id)
        self._spawn(conn.channel.abort(1001, reason), f"abandon-{conn.peer_device_id[:7]}")

    def wake_all(self) -> None:
        """Redial every target now (a link or address changed, SPEC-005 §9.13)."""
        for sp in [*self.static.values(), *self.discovered.values(), *self.recorded.values()]:
            sp.links_changed()
            sp.wake.set()

    def wake_member(self, device: str) -> None:
        """``device`` went away, or news of it arrived: redial it now if it is not connected."""
        for sp in self.static.values():
            if device_id_or_none(sp.peer_key) == device:
                sp.wake.set()
        for table in (self.discovered, self.recorded):
            if (sp := table.get(device)) is not None:
                sp.wake.set()

    def remove_discovered(self, device: str, *, keep_connected: bool = True) -> None:
        """Stop dialling a discovered device, unless it is connected now (``keep_connected``;
        not for one that left the roster): a goodbye, perhaps forged by a stranger for a name
        claiming the id, must not cut off a working session's redial; the target keeps only
        the address that proved the key."""
        target = self.discovered.get(device)
        if target is None:
            return
        if keep_connected and self._connected_to(device) and target.peer_key is not None:
            target.addresses = [target.address]
            return
        del self.discovered[device]
        if target.task:
            target.task.cancel()

    def _connected_to(self, device: str | None) -> bool:
        return device is not None and any(
            c.peer_device_id == device for c in self.connections.values()
        )

    def _backoff(self, sp: DialTarget, start: float = BACKOFF_START):
        """Members are redialled within seconds; an address of unknown identity backs off to
        30 s (SPEC-005 §9.13)."""
        known = sp.expected_id or device_id_or_none(sp.peer_key)
        members = {device_id(k) for k in self.repo.roster.members}
        cap = MEMBER_BACKOFF_MAX if known in members else BACKOFF_MAX
        return backoff_delays(min(start, cap), cap)

    async def _dial_loop(self, sp: DialTarget, delay: float = 0.0) -> None:
        delays = self._backoff(sp)
        if delay:
            await asyncio.sleep(delay)
        while not self._closing:
            if self._connected_to(sp.expected_id or device_id_or_none(sp.peer_key)):
                # The peer is connected (perhaps it dialled us): wait until woken or a second.
                sp.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sp.wake.wait(), 1.0)
                continue
            sp.attempts += 1
            sp.next_retry = None
            for address in sp.addresses or [sp.address]:
                if not sp.may_dial(address):
                    continue
                if self.unreachable(address):
                    sp.last_error = "link down"
                    continue
                try:
                    channel = await self._connect(address)
                except (OSError, aiohttp.ClientError, TransportError, TimeoutError) as exc:
                    sp.last_error = str(exc) or type(exc).__name__
                    sp.failed(address)
                    log.debug("dial %s failed: %s", address, sp.last_error)
                    continue
                if sp.expected_id and channel.peer_device_id != sp.expected_id:
                    sp.last_error = (
                        f"{address} advertised {sp.expected_id} but proved to be "
                        f"{channel.peer_device_id}"
                    )
                    log.warning("refusing %s: %s", address, sp.last_error)
                    sp.failed(address, mismatch=True)
                    await channel.close(1008, "identity mismatch")
                    continue
                sp.answered(address)
                sp.peer_key = channel.peer_key
                sp.address = address
                served = await self._serve(channel, initiator=True, address=address,
                                           path=self.path_of(sp, address))
                sp.last_error = self._peer(channel.peer_key).last_error
                if served is not None and not served.remote_error:
                    delays = self._backoff(sp)  # a real session: start backing off afresh
                elif (served.remote_error if served is not None else sp.last_error) in (
                    "revoked", "not_member"
                ):
                    # Refused by the mesh. A device that its own roster counts as a member is
                    # most likely seeing two rosters disagree for a moment (a revocation and
                    # the more senior one that undoes it, crossing): retry soon. Otherwise no
                    # hammering.
                    me = self.repo.key.public_key
                    delays = (backoff_delays(MEMBER_REFUSED_RETRY, MEMBER_REFUSED_RETRY)
                              if self.repo.roster.is_member(me) else backoff_delays(BACKOFF_MAX))
                break
            sp.wake.clear()
            wait = next(delays)
            if sp.urgent:
                wait = min(wait, URGENT_RETRY)
            sp.next_retry = time.time() + wait
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sp.wake.wait(), wait)
            if sp.wake.is_set():
                delays = self._backoff(sp)

    async def _connect(self, address: str) -> SecureChannel:
        """Open an authenticated channel to ``address``; an attempt that has not succeeded
        after STAGGER is joined by a fresh one (then after twice that), up to RACE at once, and
        the first to finish wins (SPEC-005 §9.13).

        Why: a dial whose first SYN is lost (a path that just came back, the peer's neighbour
        entry for us still unresolved, 1% loss on a tunnel) otherwise waits for TCP's own
        retransmission, 1 s and then 3 s later. A fresh attempt sends a fresh SYN now. Attempts
        that fail at once (refused, unreachable) end the race: nothing is hammered."""
        url = f"http://{_bracket(address)}/v1/peer"

        def attempt() -> asyncio.Task:
            return asyncio.ensure_future(connect(
                self._session, url, key=self.repo.key, mesh_id=self.repo.mesh_id,
                timeout=self.handshake_timeout))

        tasks = [attempt()]
        stagger = STAGGER
        try:
            while True:
                done, _ = await asyncio.wait(tasks, timeout=stagger,
                                             return_when=asyncio.FIRST_COMPLETED)
                failure: BaseException | None = None
                for task in done:
                    tasks.remove(task)
                    if task.exception() is None:
                        return task.result()
                    failure = task.exception()
                if not tasks and failure is not None:
                    raise failure
                if not done and len(tasks) < RACE:
                    tasks.append(attempt())
                    stagger *= 2
        finally:
            for task in tasks:
                task.cancel()
                task.add_done_callback(self._close_won_late)

    def _close_won_late(self, task: asyncio.Task) -> None:
        """A racing connect that finished after another won (or the dial ended): close it."""
        if not task.cancelled() and task.exception() is None:
            self._spawn(task.result().close(1000, "another attempt won"), "close-late")

    # -- incoming --------------------------------------------------------------------------------
    async def handle_incoming(self, request: web.Request) -> web.StreamResponse:
        slot = self.handshakes.take(request.remote)
        if slot is None:  # SPEC-005 005.9.10a: nothing of it is read
            return busy_response()
        try:
            try:
                ws, channel = await accept(
                    request, key=self.repo.key, mesh_id=self.repo.mesh_id,
                    timeout=self.handshake_timeout,
                )
            except TransportError as exc:
                log.info("incoming peer from %s failed the handshake: %s", request.remote, exc)
                response = getattr(exc, "response", None)
                if response is None:
                    raise
                return response
            await self._serve(channel, initiator=False, address=request.remote or "",
                              path="incoming", proven=slot.release)
            return ws
        finally:
            slot.release()

    # -- one session ------------------------------------------------------------------------------
    async def _serve(
        self, channel: SecureChannel, *, initiator: bool, address: str, path: str = "",
        proven: Callable[[], None] | None = None,
    ) -> PeerConnection | None:
        """Run one authenticated session; the connection object, or None when refused.
        ``proven`` is called once the peer is known a member or refused (its slot of the
        handshake gate, SPEC-005 005.9.10a)."""
        key = channel.peer_key
        wait = self.penalised(key)
        if wait:
            with contextlib.suppress(TransportError):
                await channel.send({"t": "error", "code": "backoff",
                                    "detail": f"refused for another {wait:.0f} s"})
            await channel.close(1008, "backoff")
            return None
        code = await self._exchange_chains(channel, initiator=initiator)
        if code.startswith("remote:"):
            log.info("%s refused us: %s", channel.peer_device_id, code[7:])
            self.note_error(key, code[7:])
            await channel.close(1000, "refused")
            return None
        if code:
            log.warning("refusing %s: %s", channel.peer_device_id, code)
            self.note_error(key, code)
            if code == "malformed":
                self.penalise(key)
            # A refused member-to-be is not penalised: the roster may change any moment (a
            # more senior revocation undoing a thief's), and a backed-off honest device would
            # then stay cut off for minutes. Its attempts cost a bounded, linear derivation.
            with contextlib.suppress(TransportError):
                await channel.send(self.refusal(key, code, "not in this mesh"))
            await channel.close(1008, code)
            return None
        if proven is not None:  # a member: its slot is free for the next (a refused
            proven()            # connection keeps its own until it is closed)
        conn = PeerConnection(self, channel, initiator=initiator, address=address)
        existing = self.connections.get(key)
        if existing is not None:
            keep_new = conn.initiator_key == existing.initiator_key or (
                conn.initiator_key == min(conn.initiator_key, existing.initiator_key)
            )
            # A connection silent for longer than an idle live one ever is (it pings after
            # LIVENESS_INTERVAL, so it hears something at least every two) is stale: its peer
            # gave it up (a link change, §9.14) and dialled afresh. Keeping it by the rule
            # above would refuse the working connection until the liveness timeout.
            stale = time.monotonic() - existing.heard_at > 2 * self.liveness_interval
            if not keep_new and not stale:
                await channel.close(4009, "duplicate connection")
                return None
            # Closed in the background: a stale one's close handshake cannot cross its dead
            # path, and waiting for it (up to CLOSE_TIMEOUT) would hold the new session back.
            del self.connections[key]
            close = existing.channel.abort if stale else existing.channel.close
            self._spawn(close(4009, "replaced by a newer connection"),
                        f"replace-{channel.peer_device_id[:7]}")
        self.connections[key] = conn
        state = self._peer(key)
        state.address, state.connected_since, state.last_seen = address, time.time(), time.time()
        state.path = path
        log.info("peer %s connected (%s)", channel.peer_device_id, address)
        for callback in self.on_connected:
            _safely(callback, conn)
        try:
            await conn.run()
        finally:
            if self.connections.get(key) is conn:
                del self.connections[key]
                state.connected_since = None
                self.wake_member(channel.peer_device_id)  # redial at once, not in a second
            for callback in self.on_disconnected:
                _safely(callback, conn)
            # A split message cut short: drop the parts held for a cutoff head (§6.1 h).
            for doc_id, n in conn.sync.settle().items():
                log.info("dropped %d held change(s) of %s from %s: the message never ended",
                         n, doc_id, channel.peer_device_id)
            log.info("peer %s disconnected", channel.peer_device_id)
        return conn


#: Devices whose equivocation ``maia status`` shows (the first seen since start).
MAX_EQUIVOCATIONS = 64
#: Missing hashes a ``reject`` frame lists (SPEC-005 §8.6): enough to say what went astray,
#: bounded so that a reject never grows with the message it refuses (§11.1).
REJECT_MISSING = 64


def reject_frame(doc_id: str | None, exc: Rejected) -> dict[str, Any]:
    """The ``reject`` frame for ``exc``: its code, a detail cut to 500 characters, and for
    ``missing_dependency`` the first missing hashes (SPEC-005 §8.6, §11.1)."""
    frame: dict[str, Any] = {"t": "reject", "doc": doc_id if _short(doc_id) else None,
                             "code": exc.code, "detail": exc.detail[:500]}
    if exc.code == "missing_dependency":
        frame["missing"] = [bytes(h) for h in exc.missing[:REJECT_MISSING]]
    return frame


def busy_response() -> web.Response:
    """The answer to a connection that found no slot of the handshake gate (SPEC-005
    005.9.10a): before the upgrade, so nothing of it is read."""
    return web.Response(status=503, headers={"Retry-After": "2"},
                        text="too many connections waiting to prove membership; try again")


def _short(doc_id: object) -> bool:
    return isinstance(doc_id, str) and len(doc_id) <= 64


def device_id_or_none(key: bytes | None) -> str | None:
    return device_id(key) if key else None


def _host_of(address: str) -> str:
    """The host of ``HOST:PORT`` (brackets dropped), or the whole string when it is not one."""
    host, sep, _port = address.rpartition(":")
    return host.strip("[]") if sep else address


def _bracket(address: str) -> str:
    """``fe80::1:7412`` -> ``[fe80::1]:7412`` so the URL parses; IPv4 and names unchanged."""
    host, _, port = address.rpartition(":")
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else address


def _safely(callback: Callable[[PeerConnection], None], conn: PeerConnection) -> None:
    try:
        callback(conn)
    except Exception:
        log.exception("peer callback %r failed", callback)
