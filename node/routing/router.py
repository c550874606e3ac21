"""Which host answers: this node, the best live peer, or a remote provider (SPEC-006 §6).

``plan`` is pure and fast: it resolves ``model`` (a name, ``cortex/<kind>`` or ``auto`` through
the frontal lobe), lists candidates in order and says why any were left out. ``open_stream`` and
``complete`` then try the candidates in that order: a candidate that fails before its first
chunk is abandoned for the next one, and the failure puts the peer (or the peer's cortex) into
cooldown. Once a first chunk is out, a failure ends the answer instead of repeating it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .backend import BackendError, Event, LocalCortices
from .config import CHAT_KINDS, DEFAULT_EMBEDDING, EMBEDDING, KINDS, RoutingSettings
from .embedding_shapes import checked_packed
from .errors import (
    BLAME_CORTEX,
    BLAME_NONE,
    BLAME_PEER,
    HOST_CODES,
    AnswerLimit,
    AttemptFailed,
    BadUpstreamAnswer,
    BadUpstreamRequest,
    ContextTooLarge,
    NoRoute,
    RouteTimeout,
    UnknownCortex,
    UnsupportedInput,
    WrongKind,
)
from .frontal_lobe import Decision, FrontalLobe
from .registry import Advertised, Host, Registry
from .schemas import RESERVED_BODY_KEYS
from .shapes import estimate_prompt_tokens, needed_capabilities

if TYPE_CHECKING:
    from ..mesh.peers import PeerManager
    from .protocol import RoutingProtocol

log = logging.getLogger(__name__)

CHUNK_IDLE_LIMIT = 60.0  # SPEC-003 §7.2: a stream never sits silent longer
LOAD_WEIGHT_MS = 25.0
UNKNOWN_RTT_MS = 10.0
MAX_COOLDOWNS = 4096
RETRY_SOON_S = 10.0  # SPEC-006 §10.4: beyond this a client is told not to retry


class Cooldowns:
    """Peers, or one peer's cortex, left out of every choice for a while (§6.3)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._until: dict[tuple[bytes, str | None], tuple[float, str]] = {}

    def fail(self, key: bytes, cortex: str | None, why: str) -> None:
        if len(self._until) >= MAX_COOLDOWNS:
            self._prune()
            if len(self._until) >= MAX_COOLDOWNS:
                self._until.pop(next(iter(self._until)))
        self._until[(key, cortex)] = (self._clock() + self.seconds, why[:200])

    def left(self, key: bytes, cortex: str) -> float | None:
        """Seconds until (key, cortex) may be chosen again, or None if it is not cooling down."""
        now = self._clock()
        ends = [e[0] for k in ((key, None), (key, cortex))
                if (e := self._until.get(k)) is not None and e[0] > now]
        return max(ends) - now if ends else None

    def clear_peer(self, key: bytes) -> int:
        """Forget every cooldown of a peer whose connection is back (§6.3); returns how many."""
        gone = [k for k in self._until if k[0] == key]
        for k in gone:
            del self._until[k]
        return len(gone)

    def blocked(self, key: bytes, cortex: str) -> str | None:
        """Why (key, cortex) is cooling down, or None."""
        now = self._clock()
        for k in ((key, None), (key, cortex)):
            entry = self._until.get(k)
            if entry is not None:
                if entry[0] > now:
                    return f"cooling down for {entry[0] - now:.0f} s after: {entry[1]}"
                del self._until[k]
        return None

    def _prune(self) -> None:
        now = self._clock()
        self._until = {k: v for k, v in self._until.items() if v[0] > now}


@dataclass(slots=True)
class Candidate:
    host: Host
    cortex: Advertised
    score: float

    @property
    def where(self) -> str:
        return self.host.device_id


@dataclass
class Plan:
    """A resolved request: what was asked, what may answer, and what was left out and why."""

    model: str
    body: dict[str, Any]
    stream: bool
    candidates: list[Candidate]
    reasons: list[dict[str, str]] = field(default_factory=list)
    decision: Decision | None = None
    decision_note: str = ""
    retry_after: float | None = None  # when a retry could succeed (SPEC-006 §10.4)
    op: str = "chat"  # or "embed" (SPEC-006 §7.2, §13)
    n_inputs: int = 0  # embeddings: how many vectors the answer must hold

    def retry_in(self, seconds: float) -> None:
        self.retry_after = seconds if self.retry_after is None else min(self.retry_after, seconds)

    @property
    def decision_header(self) -> str | None:
        if self.decision is None:
            return None
        text = f"{self.decision.kind}; {self.decision.rule}"
        return f"{text}; {self.decision_note}" if self.decision_note else text


def chunk_size(chunk: Any) -> int:
    """Bytes a chunk takes as JSON (what a client receives, give or take the SSE framing)."""
    try:
        return len(json.dumps(chunk, separators=(",", ":"), ensure_ascii=False).encode())
    except (TypeError, ValueError):
        return 0


class Opened:
    """A streaming answer whose first chunk is in hand; iterate for the rest.

    Besides the idle limit, the whole answer is bounded (SPEC-006 §6.6): at most
    ``max_answer_chunks`` chunks, ``max_answer_bytes`` bytes and ``max_answer_seconds`` from
    the request, after which it fails as ``answer_limit`` and the host is told to stop.
    """

    def __init__(
        self, router: Router, candidate: Candidate, first: Event, events: AsyncIterator[Event],
        started: float | None = None,
    ) -> None:
        self.router, self.candidate, self.first = router, candidate, first
        self._events = events
        self._closed = False
        settings = router.settings
        self._deadline = (time.monotonic() if started is None else started) + \
            settings.max_answer_seconds
        self._chunks = 1
        self._bytes = chunk_size(first[1]) if first[0] == "chunk" else 0
        self._check_bounds()

    def __aiter__(self) -> Opened:
        return self

    def _limit(self, what: str) -> AttemptFailed:
        exc = AttemptFailed("answer_limit", f"the answer went over {what}", BLAME_CORTEX)
        log.warning("cortex %s on %s: answer cut at %s", self.candidate.cortex.name,
                    self.candidate.where, what)
        self.router.note_failure(self.candidate, exc)
        return exc

    def _check_bounds(self) -> None:
        settings = self.router.settings
        if self._chunks > settings.max_answer_chunks:
            raise self._limit(f"{settings.max_answer_chunks} chunks (max_answer_chunks)")
        if self._bytes > settings.max_answer_bytes:
            raise self._limit(f"{settings.max_answer_bytes} bytes (max_answer_bytes)")

    async def __anext__(self) -> Event:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise self._limit(f"{self.router.settings.max_answer_seconds:g} s "
                              "(max_answer_seconds)")
        idle = left >= CHUNK_IDLE_LIMIT
        try:
            async with asyncio.timeout(min(CHUNK_IDLE_LIMIT, left)):
                event = await anext(self._events)
        except TimeoutError:
            if not idle:
                raise self._limit(f"{self.router.settings.max_answer_seconds:g} s "
                                  "(max_answer_seconds)") from None
            exc = AttemptFailed("timeout", f"no chunk for {CHUNK_IDLE_LIMIT:g} s",
                                BLAME_PEER if not self.candidate.host.local else BLAME_CORTEX)
            self.router.note_failure(self.candidate, exc)
            raise exc from None
        except AttemptFailed as exc:
            self.router.note_failure(self.candidate, exc)
            raise
        if event[0] == "chunk":
            self._chunks += 1
            self._bytes += chunk_size(event[1])
            self._check_bounds()
        return event

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self.router._release(self.candidate, self._events)


class Router:
    """Chooses and calls hosts for chat completion requests."""

    def __init__(
        self,
        registry: Registry,
        local: LocalCortices,
        settings: RoutingSettings,
        *,
        protocol: RoutingProtocol | None = None,
        peers: PeerManager | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.local = local
        self.settings = settings
        self.protocol = protocol
        self.peers = peers
        self.lobe = FrontalLobe(settings)
        self.cooldowns = Cooldowns(settings.cooldown_seconds, clock)
        self.counts = {"requests": 0, "fallbacks": 0, "failed": 0}

    # -- planning (pure, fast) ----------------------------------------------------------------
    def plan(self, body: dict[str, Any]) -> Plan:
        model = body["model"]
        stream = bool(body.get("stream", False))
        call_body = {k: v for k, v in body.items() if k not in RESERVED_BODY_KEYS}
        needs = needed_capabilities(body)
        estimate = estimate_prompt_tokens(body)
        plan = Plan(model, call_body, stream, [])
        self._refuse_embedding(model)
        if model == "auto":
            plan.decision = self.lobe.decide(body)
            self._plan_kind(plan, plan.decision.kind, needs, estimate, fallback=True)
        elif model.startswith("cortex/"):
            kind = model.removeprefix("cortex/")
            if kind not in KINDS:
                raise UnknownCortex(f"{kind!r} is not a cortex kind", available=self.available())
            self._plan_kind(plan, kind, needs, estimate, fallback=False)
        else:
            self._plan_name(plan, model, needs, estimate)
        return plan

    def _kind_of(self, name: str) -> str | None:
        offers = [c.kind for _, c in self.registry.offers() if c.name == name]
        return offers[0] if offers else self.registry.known_kinds.get(name)

    def _refuse_embedding(self, model: str) -> None:
        """SPEC-006 §13.2: a chat request never reaches an embedding cortex."""
        if model in (f"cortex/{EMBEDDING}", DEFAULT_EMBEDDING) or self._kind_of(model) == EMBEDDING:
            raise WrongKind(f"{model} is an embedding model; send it to /v1/embeddings")

    def plan_embedding(self, model: str, inputs: list[str]) -> Plan:
        """Candidates for an embeddings request (SPEC-006 §13.3): ``cortex/embedding`` or an
        embedding cortex's name; the local default is the caller's (it is on every node)."""
        longest = max((len(t.encode()) for t in inputs), default=0)
        plan = Plan(model, {"input": list(inputs)}, False, [], op="embed",
                    n_inputs=len(inputs))
        estimate = longest // 4 + 4
        text = frozenset({"text"})
        if model == f"cortex/{EMBEDDING}":
            self._plan_kind(plan, EMBEDDING, text, estimate, fallback=False)
            return plan
        if model == "auto" or model.startswith("cortex/"):
            raise WrongKind(f"{model} is not an embedding model; use cortex/{EMBEDDING}, "
                            "an embedding cortex's name, or wordllama")
        kind = self._kind_of(model)
        if kind is not None and kind != EMBEDDING:
            raise WrongKind(f"{model} is a {kind} cortex, not an embedding model")
        self._plan_name(plan, model, text, estimate)
        return plan

    def name_conflict(self, host: Host, cortex: Advertised) -> bool:
        """SPEC-006 §6.5: a peer that claims a name this node defines, for another model."""
        mine = self.registry.me.cortices.get(cortex.name)
        return (not host.local and mine is not None
                and (cortex.model, cortex.kind) != (mine.model, mine.kind))

    def _plan_name(self, plan: Plan, name: str, needs: frozenset[str], estimate: int) -> None:
        offers = [(h, c) for h, c in self.registry.offers() if c.name == name]
        mine = self.registry.me.cortices.get(name)
        if mine is not None:
            # This node defines the name: its own cortex comes first whatever its score, and a
            # peer's namesake for another model is never sent the prompt.
            for h, c in offers:
                if self.name_conflict(h, c):
                    plan.reasons.append({
                        "host": h.device_id, "cortex": name,
                        "reason": f"name conflict: this node defines {name} itself "
                                  f"({mine.model}); the peer's is {c.model}"})
            offers = [(h, c) for h, c in offers if not self.name_conflict(h, c)]
        kind = offers[0][1].kind if offers else self.registry.known_kinds.get(name) or next(
            (c.kind for _, c in self.registry.offline_offers() if c.name == name), None)
        if not offers and kind is None:
            raise UnknownCortex(f"no cortex named {name!r} is reachable in the mesh",
                                available=self.available())
        if offers and not any(needs <= c.capabilities for _, c in offers):
            missing = sorted(needs - offers[0][1].capabilities)
            raise UnsupportedInput(f"cortex {name} does not take {' or '.join(missing)} input")
        if not offers:
            away = [h for h, c in self.registry.offline_offers() if c.name == name]
            plan.reasons.append({"host": "-", "cortex": name, "reason": (
                "no connected node hosts it now" + ("; offline: " + ", ".join(
                    f"{h.name or h.device_id[:7]} (last seen {utc_iso(h.last_seen)})"
                    for h in away[:5]) if away else ""))})
        self._add(plan, offers, needs, estimate, own_first=mine is not None)
        # embeddings never fall back to another model: its vectors would not compare (§13.3)
        if self.settings.remote_fallback and kind is not None and plan.op != "embed":
            extra = [(h, c) for h, c in self.registry.offers()
                     if c.remote and c.kind == kind and c.name != name]
            self._add(plan, extra, needs, estimate)
        self._raise_if_too_large(plan, offers, estimate)

    def _plan_kind(
        self, plan: Plan, kind: str, needs: frozenset[str], estimate: int, *, fallback: bool
    ) -> None:
        offers = [(h, c) for h, c in self.registry.offers() if c.kind == kind]
        if not offers and fallback:
            for alt, note in ((self.settings.default_kind, "default kind"), (None, "any cortex")):
                offers = [(h, c) for h, c in self.registry.offers()
                          if (alt is None or c.kind == alt) and needs <= c.capabilities
                          and c.kind in CHAT_KINDS]
                if offers:
                    plan.decision_note = f"no {kind} cortex reachable, used {note}"
                    break
        if not offers:
            plan.reasons.append({"host": "-", "cortex": f"cortex/{kind}",
                                 "reason": f"no reachable cortex of kind {kind}"})
        self._add(plan, offers, needs, estimate)
        self._raise_if_too_large(plan, offers, estimate)

    def _add(
        self, plan: Plan, offers: list[tuple[Host, Advertised]], needs: frozenset[str],
        estimate: int, *, own_first: bool = False,
    ) -> None:
        found = []
        for host, cortex in offers:
            why = self._excluded(host, cortex, needs, estimate)
            if why is not None and (left := self.cooldowns.left(host.key, cortex.name)):
                plan.retry_in(left)
            if why is not None:
                plan.reasons.append({"host": host.device_id, "cortex": cortex.name, "reason": why})
                continue
            if host.local:
                score = -1.0
            else:
                rtt = host.rtt_ms if host.rtt_ms is not None else UNKNOWN_RTT_MS
                score = rtt + LOAD_WEIGHT_MS * host.load(cortex)
            if host.local and own_first:  # a name this node defines (§6.5): here first
                score = -1e9
            found.append(Candidate(host, cortex, score + (1e6 if cortex.remote else 0.0)))
        found.sort(key=lambda c: c.score)
        plan.candidates.extend(found)

    def _excluded(
        self, host: Host, cortex: Advertised, needs: frozenset[str], estimate: int
    ) -> str | None:
        if host.local:
            health = self.local.health(cortex.name)
            if health is not None:
                return f"unhealthy: {health}"
        elif not cortex.healthy:
            return "unhealthy (its host says so)"
        if not needs <= cortex.capabilities:
            return f"does not take {' or '.join(sorted(needs - cortex.capabilities))} input"
        if estimate > cortex.context_window:
            return (f"context window: about {estimate} prompt tokens, "
                    f"window {cortex.context_window}")
        if not host.local and (self.peers is None or host.key not in self.peers.connections):
            return "not connected"
        return self.cooldowns.blocked(host.key, cortex.name)

    def _raise_if_too_large(
        self, plan: Plan, offers: list[tuple[Host, Advertised]], estimate: int
    ) -> None:
        if plan.candidates or not offers:
            return
        if all(estimate > c.context_window for _, c in offers):
            window = max(c.context_window for _, c in offers)
            raise ContextTooLarge(
                f"the prompt is about {estimate} tokens; the largest context window "
                f"available is {window}",
                estimated_tokens=estimate, context_window=window,
            )

    def available(self) -> list[str]:
        names = self.registry.reachable_names()
        return [*names, "auto", *(f"cortex/{k}" for k in self.registry.reachable_kinds())]

    # -- calling ------------------------------------------------------------------------------
    async def open_stream(self, plan: Plan) -> Opened:
        """Try candidates until one yields a first chunk (SPEC-006 §6.2)."""
        self.counts["requests"] += 1
        failures: list[AttemptFailed] = []
        started = time.monotonic()
        for n, candidate in enumerate(plan.candidates):
            events = None
            limit = self.settings.first_chunk_timeout
            try:
                self._check_still_ok(candidate)
                limit = self._first_chunk_limit(candidate, started)
                events = await self._attempt(candidate, plan)
                async with asyncio.timeout(limit):
                    first = await anext(events)
            except (AttemptFailed, TimeoutError, StopAsyncIteration) as raw:
                exc = self._as_failure(candidate, raw, limit)
                if events is not None:
                    await self._release(candidate, events)
                if exc.code == "answer_limit":  # the host cut its model's answer (§8.4)
                    raise self._answer_cut(candidate, exc) from None
                self._record(plan, candidate, exc, failures)
                continue
            except BaseException:  # the client left (cancelled): stop the call, free its slot
                if events is not None:
                    await self._release(candidate, events)
                raise
            if n:
                self.counts["fallbacks"] += 1
            try:
                return Opened(self, candidate, first, events, started)
            except AttemptFailed as exc:  # the first chunk alone is over a bound
                await self._release(candidate, events)
                raise AnswerLimit(exc.detail) from None
        raise self._no_route(plan, failures)

    async def complete(self, plan: Plan) -> tuple[Candidate, dict[str, Any]]:
        """The whole answer of a non-streaming request, within ``request_timeout``."""
        self.counts["requests"] += 1
        failures: list[AttemptFailed] = []
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                for n, candidate in enumerate(plan.candidates):
                    events = None
                    try:
                        self._check_still_ok(candidate)
                        events = await self._attempt(candidate, plan)
                        kind, answer = await anext(events)
                        if kind != "end" or answer is None:
                            raise AttemptFailed("garbage", "no answer", BLAME_PEER)
                        size = chunk_size(answer)
                        if size > self.settings.max_answer_bytes:
                            self.counts["failed"] += 1
                            log.warning("cortex %s on %s: a %d-byte answer is over "
                                        "max_answer_bytes", candidate.cortex.name,
                                        candidate.where, size)
                            raise AnswerLimit(
                                f"the answer of {candidate.cortex.name} is {size} bytes, over "
                                f"max_answer_bytes ({self.settings.max_answer_bytes})",
                                max_answer_bytes=self.settings.max_answer_bytes)
                    except (AttemptFailed, StopAsyncIteration) as raw:
                        exc = self._as_failure(candidate, raw)
                        if exc.code == "answer_limit":  # the host cut its model's answer (§8.4)
                            raise self._answer_cut(candidate, exc) from None
                        self._record(plan, candidate, exc, failures)
                        continue
                    finally:
                        if events is not None:
                            await self._release(candidate, events)
                    if n:
                        self.counts["fallbacks"] += 1
                    return candidate, answer
        except TimeoutError:
            self.counts["failed"] += 1
            raise RouteTimeout(
                f"no answer within {self.settings.request_timeout:g} s",
                reasons=plan.reasons,
            ) from None
        raise self._no_route(plan, failures)

    def _first_chunk_limit(self, candidate: Candidate, started: float) -> float:
        """Seconds a stream's attempt may take to its first chunk (SPEC-006 §6.4).

        This node's cortex: ``first_chunk_timeout``. A peer's ``wait`` messages say its model
        is still working, so it gets longer, as a whole non-streaming answer does
        (``request_timeout``), but never past the answer's ``max_answer_seconds``: ``wait``
        proves a peer alive, not that an answer will come, and a rogue peer sending it forever
        must not hold the request (and its task) forever; past the limit the next candidate
        is tried."""
        if candidate.host.local:
            return self.settings.first_chunk_timeout
        left = started + self.settings.max_answer_seconds - time.monotonic()
        return max(0.0, min(self.settings.request_timeout, left))

    def _answer_cut(self, candidate: Candidate, exc: AttemptFailed) -> AnswerLimit:
        """A host stopped reading its model's answer at ``max_answer_bytes`` (SPEC-006 §6.6,
        §8.4): the request fails like an answer over the bound, without trying another host
        (it asked for the answer this one's model gives), and the (host, cortex) cools down."""
        self.counts["failed"] += 1
        self.note_failure(candidate, exc)
        return AnswerLimit(f"the answer of {candidate.cortex.name} was cut: {exc.detail}",
                           max_answer_bytes=self.settings.max_answer_bytes)

    def _check_still_ok(self, candidate: Candidate) -> None:
        # Another request may have put this candidate into cooldown since the plan was made.
        why = self.cooldowns.blocked(candidate.host.key, candidate.cortex.name)
        if why is not None:
            raise AttemptFailed("cooldown", why, BLAME_NONE)

    async def _attempt(self, candidate: Candidate, plan: Plan) -> AsyncIterator[Event]:
        candidate.host.ours_in_flight += 1
        try:
            if candidate.host.local:
                return self._local_events(candidate.cortex.name, plan.body, plan.stream, plan.op)
            conn = self.peers.connections.get(candidate.host.key) if self.peers else None
            if conn is None or self.protocol is None:
                raise AttemptFailed("peer_lost", "the peer is no longer connected", BLAME_PEER)
            if plan.op == "embed":
                return await self.protocol.open(
                    conn, candidate.cortex.name, plan.body, False,
                    self.settings.first_chunk_timeout, op="embed",
                    clean_end=checked_packed(plan.n_inputs, candidate.cortex.dimensions or 0))
            return await self.protocol.open(conn, candidate.cortex.name, plan.body, plan.stream,
                                            self.settings.first_chunk_timeout)
        except BaseException:
            candidate.host.ours_in_flight -= 1
            raise

    async def _local_events(
        self, name: str, body: dict[str, Any], stream: bool, op: str = "chat"
    ) -> AsyncIterator[Event]:
        try:
            async with contextlib.aclosing(self.local.run(name, body, stream, op)) as events:
                async for event in events:
                    yield event
        except BackendError as exc:
            raise AttemptFailed(exc.code, exc.detail, HOST_CODES.get(exc.code, BLAME_CORTEX)) \
                from None

    async def _release(self, candidate: Candidate, events: AsyncIterator[Event]) -> None:
        candidate.host.ours_in_flight = max(0, candidate.host.ours_in_flight - 1)
        closer = getattr(events, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()

    def _as_failure(self, candidate: Candidate, raw: BaseException,
                    limit: float | None = None) -> AttemptFailed:
        if isinstance(raw, AttemptFailed):
            return raw
        blame = BLAME_CORTEX if candidate.host.local else BLAME_PEER
        if isinstance(raw, TimeoutError):
            limit = self.settings.first_chunk_timeout if limit is None else limit
            return AttemptFailed("timeout", f"no first chunk within {limit:g} s", blame)
        return AttemptFailed("garbage", "the answer ended before it began", blame)

    def _record(
        self, plan: Plan, candidate: Candidate, exc: AttemptFailed, failures: list[AttemptFailed]
    ) -> None:
        failures.append(exc)
        plan.reasons.append({"host": candidate.where, "cortex": candidate.cortex.name,
                             "reason": f"{exc.code}: {exc.detail}"})
        if exc.code == "busy":
            plan.retry_in(1.0)
        elif exc.code == "cooldown" and (
                left := self.cooldowns.left(candidate.host.key, candidate.cortex.name)):
            plan.retry_in(left)
        log.info("cortex %s on %s failed before its first chunk (%s); trying the next host",
                 candidate.cortex.name, candidate.where, exc.code)
        self.note_failure(candidate, exc)

    def note_failure(self, candidate: Candidate, exc: AttemptFailed) -> None:
        """Cooldown by blame (§6.3); the host itself tracks its local cortices' health."""
        if candidate.host.local:
            return
        if exc.blame == BLAME_PEER:
            self.cooldowns.fail(candidate.host.key, None, f"{exc.code}: {exc.detail}")
            log.warning("peer %s is in cooldown for %gs: %s", candidate.where,
                        self.cooldowns.seconds, exc.code)
        elif exc.blame == BLAME_CORTEX:
            self.cooldowns.fail(candidate.host.key, candidate.cortex.name,
                                f"{exc.code}: {exc.detail}")

    def peer_back(self, key: bytes) -> None:
        """A peer's connection is established again: its cooldowns end now (§6.3)."""
        if self.cooldowns.clear_peer(key):
            log.info("peer %s is back; its cooldowns are cleared", key.hex()[:12])

    def note_peer_fault(self, key: bytes, why: str) -> None:
        """A peer sent something out of shape outside any one stream (an advertisement, a frame)."""
        self.cooldowns.fail(key, None, why)

    def _no_route(self, plan: Plan, failures: list[AttemptFailed]) -> Exception:
        self.counts["failed"] += 1
        if plan.op == "embed" and any(f.code in ("garbage", "bad_answer") for f in failures):
            bad = next(f for f in failures if f.code in ("garbage", "bad_answer"))
            return BadUpstreamAnswer(f"no valid embeddings answer: {bad.detail}",
                                     reasons=plan.reasons[-50:])
        if failures and all(f.code == "context_window" for f in failures):
            return ContextTooLarge(failures[0].detail, reasons=plan.reasons)
        if failures and all(f.code == "bad_request" for f in failures):
            return BadUpstreamRequest(failures[0].detail, reasons=plan.reasons)
        soon = plan.retry_after is not None and plan.retry_after <= RETRY_SOON_S
        if soon:
            advice = f"; a retry in {math.ceil(plan.retry_after or 1)} s may succeed"
        else:
            advice = "; retrying now will not help: " + "; ".join(
                r["reason"] for r in plan.reasons[-3:])
        return NoRoute(
            f"no host could answer {plan.model!r}{advice}", retry=soon,
            retry_after=max(1, math.ceil(plan.retry_after or 1)) if soon else None,
            reasons=plan.reasons[-50:],
        )

    # -- listing ------------------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        """``/v1/models`` entries: each reachable cortex once, with where it runs (§4.7)."""
        by_name: dict[str, dict[str, Any]] = {}

        def entry_for(cortex: Advertised) -> dict[str, Any]:
            entry = by_name.get(cortex.name)
            if entry is None:
                entry = by_name[cortex.name] = {
                    "id": cortex.name, "object": "model", "created": 0, "owned_by": "maia-node",
                    "maia": {"kind": cortex.kind, "model": cortex.model,
                             "capabilities": sorted(cortex.capabilities),
                             "context_window": cortex.context_window,
                             "remote": cortex.remote, "available": False, "hosts": []}
                    | ({"dimensions": cortex.dimensions} if cortex.dimensions else {}),
                }
            return entry

        for host, cortex in self.registry.offers():
            entry = entry_for(cortex)
            entry["maia"]["available"] = True
            healthy = (self.local.health(cortex.name) is None) if host.local else cortex.healthy
            conflict = self.name_conflict(host, cortex)
            if conflict:
                entry["maia"].setdefault("conflicts", []).append({
                    "device_id": host.device_id, "name": host.name, "kind": cortex.kind,
                    "model": cortex.model, "remote": cortex.remote})
            entry["maia"]["hosts"].append({
                "device_id": host.device_id, "name": host.name, "local": host.local,
                "healthy": healthy,
                "in_flight": self.local.in_flight(cortex.name) if host.local else cortex.in_flight,
                "max_concurrency": cortex.max_concurrency,
                "rtt_ms": None if host.rtt_ms is None else round(host.rtt_ms, 2),
                "cooling_down": self.cooldowns.blocked(host.key, cortex.name),
                "name_conflict": conflict, "online": True, "last_seen": None,
                "approved": True,
            })
        for host, cortex in self.registry.pending():  # SPEC-006 006.6.7: shown, never used
            entry_for(cortex)["maia"]["hosts"].append({
                "device_id": host.device_id, "name": host.name, "local": False,
                "healthy": cortex.healthy, "in_flight": cortex.in_flight,
                "max_concurrency": cortex.max_concurrency,
                "rtt_ms": None if host.rtt_ms is None else round(host.rtt_ms, 2),
                "cooling_down": None, "name_conflict": self.name_conflict(host, cortex),
                "online": True, "last_seen": None, "approved": False,
            })
        for host, cortex in self.registry.offline_offers():  # SPEC-006 §3.3, §4.7
            entry_for(cortex)["maia"]["hosts"].append({
                "device_id": host.device_id, "name": host.name, "local": False,
                "healthy": False, "in_flight": 0, "max_concurrency": cortex.max_concurrency,
                "rtt_ms": None, "cooling_down": None, "name_conflict": False,
                "online": False, "last_seen": utc_iso(host.last_seen),
                "approved": self.registry.approved(host, cortex),
            })
        out = [by_name[n] for n in sorted(by_name)]
        out.append({"id": "auto", "object": "model", "created": 0, "owned_by": "maia-node",
                    "maia": {"alias": "the frontal lobe chooses"}})
        for kind in self.registry.reachable_kinds():
            out.append({"id": f"cortex/{kind}", "object": "model", "created": 0,
                        "owned_by": "maia-node", "maia": {"alias": f"any {kind} cortex"}})
        return out


def utc_iso(wall: float | None) -> str | None:
    """RFC 3339 UTC, to the second, of a wall-clock time (when an offline peer was last seen)."""
    if wall is None:
        return None
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
