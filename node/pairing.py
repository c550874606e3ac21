"""Pairing: a new device joins the mesh only when its owner compares a short string on both.

The member opens a window (``maia pair accept``): a one-time code, valid a few minutes. The new
device (``maia pair``) connects to the member's peer listener with the device-key handshake in
pairing mode, presents the code, and both sides derive a short authentication string (SAS)
from BOTH device keys and fresh nonces (commit, then reveal, so nobody in the middle can grind
a match). A third device relaying the connection sees different keys on each leg, so the two
screens show different numbers and the owner refuses. Only on the owner's "yes" does the member
sign the roster entry (SPEC-005 §5) and hand the new device its invitation.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from crdt.identity import enrol_device
from crdt.keys import device_id

from .transport import HandshakeError, TransportError, accept

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger(__name__)

PAIRING_MESH = b"\x00" * 32  # the handshake's mesh field while pairing: no mesh yet
DEFAULT_TTL = 300.0
MAX_TTL = 1800.0
MAX_ATTEMPTS = 5
CODE_CHARS = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read aloud, typed by hand


def new_code() -> str:
    raw = "".join(CODE_CHARS[b % len(CODE_CHARS)] for b in os.urandom(8))
    return f"{raw[:4]}-{raw[4:]}"


def normalize_code(text: str) -> str:
    cleaned = "".join(ch for ch in str(text).upper() if ch.isalnum())
    return f"{cleaned[:4]}-{cleaned[4:]}"


def commitment(nonce: bytes) -> bytes:
    return hashlib.blake2b(b"maia-pair-commit-v1" + nonce, digest_size=32).digest()


def short_authentication_string(
    new_key: bytes, member_key: bytes, new_nonce: bytes, member_nonce: bytes
) -> str:
    """Six digits both screens show; equal only if both sides saw the same two keys."""
    digest = hashlib.blake2b(
        b"maia-sas-v1" + new_key + member_key + new_nonce + member_nonce, digest_size=8
    ).digest()
    n = int.from_bytes(digest, "big") % 1_000_000
    return f"{n // 1000:03d} {n % 1000:03d}"


class PairingError(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass
class PairingWindow:
    """One open invitation to pair: single use, expiring, with a bounded number of tries."""

    code: str
    expires_at: float
    state: str = "open"  # open -> confirm -> accepted | refused | expired | failed
    attempts: int = 0
    candidate: str = ""
    candidate_name: str = ""
    sas: str = ""
    decided: asyncio.Event = field(default_factory=asyncio.Event)
    accepted: bool = False

    def as_dict(self) -> dict[str, Any]:
        remaining = max(0.0, self.expires_at - time.time())
        state = "expired" if self.state == "open" and remaining <= 0 else self.state
        return {
            "state": state,
            "expires_in": round(remaining, 1),
            "candidate": self.candidate or None,
            "candidate_name": self.candidate_name or None,
            "sas": self.sas or None,
            "attempts": self.attempts,
        }


class Pairing:
    """The member side: windows, the /v1/pair socket on the peer listener, confirmation."""

    name = "pairing"

    def __init__(self) -> None:
        self.node: Node | None = None
        self.window: PairingWindow | None = None

    # -- Feature ---------------------------------------------------------------------------------
    def setup(self, node: Node) -> None:
        self.node = node

    def route_tables(self) -> list:
        from .api.routes_pairing import pairing_routes

        return [pairing_routes]

    def configure_app(self, app: web.Application) -> None:
        from .api.routes_pairing import PAIRING_KEY

        app[PAIRING_KEY] = self

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        if self.window is not None and not self.window.decided.is_set():
            self.window.decided.set()

    def status(self) -> dict[str, Any]:
        return {"window": self.window.as_dict() if self.window else None}

    # -- the owner's side (local API) ------------------------------------------------------------
    async def open(self, ttl: float = DEFAULT_TTL) -> dict[str, Any]:
        ttl = max(1.0, min(float(ttl), MAX_TTL))
        self.window = PairingWindow(new_code(), time.time() + ttl)
        await self._advertise(True)
        log.info("pairing window open for %.0f s", ttl)
        return {"code": self.window.code, **self.window.as_dict()}

    async def decide(self, accept_it: bool) -> dict[str, Any]:
        w = self.window
        if w is None or w.state != "confirm":
            raise PairingError("nothing_to_confirm", "no device is waiting for confirmation")
        w.accepted = accept_it
        w.state = "accepted" if accept_it else "refused"
        w.decided.set()
        await self._advertise(False)
        return w.as_dict()

    async def cancel(self) -> None:
        if self.window is not None:
            self.window.state = "failed" if self.window.state == "open" else self.window.state
            self.window.decided.set()
        await self._advertise(False)

    async def _advertise(self, on: bool) -> None:
        node = self.node
        for feature in node.features if node else []:
            if feature.name == "discovery":
                await feature.set_properties(pairing="1" if on else "0")

    # -- the new device's side arrives on the peer listener ---------------------------------------
    async def handle_socket(self, request: web.Request) -> web.StreamResponse:
        node = self.node
        assert node is not None
        try:
            ws, channel = await accept(request, key=node.key, mesh_id=PAIRING_MESH)
        except HandshakeError as exc:
            return exc.response or web.Response(status=400)
        try:
            async with asyncio.timeout(self._time_left() + 5):
                await self._pair(channel)
        except PairingError as exc:
            log.warning("pairing with %s failed: %s", channel.peer_device_id, exc.detail)
            await _send_quietly(channel, {"t": "pair_error", "code": exc.code,
                                          "detail": exc.detail})
        except (TransportError, TimeoutError) as exc:
            log.info("pairing connection ended: %s", exc)
        finally:
            await channel.close()
        return ws

    def _time_left(self) -> float:
        return max(0.0, self.window.expires_at - time.time()) if self.window else 0.0

    async def _pair(self, channel) -> None:
        node = self.node
        assert node is not None
        hello = await channel.recv()
        w = self.window
        if not isinstance(hello, dict) or hello.get("t") != "pair":
            raise PairingError("malformed", "expected a pairing request")
        if w is None or w.state == "failed":
            raise PairingError("closed", "no pairing window is open on this device")
        if w.state == "expired" or (w.state == "open" and time.time() > w.expires_at):
            w.state = "expired"
            raise PairingError("expired", "the pairing code has expired")
        if w.state != "open":
            raise PairingError("used", "this pairing code was already used")
        w.attempts += 1
        code = normalize_code(str(hello.get("code", "")))
        if not hmac.compare_digest(code.encode(), w.code.encode()):
            if w.attempts >= MAX_ATTEMPTS:
                w.state = "failed"
                await self._advertise(False)
                raise PairingError("closed", "too many wrong codes; the window is closed")
            raise PairingError("wrong_code", "the pairing code is not right")
        commit = hello.get("commit")
        name = str(hello.get("name") or "device")[:64]
        if not isinstance(commit, bytes) or len(commit) != 32:
            raise PairingError("malformed", "the pairing request lacks its commitment")
        if channel.peer_key in node.repo.roster.revoked:
            raise PairingError("revoked", "this device was revoked; it needs a new key")
        w.state = "claimed"  # single use from here on
        member_nonce = os.urandom(32)
        await channel.send({"t": "pair_nonce", "nonce": member_nonce})
        reveal = await channel.recv()
        new_nonce = reveal.get("nonce") if isinstance(reveal, dict) else None
        if not isinstance(new_nonce, bytes) or not hmac.compare_digest(
            commitment(new_nonce), commit
        ):
            w.state = "failed"
            raise PairingError("bad_commitment", "the revealed nonce does not match")
        w.sas = short_authentication_string(
            channel.peer_key, node.key.public_key, new_nonce, member_nonce
        )
        w.candidate, w.candidate_name, w.state = channel.peer_device_id, name, "confirm"
        log.info("pairing: %s (%s) waits for the owner's confirmation", w.candidate, name)
        try:
            async with asyncio.timeout(max(1.0, self._time_left())):
                await w.decided.wait()
        except TimeoutError:
            w.state = "expired"
            raise PairingError("expired", "nobody confirmed in time") from None
        if not w.accepted:
            await channel.send({"t": "pair_refused"})
            return
        invitation = enrol_device(node.repo, channel.peer_key, name)
        log.info("pairing: enrolled %s (%s)", device_id(channel.peer_key), name)
        await channel.send({"t": "pair_welcome", "invitation": invitation})


async def _send_quietly(channel, frame: dict[str, Any]) -> None:
    with contextlib.suppress(TransportError):
        await channel.send(frame)


def create() -> Pairing:
    return Pairing()

