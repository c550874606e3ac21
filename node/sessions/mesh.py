"""Live exchange of sessions, leases and messages between the mesh's nodes (SPEC-004 §4, §14).

Runtime state travels as signed frames on the peer channel and is never written into a synced
document. Each origin signs its own state (``{t: "live", body, sig}``), so a node can relay it
unchanged and a line of nodes (A–B–C) still shares everything; receivers keep the highest
``seq`` per origin and drop older frames and repeats. Everything in a frame is untrusted input:
sizes and fields are validated, and paths in it are never used on the local file system.

No clock decides anything here (§4.1, §8.9, §9.4): ``seq`` is a boot epoch kept in the runtime
store times 2^32 plus a counter, a peer's lease expires after the time left it announced,
counted from arrival, and a peer's clock offset is estimated from ``clock`` round trips, never
from how old a frame looks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack

from crdt import DeviceKey, Rejected, device_id, verify_signature

from .clock import NS, mono_ns, now_ns, parse_iso
from .leases import Lease
from .registry import AGENTS

log = logging.getLogger(__name__)

LIVE_DOMAIN = b"maia-live-v1\x00"
MSG_DOMAIN = b"maia-msg-v1\x00"
MAX_BODY = 1024 * 1024
# What one origin may announce (SPEC-004 004.2.8, 004.8.7): each of its sessions and leases
# is compared with every other on each frame and each pre-edit hook, so a member's 1 MiB frame
# of 3,447 leases held a node's loop 8.9 s per frame (found by an attacker's read).
MAX_SESSIONS = 256
MAX_LEASES = 256
_MAX_ARRAY = 4096  # what a body may hold at all: more is undecodable, not just too many
MAX_TAG = 5000
MIN_INTERVAL = 0.1  # at most 10 publications per second (§4.2)
SKEW_LIMIT_NS = 5 * NS  # §9.4, §9.5
SKEW_SAMPLES = 8
EPOCH_KEY = b"sessions:live-epoch"
MAX_HELD_MS = 86_400_000
_SESSION_ID = re.compile(r"[a-z2-7]{26}")
_MSG_ID = re.compile(r"[0-9a-f]{32}")
_SEEN_MESSAGES = 4096


def own_clock_is_outlier(offsets: list[float], limit_s: float = SKEW_LIMIT_NS / NS) -> bool:
    """SPEC-004 §9.5: at least two estimates, and more than half of them find our clock off by
    more than ``limit_s`` in the same direction."""
    if len(offsets) < 2:
        return False
    ahead = sum(1 for o in offsets if o < -limit_s)  # they are behind us: we are ahead
    behind = sum(1 for o in offsets if o > limit_s)
    return max(ahead, behind) * 2 > len(offsets)


def _unpack(body: bytes) -> dict[str, Any]:
    try:
        data = msgpack.unpackb(
            body, raw=False, strict_map_key=True, max_bin_len=MAX_BODY, max_str_len=MAX_BODY,
            max_array_len=_MAX_ARRAY, max_map_len=4096, max_ext_len=0,
        )
    except Exception as exc:
        raise Rejected("malformed", f"undecodable live body: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise Rejected("malformed", "a live body is a map")
    return data


def _s(rec: dict[str, Any], name: str, limit: int) -> str:
    value = rec.get(name, "")
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(f"field {name} is not a string of at most {limit} characters")
    return value


def _tags(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or len(value) > 256:
        raise ValueError(f"{name} is a list of at most 256 tags")
    if not all(isinstance(t, str) and 0 < len(t) <= MAX_TAG for t in value):
        raise ValueError(f"{name} holds something that is not a tag")
    return value


def validate_session(rec: Any, origin_device: str, device_name: str | None = None
                     ) -> dict[str, Any]:
    """A peer's session record (§4.4), checked field by field and rebuilt from known fields;
    ``device_name``: the roster's name of the origin, shown instead of the one the record
    claims (SPEC-004 004.4.8)."""
    if not isinstance(rec, dict):
        raise ValueError("a session record is a map")
    sid = _s(rec, "id", 26)
    if not _SESSION_ID.fullmatch(sid):
        raise ValueError("malformed session id")
    if _s(rec, "device", 80) != origin_device:
        raise ValueError("a session's device must be its origin")
    pid = rec.get("pid", 0)
    if not isinstance(pid, int) or not 0 <= pid < 2**31:
        raise ValueError("pid out of range")
    agent = _s(rec, "agent", 16)
    out = {
        "id": sid,
        "agent": agent if agent in AGENTS else "other",
        "device": origin_device,
        "device_name": device_name if device_name is not None else _s(rec, "device_name", 200),
        "pid": pid,
        "repository": _s(rec, "repository", 1024),
        "branch": _s(rec, "branch", 256),
        "cwd": _s(rec, "cwd", 4096),
        "task": _s(rec, "task", 200),
        "started_at": _s(rec, "started_at", 40),
        "last_seen": _s(rec, "last_seen", 40),
        "status": "active",
        "tags": _tags(rec.get("tags", []), "tags"),
        "modified": _tags(rec.get("modified", []), "modified"),
        "recent_action": _s(rec, "recent_action", 200),
    }
    out["last_seen_ns"] = parse_iso(out["last_seen"])
    parse_iso(out["started_at"])
    return out


@dataclass
class OriginState:
    """The latest live state of one origin, as received."""

    key: bytes
    device_id: str
    seq: int
    frame: dict[str, Any]
    sessions: list[dict[str, Any]]
    leases: list[Lease]
    received_mono: float = field(default_factory=time.monotonic)
    held_ms: int = 0  # how long the lease times had aged on arrival (a relay's greeting)

    def fresh(self, stale_s: float) -> bool:
        return time.monotonic() - self.received_mono < stale_s


def _replace_unencodable(value: Any) -> Any:
    """``value`` with every string made UTF-8-encodable (a lone surrogate becomes "?")."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_replace_unencodable(k): _replace_unencodable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_replace_unencodable(v) for v in value]
    return value


class LiveExchange:
    """Publishes this node's live state and keeps every other origin's latest one."""

    def __init__(
        self,
        peers: Any,
        repo: Any,
        key: DeviceKey,
        build: Callable[[], tuple[list[dict[str, Any]], list[dict[str, Any]]]],
        on_state: Callable[[OriginState], None],
        on_message: Callable[[dict[str, Any]], None],
        *,
        interval: float = 10.0,
        store: Any = None,
    ) -> None:
        self.peers = peers
        self.repo = repo
        self.key = key
        self.build = build
        self.on_state = on_state
        self.on_message = on_message
        self.interval = interval
        self.origins: dict[bytes, OriginState] = {}
        self.store = store
        self.epoch = 0
        self._seq = 0
        self._counter = 0
        # clock offsets of directly connected peers (§9.4): key -> [(rtt ns, offset ns)]
        self._clock_samples: dict[bytes, list[tuple[int, int]]] = {}
        self._clock_asked: dict[int, tuple[bytes, int, int]] = {}  # n -> (key, mono, wall)
        self._last_sent = 0.0
        self._scheduled: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._periodic: asyncio.Task | None = None
        self._seen_messages: OrderedDict[str, None] = OrderedDict()
        self._skew_warned: dict[bytes, float] = {}
        self._unpackable_warned: set[str] = set()
        self.published = 0

    # -- wiring ----------------------------------------------------------------------------------
    def setup(self) -> None:
        self.peers.register("live", self._on_live)
        self.peers.register("msg", self._on_msg)
        self.peers.register("clock", self._on_clock)
        self.peers.on_connected.append(self._on_connected)
        self.epoch = self._next_epoch()

    def _next_epoch(self) -> int:
        """Raise and keep the boot epoch of ``seq`` (§4.1), before this start's first frame."""
        if self.store is None:
            return 1
        env, db = self.store.runtime_db("kv")
        with env.begin(write=True, db=db) as txn:
            raw = txn.get(EPOCH_KEY)
            try:
                previous = struct.unpack(">Q", bytes(raw))[0] if raw is not None else 0
            except struct.error:
                previous = 0
            epoch = previous + 1
            txn.put(EPOCH_KEY, struct.pack(">Q", epoch))
        env.sync(True)
        return epoch

    async def start(self) -> None:
        self._periodic = asyncio.create_task(self._every_interval(), name="live-periodic")

    async def stop(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
        tasks = [*self._tasks, *([self._periodic] if self._periodic else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- publishing ------------------------------------------------------------------------------
    def changed(self) -> None:
        """Publish soon: at once after 100 ms of quiet, else coalesced to 10 per second."""
        if self._scheduled is not None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._last_sent + MIN_INTERVAL - time.monotonic())
        self._scheduled = loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._scheduled = None
        self._spawn(self.publish(), "live-publish")

    async def publish(self) -> int:
        frame = self.own_frame()
        self._last_sent = time.monotonic()
        self.published += 1
        return await self.peers.broadcast(frame)

    def own_frame(self) -> dict[str, Any]:
        sessions, leases = self.build()
        sessions, leases = self._packable(sessions), self._packable(leases)
        self._counter += 1
        self._seq = (max(self.epoch, 1) << 32) + self._counter
        body = self._pack(sessions, leases)
        while len(body) > MAX_BODY and sessions:
            sessions = sorted(sessions, key=lambda s: s["started_at"])[1:]  # oldest go first
            body = self._pack(sessions, leases)
        return {"t": "live", "body": body, "sig": self._sign(LIVE_DOMAIN, body)}

    def _packable(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``records`` as msgpack can encode them, one bad record never costing the others.

        Why: a session whose task held an unpaired surrogate (a hook's prompt) made
        ``msgpack.packb`` raise on every frame, so this node stopped announcing all of its
        sessions and leases, and peers granted leases that conflicted with them (§4.1, §8.4).
        A record whose strings cannot be encoded is sent with those characters replaced
        ("?"); one that still cannot be packed is left out. Each is logged once.
        """
        try:
            msgpack.packb(records, use_bin_type=True)
            return records
        except (TypeError, ValueError, OverflowError):  # UnicodeEncodeError is a ValueError
            pass
        kept: list[dict[str, Any]] = []
        for record in records:
            try:
                msgpack.packb(record, use_bin_type=True)
                kept.append(record)
                continue
            except (TypeError, ValueError, OverflowError):
                pass
            fixed = _replace_unencodable(record)
            try:
                msgpack.packb(fixed, use_bin_type=True)
            except (TypeError, ValueError, OverflowError):
                fixed = None
            name = str(record.get("id", "?"))[:64]
            if name not in self._unpackable_warned:
                if len(self._unpackable_warned) >= 1024:
                    self._unpackable_warned.clear()
                self._unpackable_warned.add(name)
                log.warning("live record %s %s", name, "had characters that are not UTF-8; "
                            "sent with them replaced" if fixed is not None
                            else "cannot be encoded; left out of the live frame")
            if fixed is not None:
                kept.append(fixed)
        return kept

    def _pack(self, sessions: list[dict[str, Any]], leases: list[dict[str, Any]]) -> bytes:
        return msgpack.packb(
            {"v": 1, "origin": self.key.public_key, "seq": self._seq, "sessions": sessions,
             "leases": leases},
            use_bin_type=True,
        )

    def _sign(self, domain: bytes, body: bytes) -> bytes:
        return self.key.sign(domain + self.repo.mesh_id + body)

    async def _every_interval(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.publish()
            except Exception:
                log.exception("periodic live publication failed")
            for conn in list(self.peers.connections.values()):
                self._spawn(self._ask_clock(conn), "clock-ask")

    def _on_connected(self, conn: Any) -> None:
        # Built now, before this connection's first frame is read: the peer must see our state
        # as it was at the heal (leases that are about to lose included, §9.3), or the winner's
        # origin could never tell its holder about the conflict.
        now = time.monotonic()
        frames = [self.own_frame()] + [
            {**state.frame, "held_ms": min(MAX_HELD_MS, state.held_ms + int(
                (now - state.received_mono) * 1000))}
            for key, state in self.origins.items() if key != conn.peer_key
        ]
        self._spawn(self._greet(conn, frames), f"live-greet-{conn.peer_device_id[:7]}")
        self._clock_samples.pop(conn.peer_key, None)  # a new connection: its clock may be new
        self._spawn(self._ask_clock(conn), "clock-ask")

    async def _greet(self, conn: Any, frames: list[dict[str, Any]]) -> None:
        """Own state first, then the latest frame of every other origin we hold (§4.2)."""
        try:
            for frame in frames:
                await conn.send(frame)
        except Exception as exc:
            log.debug("live greeting to %s failed: %s", conn.peer_device_id, exc)

    async def _relay(self, frame: dict[str, Any], source: Any) -> None:
        for conn in list(self.peers.connections.values()):
            if conn is source:
                continue
            with contextlib.suppress(Exception):
                await conn.send(frame)

    # -- receiving -------------------------------------------------------------------------------
    def _check_origin(self, frame: dict[str, Any], domain: bytes) -> tuple[dict[str, Any], bytes]:
        body, sig = frame.get("body"), frame.get("sig")
        if not isinstance(body, bytes) or not isinstance(sig, bytes) or len(sig) != 64:
            raise Rejected("malformed", "a signed frame needs a body and a 64-byte sig")
        if len(body) > MAX_BODY:
            raise Rejected("too_large", "live body over 1 MiB")
        data = _unpack(body)
        origin = data.get("origin")
        if data.get("v") != 1 or not isinstance(origin, bytes) or len(origin) != 32:
            raise Rejected("malformed", "unsupported live body")
        if not verify_signature(origin, domain + self.repo.mesh_id + body, sig):
            raise Rejected("bad_signature", "live frame signature does not verify")
        return data, origin

    def _member(self, origin: bytes) -> bool:
        roster = self.repo.roster
        if roster.is_member(origin):
            return True
        log.info("dropping live state of %s: %s", device_id(origin),
                 "revoked" if origin in roster.revoked else "not a member")
        return False

    def _roster_name(self, origin: bytes) -> str:
        """The name the owner gave the origin's device in the roster (SPEC-004 004.4.8): what
        its sessions, leases and messages are shown under, whatever they claim. A member's
        frame naming itself "laptop" made its message to an agent read exactly as one of the
        owner's from the laptop (found by an attacker's read)."""
        return self.repo.roster.members.get(origin) or device_id(origin)[:12]

    async def _on_live(self, conn: Any, frame: dict[str, Any]) -> None:
        data, origin = self._check_origin(frame, LIVE_DOMAIN)
        if origin == self.key.public_key or not self._member(origin):
            return
        seq = data.get("seq")
        if not isinstance(seq, int) or seq <= 0:
            raise Rejected("malformed", "live seq must be a positive integer")
        previous = self.origins.get(origin)
        if previous is not None and seq <= previous.seq:
            return  # older or repeated: drop (§4.3)
        origin_device = device_id(origin)
        arrived = mono_ns()
        held = frame.get("held_ms", 0)
        if isinstance(held, bool) or not isinstance(held, int) or not 0 <= held <= MAX_HELD_MS:
            held = 0
        sessions, leases = data.get("sessions"), data.get("leases")
        if not isinstance(sessions, list) or not isinstance(leases, list):
            raise Rejected("malformed", "sessions and leases are lists")
        if len(sessions) > MAX_SESSIONS or len(leases) > MAX_LEASES:
            raise Rejected("too_large", "too many sessions or leases in a live body")
        name = self._roster_name(origin)
        try:
            checked = [validate_session(s, origin_device, name) for s in sessions]
            parsed = [replace(Lease.from_record(x, arrived, held), device_name=name)
                      for x in leases]
        except ValueError as exc:
            raise Rejected("malformed", f"live state: {exc}") from None
        if any(lease.device != origin_device for lease in parsed):
            raise Rejected("malformed", "a lease's device must be its origin")
        state = OriginState(origin, origin_device, seq, frame, checked, parsed, held_ms=held)
        self.origins[origin] = state
        self._spawn(self._relay(frame, conn), "live-relay")
        self.on_state(state)

    # -- clock offsets (§9.4) ------------------------------------------------------------------
    async def _ask_clock(self, conn: Any) -> None:
        n = secrets.randbits(63)
        if len(self._clock_asked) > 1024:
            self._clock_asked.clear()
        self._clock_asked[n] = (conn.peer_key, mono_ns(), now_ns())
        try:
            await conn.send({"t": "clock", "n": n})
        except Exception as exc:
            self._clock_asked.pop(n, None)
            log.debug("clock query to %s failed: %s", conn.peer_device_id, exc)

    async def _on_clock(self, conn: Any, frame: dict[str, Any]) -> None:
        n, at = frame.get("n"), frame.get("at")
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < 2**63:
            raise Rejected("malformed", "a clock frame carries n, an integer")
        if at is None:  # a question: answer with our wall clock at once
            await conn.send({"t": "clock", "n": n, "at": now_ns()})
            return
        asked = self._clock_asked.pop(n, None)
        if asked is None or asked[0] != conn.peer_key:
            return  # not ours, or late: ignore
        if isinstance(at, bool) or not isinstance(at, int) or not 0 < at < 2**63:
            raise Rejected("malformed", "a clock answer carries at, ns since the epoch")
        _, sent_mono, sent_wall = asked
        rtt = mono_ns() - sent_mono
        offset = at - (sent_wall + rtt // 2)
        samples = self._clock_samples.setdefault(conn.peer_key, [])
        samples.append((rtt, offset))
        del samples[:-SKEW_SAMPLES]
        self._warn_skew(conn.peer_key, conn.peer_device_id)

    def clock_offsets(self) -> dict[str, float]:
        """Estimated clock offset (s, peer minus us) of each connected peer (§9.4)."""
        out = {}
        for key, samples in self._clock_samples.items():
            if samples and key in self.peers.connections:
                out[device_id(key)] = min(samples)[1] / NS
        return out

    def skewed_peers(self) -> dict[str, float]:
        """Connected peers whose clock is off by more than 5 s (§9.5)."""
        return {d: o for d, o in self.clock_offsets().items() if abs(o) * NS > SKEW_LIMIT_NS}

    def outlier(self) -> bool:
        """Is this node's own clock the odd one out (§9.5)? Only a majority of at least two
        connected peers, agreeing on the direction, can say so."""
        return own_clock_is_outlier(list(self.clock_offsets().values()))

    def _warn_skew(self, key: bytes, device: str) -> None:
        offset = self.clock_offsets().get(device)
        if offset is None or abs(offset) * NS <= SKEW_LIMIT_NS:
            return
        if time.monotonic() - self._skew_warned.get(key, -1e9) > 60:
            self._skew_warned[key] = time.monotonic()
            log.warning(
                "the clock of %s differs from ours by about %.1f s (estimated from round "
                "trips); which of two crossed leases was first is only fair when clocks "
                "roughly agree (SPEC-004 §9.4)", device, offset,
            )

    # -- messages (§14) --------------------------------------------------------------------------
    async def send_message(self, body: dict[str, Any]) -> None:
        raw = msgpack.packb({"v": 1, "origin": self.key.public_key, **body}, use_bin_type=True)
        self._remember(body["id"])
        await self.peers.broadcast({"t": "msg", "body": raw, "sig": self._sign(MSG_DOMAIN, raw)})

    def _remember(self, msg_id: str) -> bool:
        if msg_id in self._seen_messages:
            return False
        self._seen_messages[msg_id] = None
        while len(self._seen_messages) > _SEEN_MESSAGES:
            self._seen_messages.popitem(last=False)
        return True

    async def _on_msg(self, conn: Any, frame: dict[str, Any]) -> None:
        data, origin = self._check_origin(frame, MSG_DOMAIN)
        if origin == self.key.public_key or not self._member(origin):
            return
        try:
            msg = {
                "id": _s(data, "id", 32),
                "from": _s(data, "from", 26),
                "from_agent": _s(data, "from_agent", 16),
                "from_device": device_id(origin),
                "from_device_name": self._roster_name(origin),
                "to": _s(data, "to", 26),
                "text": _s(data, "text", 2000),
                "at": _s(data, "at", 40),
            }
            _s(data, "from_device_name", 200)  # still checked: a peer's frame stays valid
            parse_iso(msg["at"])
        except ValueError as exc:
            raise Rejected("malformed", f"message: {exc}") from None
        if not _MSG_ID.fullmatch(msg["id"]) or not self._remember(msg["id"]):
            return
        self._spawn(self._relay(frame, conn), "msg-relay")
        self.on_message(msg)
