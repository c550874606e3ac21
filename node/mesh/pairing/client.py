"""The new device's side of pairing (``maia pair``): find a member, prove the code, compare.

It runs without a node (the device has no mesh yet) and talks to the member's peer listener
over the same authenticated, encrypted handshake as peers. The code never leaves this device:
it is the password of a SPAKE2 exchange bound to both device keys, the member must prove it
knows the code before this side sends its own proof, this device's user must confirm that both
screens show the same number, and the invitation is stored
(crdt.identity.accept_invitation) only if the key this device is talking to endorsed it
(SPEC-005 §12.5-§12.7).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from zeroconf import IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from crdt import DeviceKey, Roster, Store, accept_invitation, device_id, parse_invitation

from ...transport import TransportError, connect
from ..discovery import SERVICE_TYPE, lan_addresses
from .member import (
    PAIRING_MESH,
    commitment,
    member_proof,
    new_device_proof,
    pairing_transcript,
    pake,
    pake_finish,
    short_authentication_string,
)

log = logging.getLogger(__name__)


class PairFailed(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


@dataclass
class PairResult:
    mesh_id: bytes
    member: str
    sas: str


# Asked with (sas, member device id); True only if the user says both screens match. It may
# block (it reads a terminal): it runs in its own thread while the member's answer is awaited.
Confirm = Callable[[str, str], bool]


async def pair_with(
    address: str,
    *,
    key: DeviceKey,
    store: Store,
    code: str,
    name: str,
    confirm: Confirm,
    timeout: float = 1800.0,
) -> PairResult:
    """Pair with the member at ``address`` (HOST:PORT of its peer listener)."""
    nonce = os.urandom(32)
    commit = commitment(nonce)
    async with aiohttp.ClientSession() as session:
        try:
            channel = await connect(
                session, f"http://{address}/v1/pair", key=key, mesh_id=PAIRING_MESH
            )
        except (OSError, aiohttp.ClientError) as exc:
            raise PairFailed("unreachable", f"cannot reach {address}: {exc}") from None
        except TransportError as exc:
            raise PairFailed(exc.code, f"the handshake with {address} failed: {exc}") from None
        member_key = channel.peer_key
        try:
            state = pake(code, new_key=key.public_key, member_key=member_key, member=False)
            pake_new = state.start()
            await channel.send({"t": "pair", "name": name, "pake": pake_new, "commit": commit})
            reply = await _expect(channel, "pair_pake")
            pake_member, member_nonce = reply.get("pake"), reply.get("nonce")
            if not isinstance(member_nonce, bytes) or len(member_nonce) != 32:
                raise PairFailed("malformed", "the member sent a malformed nonce")
            shared = pake_finish(state, pake_member)
            if shared is None:
                raise PairFailed("malformed", "the member sent a malformed SPAKE2 message")
            transcript = pairing_transcript(key.public_key, member_key, pake_new, pake_member,
                                            commit, member_nonce)
            proof = reply.get("proof")
            if not isinstance(proof, bytes) or not hmac.compare_digest(
                proof, member_proof(shared, transcript)
            ):
                await channel.send({"t": "pair_error", "code": "wrong_code",
                                    "detail": "the member's proof does not verify"})
                raise PairFailed(
                    "wrong_code",
                    f"{device_id(member_key)} at {address} did not prove it knows this code: "
                    "the code is mistyped, or the device that answered is not the member "
                    "showing it. Nothing was sent that reveals the code, and nothing was stored",
                )
            await channel.send({"t": "pair_reveal", "nonce": nonce,
                                "proof": new_device_proof(shared, transcript, nonce)})
            sas = short_authentication_string(key.public_key, member_key, nonce, member_nonce)
            async with asyncio.timeout(timeout):
                final = await _confirm_both(channel, confirm, sas)
        except TransportError as exc:
            raise PairFailed(exc.code, f"the pairing connection ended: {exc}") from None
        except TimeoutError:
            raise PairFailed("expired", "nobody confirmed in time") from None
        finally:
            await channel.close()
    mesh_id = check_invitation(final["invitation"], own_key=key.public_key,
                               member_key=member_key)
    try:
        repo = accept_invitation(store, key, final["invitation"])
    except ValueError as exc:
        raise PairFailed("bad_invitation", str(exc)) from None
    assert repo.mesh_id == mesh_id
    return PairResult(repo.mesh_id, device_id(member_key), sas)


async def _confirm_both(channel, confirm: Confirm, sas: str) -> dict:
    """Ask this device's user while listening to the member; send our answer; return the
    member's ``pair_welcome`` (SPEC-005 §12.6, §12.7)."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bool] = loop.create_future()

    def ask() -> None:  # a daemon thread: a pending terminal read never holds up the exit
        try:
            result: BaseException | bool = bool(confirm(sas, channel.peer_device_id))
        except BaseException as exc:  # handed to the event loop as is
            result = exc
        loop.call_soon_threadsafe(_settle, answer, result)

    threading.Thread(target=ask, name="pair-confirm", daemon=True).start()
    incoming = asyncio.ensure_future(channel.recv())
    try:
        await asyncio.wait({answer, incoming}, return_when=asyncio.FIRST_COMPLETED)
        if incoming.done():  # the member spoke first: only a refusal or an error may come now
            _member_verdict(incoming.result())
            raise PairFailed("malformed", "the member answered before this device confirmed")
        if not answer.result():
            await channel.send({"t": "pair_confirm", "accept": False})
            raise PairFailed("refused", "you said the numbers differ; nothing was signed or "
                             "stored")
        await channel.send({"t": "pair_confirm", "accept": True})
        return _member_verdict(await incoming)
    finally:
        incoming.cancel()


def _settle(future: asyncio.Future, result: BaseException | bool) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def _member_verdict(final: object) -> dict:
    kind = final.get("t") if isinstance(final, dict) else None
    if kind == "pair_refused":
        raise PairFailed("refused", "the other device refused: the numbers did not match, or "
                         "its owner said no")
    if kind == "pair_error":
        raise PairFailed(str(final.get("code")), str(final.get("detail")))
    if kind != "pair_welcome" or not isinstance(final.get("invitation"), str):
        raise PairFailed("malformed", "unexpected answer from the member")
    return final


def check_invitation(text: str, *, own_key: bytes, member_key: bytes) -> bytes:
    """The invitation's mesh id, if the connected member itself admits this device into a mesh
    it belongs to (SPEC-005 §12.7); PairFailed otherwise."""
    try:
        mesh_id, certs = parse_invitation(text)
    except ValueError as exc:
        raise PairFailed("bad_invitation", f"the member's answer: {exc}") from None
    ours = [c for c in certs if c.kind == "endorse" and c.body["subject"] == own_key]
    member = device_id(member_key)
    strangers = sorted({device_id(c.signer) for c in ours if c.signer != member_key})
    if strangers:
        raise PairFailed(
            "wrong_issuer",
            f"the invitation admits this device by {', '.join(strangers)}, not by {member}, "
            "the device it is connected to; nothing was stored",
        )
    if not any(c.body["mesh"] == mesh_id for c in ours):
        raise PairFailed("bad_invitation", f"{member} sent no endorsement of this device for "
                         "the invitation's mesh; nothing was stored")
    roster = Roster.build(mesh_id, certs)
    if not roster.is_member(member_key) or not roster.is_member(own_key):
        raise PairFailed("bad_invitation", f"{member} is not a member of the mesh it invites "
                         "to, or its endorsement does not hold; nothing was stored")
    return mesh_id


async def _expect(channel, kind: str) -> dict:
    frame = await channel.recv()
    if isinstance(frame, dict) and frame.get("t") == "pair_error":
        raise PairFailed(str(frame.get("code")), str(frame.get("detail")))
    if not isinstance(frame, dict) or frame.get("t") != kind:
        raise PairFailed("malformed", f"expected {kind} from the member")
    return frame


async def find_pairing_members(wait: float = 10.0, settle: float = 1.0) -> list[tuple[str, str]]:
    """Members on the LAN with an open pairing window: [(device id, HOST:PORT)].

    Returns ``settle`` seconds after the first one is found (time for a second to show, so
    two open windows are named, not one picked at random), or after ``wait`` with none. A
    fixed 3 s look missed a member whose announcement came late on a busy machine."""
    addresses = lan_addresses()
    if not addresses:
        return []
    loop = asyncio.get_running_loop()
    azc = AsyncZeroconf(interfaces=addresses, ip_version=IPVersion.V4Only)
    names: set[str] = set()

    def on_change(zeroconf, service_type, name, state_change) -> None:
        if state_change is not ServiceStateChange.Removed:
            names.add(name)

    browser = AsyncServiceBrowser(azc.zeroconf, SERVICE_TYPE, handlers=[on_change])
    found: dict[str, tuple[str, str]] = {}
    deadline, first_at = loop.time() + wait, None
    try:
        while loop.time() < deadline and (first_at is None or loop.time() - first_at < settle):
            await asyncio.sleep(0.5)
            for name in sorted(names - set(found)):  # a window may open after the first look
                member = await _pairing_member(azc, name)
                if member is not None:
                    found[name] = member
                    first_at = first_at if first_at is not None else loop.time()
    finally:
        await browser.async_cancel()
        await azc.async_close()
    return [found[name] for name in sorted(found)]


async def _pairing_member(azc: AsyncZeroconf, name: str) -> tuple[str, str] | None:
    """(device id, HOST:PORT) of an announced member whose pairing window is open."""
    info = AsyncServiceInfo(SERVICE_TYPE, name)
    if not await info.async_request(azc.zeroconf, 1000):
        return None
    props = {k.decode(): (v or b"").decode() for k, v in (info.properties or {}).items()}
    if props.get("pairing") != "1":
        return None
    for addr in info.parsed_addresses(IPVersion.V4Only):
        return props.get("id", "?"), f"{addr}:{info.port}"
    return None


def default_device_name() -> str:
    return socket.gethostname() or "device"
