"""Pairing: a new device joins the mesh only when both sides prove the code and both users compare.

The member opens a window (``maia pair accept``): a one-time code, valid a few minutes. The new
device (``maia pair``) connects to the member's peer listener with the device-key handshake in
pairing mode. The code itself never crosses the wire: both sides run SPAKE2 with it as the
password, bound to the two device keys the channel authenticated, and the MEMBER proves first,
so whoever answers the new device learns nothing it could use to guess the code offline. Both
sides then derive a short authentication string (SAS) from both device keys and fresh nonces
(commit, then reveal, so nobody in the middle can grind a match), and BOTH users confirm that
their screens show the same number. Only when the owner said yes AND the new device's user said
yes does the member sign the roster entry (SPEC-005 §5) and hand over the invitation; the new
device stores it only if it is endorsed by the very key it is talking to (SPEC-005 §12.5-§12.7).
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

from crdt import device_id, enrol_device

from ...transport import HandshakeError, TransportError, accept
from ..peers import busy_response

if TYPE_CHECKING:
    from spake2 import SPAKE2_A, SPAKE2_B

    from ...node import Node

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


PAKE_BYTES = 33  # a SPAKE2 message: one side byte and a compressed Ed25519 point


def pake(code: str, *, new_key: bytes, member_key: bytes, member: bool) -> SPAKE2_A | SPAKE2_B:
    """One side of SPAKE2 over the code, bound to both device keys (SPEC-005 §12.5).

    spake2 is imported here, not with the module: it pulls in ``cryptography`` (about 10 MB
    resident), which a node that is not pairing does not need (issue 17)."""
    # only when pairing: see above
    from spake2 import SPAKE2_A, SPAKE2_B

    side = SPAKE2_B if member else SPAKE2_A
    password = b"maia-pair-v2:" + normalize_code(code).encode()
    return side(password, idA=new_key, idB=member_key)


def pake_finish(state: SPAKE2_A | SPAKE2_B, peer_message: object) -> bytes | None:
    """The shared key, or None for a malformed peer message."""
    # only when pairing, like pake()
    from spake2.ed25519_basic import NotOnCurve
    from spake2.spake2 import SPAKEError  # (the same)

    if not isinstance(peer_message, bytes) or len(peer_message) != PAKE_BYTES:
        return None
    try:
        return state.finish(peer_message)
    except (SPAKEError, NotOnCurve, ValueError, TypeError):
        return None


def pairing_transcript(
    new_key: bytes, member_key: bytes, pake_new: bytes, pake_member: bytes, commit: bytes,
    member_nonce: bytes,
) -> bytes:
    return hashlib.blake2b(
        b"maia-pair-transcript-v2" + new_key + member_key + pake_new + pake_member + commit
        + member_nonce, digest_size=32,
    ).digest()


def member_proof(shared: bytes, transcript: bytes) -> bytes:
    """The member's key confirmation: it knows the code (SPEC-005 §12.5)."""
    return hashlib.blake2b(transcript, digest_size=32, key=shared,
                           person=b"maia-pair-member").digest()


def new_device_proof(shared: bytes, transcript: bytes, new_nonce: bytes) -> bytes:
    """The new device's key confirmation, sent only after it checked the member's."""
    return hashlib.blake2b(transcript + new_nonce, digest_size=32, key=shared,
                           person=b"maia-pair-newdev").digest()


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
    # open -> confirm (both proved the code; SAS shown) -> approved (the owner said yes, the
    # new device's user not yet) -> accepted (enrolled) | refused | expired | failed
    state: str = "open"
    attempts: int = 0
    failures: int = 0
    candidate: str = ""
    candidate_name: str = ""
    sas: str = ""
    refused_by: str = ""  # "owner" or "new device"
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
            "refused_by": self.refused_by or None,
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
        if w is not None and w.refused_by == "new device":
            raise PairingError("nothing_to_confirm", "the new device's user refused (the "
                               "numbers differ) or it went away; nothing was signed")
        if w is None or w.state != "confirm":
            raise PairingError("nothing_to_confirm", "no device is waiting for confirmation")
        w.accepted = accept_it
        if accept_it:
            w.state = "approved"  # enrolled only once the new device's user said yes too
        else:
            w.state, w.refused_by = "refused", "owner"
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
        if self.window is None:  # never opened: refused before the upgrade, nothing read
            return web.Response(status=409, text="no pairing window is open on this device")
        slot = node.peers.handshakes.take(request.remote)  # SPEC-005 005.9.10a
        if slot is None:
            return busy_response()
        try:  # held for the whole pairing: a stranger can reach it with the public pairing mesh
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
        finally:
            slot.release()

    def _time_left(self) -> float:
        return max(0.0, self.window.expires_at - time.time()) if self.window else 0.0

    async def _pair(self, channel) -> None:
        """SPEC-005 §12.5-§12.7, member side: prove the code first, check the device's proof,
        show the SAS, and enrol only after both users said yes."""
        node = self.node
        assert node is not None
        hello = await channel.recv()
        w = self.window
        if not isinstance(hello, dict) or hello.get("t") != "pair":
            raise PairingError("malformed", "expected a pairing request")
        self._check_open(w)
        assert w is not None
        commit, pake_new = hello.get("commit"), hello.get("pake")
        name = str(hello.get("name") or "device")[:64]
        if not isinstance(commit, bytes) or len(commit) != 32:
            raise PairingError("malformed", "the pairing request lacks its commitment")
        new_key, member_key = channel.peer_key, node.key.public_key
        state = pake(w.code, new_key=new_key, member_key=member_key, member=True)
        pake_member = state.start()
        shared = pake_finish(state, pake_new)
        if shared is None:
            raise PairingError("malformed", "the pairing request lacks a valid SPAKE2 message")
        w.attempts += 1  # one online guess for whoever is on the other end
        member_nonce = os.urandom(32)
        transcript = pairing_transcript(new_key, member_key, pake_new, pake_member, commit,
                                        member_nonce)
        proved = False
        try:
            await channel.send({"t": "pair_pake", "pake": pake_member, "nonce": member_nonce,
                                "proof": member_proof(shared, transcript)})
            reveal = await channel.recv()
            if isinstance(reveal, dict) and reveal.get("t") == "pair_error":
                raise PairingError("wrong_code", "the new device says the code is not right")
            if not isinstance(reveal, dict) or reveal.get("t") != "pair_reveal":
                raise PairingError("malformed", "expected the new device's proof")
            new_nonce, proof = reveal.get("nonce"), reveal.get("proof")
            if not isinstance(new_nonce, bytes) or not hmac.compare_digest(
                commitment(new_nonce), commit
            ):
                raise PairingError("bad_commitment", "the revealed nonce does not match")
            if not isinstance(proof, bytes) or not hmac.compare_digest(
                proof, new_device_proof(shared, transcript, new_nonce)
            ):
                raise PairingError("wrong_code", "the pairing code is not right")
            proved = True
        finally:
            if not proved:
                await self._failed_attempt(w)
        if new_key in node.repo.roster.revoked:
            raise PairingError("revoked", "this device was revoked; it needs a new key")
        self._check_open(w, claiming=True)  # another attempt may have claimed it meanwhile
        w.sas = short_authentication_string(new_key, member_key, new_nonce, member_nonce)
        w.candidate, w.candidate_name, w.state = channel.peer_device_id, name, "confirm"
        log.info("pairing: %s (%s) proved the code; both users must compare the numbers",
                 w.candidate, name)
        if not await self._both_confirm(channel, w):
            log.info("pairing: %s refused by the %s; nothing was signed", w.candidate,
                     w.refused_by)
            if w.refused_by == "owner":
                await channel.send({"t": "pair_refused"})
            return
        try:
            invitation = enrol_device(node.repo, new_key, name)
        except ValueError as exc:  # revoked meanwhile, or this device no longer a member
            w.state = "failed"
            raise PairingError("refused", str(exc)) from None
        w.state = "accepted"
        log.info("pairing: enrolled %s (%s)", device_id(new_key), name)
        await channel.send({"t": "pair_welcome", "invitation": invitation})

    def _check_open(self, w: PairingWindow | None, *, claiming: bool = False) -> None:
        if w is None or w.state == "failed":
            raise PairingError("closed", "no pairing window is open on this device")
        if w.state == "expired" or (w.state == "open" and time.time() > w.expires_at):
            w.state = "expired"
            raise PairingError("expired", "the pairing code has expired")
        if w.state != "open":
            raise PairingError("used", "this pairing code was already used")
        if w.attempts >= MAX_ATTEMPTS and not claiming:
            raise PairingError("closed", "too many tries; the window is closed")

    async def _failed_attempt(self, w: PairingWindow) -> None:
        w.failures += 1
        if w.failures >= MAX_ATTEMPTS and w.state == "open":
            w.state = "failed"
            w.decided.set()
            await self._advertise(False)
            log.warning("pairing: %d failed attempts; the window is closed", w.failures)

    async def _both_confirm(self, channel, w: PairingWindow) -> bool:
        """Wait for the owner's decision and the new device's ``pair_confirm``, in either
        order. True only when both said yes; a refusal by either ends it at once."""
        device = asyncio.ensure_future(channel.recv())
        owner = asyncio.ensure_future(w.decided.wait())
        device_ok = False
        try:
            async with asyncio.timeout(max(1.0, self._time_left())):
                while True:
                    await asyncio.wait({t for t in (device, owner) if not t.done()} or {owner},
                                       return_when=asyncio.FIRST_COMPLETED)
                    if device.done() and not device_ok:
                        frame = device.result()  # a closed channel raises: nothing is signed
                        device_ok = (isinstance(frame, dict) and frame.get("t") == "pair_confirm"
                                     and frame.get("accept") is True)
                        if not device_ok:
                            if w.state in ("confirm", "approved"):
                                w.state, w.refused_by = "refused", "new device"
                                w.decided.set()
                                await self._advertise(False)
                            return False
                    if owner.done():
                        if w.state != "approved":
                            return False
                        if device_ok:
                            return True
        except TimeoutError:
            w.state = "expired"
            raise PairingError("expired", "nobody confirmed in time") from None
        except TransportError:
            if w.state in ("confirm", "approved"):
                w.state, w.refused_by = "refused", "new device"
                w.decided.set()
            raise
        finally:
            for task in (device, owner):
                task.cancel()


async def _send_quietly(channel, frame: dict[str, Any]) -> None:
    with contextlib.suppress(TransportError):
        await channel.send(frame)
