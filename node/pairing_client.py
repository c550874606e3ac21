"""The new device's side of pairing (``maia pair``): find a member, present the code, compare.

It runs without a node (the device has no mesh yet), talks to the member's peer listener over
the same authenticated, encrypted handshake as peers, and on the owner's "yes" stores the
invitation it receives (crdt.identity.accept_invitation).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from crdt.identity import accept_invitation
from crdt.keys import DeviceKey
from crdt.store import Store

from .pairing import PAIRING_MESH, commitment, normalize_code, short_authentication_string
from .transport import TransportError, connect

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


async def pair_with(
    address: str,
    *,
    key: DeviceKey,
    store: Store,
    code: str,
    name: str,
    show_sas: Callable[[str, str], None],
    timeout: float = 1800.0,
) -> PairResult:
    """Pair with the member at ``address`` (HOST:PORT of its peer listener)."""
    nonce = os.urandom(32)
    async with aiohttp.ClientSession() as session:
        try:
            channel = await connect(
                session, f"http://{address}/v1/pair", key=key, mesh_id=PAIRING_MESH
            )
        except (OSError, aiohttp.ClientError) as exc:
            raise PairFailed("unreachable", f"cannot reach {address}: {exc}") from None
        except TransportError as exc:
            raise PairFailed(exc.code, f"the handshake with {address} failed: {exc}") from None
        try:
            await channel.send(
                {"t": "pair", "code": normalize_code(code), "name": name,
                 "commit": commitment(nonce)}
            )
            reply = await _expect(channel, "pair_nonce")
            member_nonce = reply.get("nonce")
            if not isinstance(member_nonce, bytes) or len(member_nonce) != 32:
                raise PairFailed("malformed", "the member sent a malformed nonce")
            await channel.send({"t": "pair_reveal", "nonce": nonce})
            sas = short_authentication_string(
                key.public_key, channel.peer_key, nonce, member_nonce
            )
            show_sas(sas, channel.peer_device_id)
            async with asyncio.timeout(timeout):
                final = await channel.recv()
        except TransportError as exc:
            raise PairFailed(exc.code, f"the pairing connection ended: {exc}") from None
        finally:
            await channel.close()
    kind = final.get("t") if isinstance(final, dict) else None
    if kind == "pair_refused":
        raise PairFailed("refused", "the other device refused: the numbers did not match, or "
                         "its owner said no")
    if kind == "pair_error":
        raise PairFailed(str(final.get("code")), str(final.get("detail")))
    if kind != "pair_welcome" or not isinstance(final.get("invitation"), str):
        raise PairFailed("malformed", "unexpected answer from the member")
    try:
        repo = accept_invitation(store, key, final["invitation"])
    except ValueError as exc:
        raise PairFailed("bad_invitation", str(exc)) from None
    return PairResult(repo.mesh_id, channel.peer_device_id, sas)


async def _expect(channel, kind: str) -> dict:
    frame = await channel.recv()
    if isinstance(frame, dict) and frame.get("t") == "pair_error":
        raise PairFailed(str(frame.get("code")), str(frame.get("detail")))
    if not isinstance(frame, dict) or frame.get("t") != kind:
        raise PairFailed("malformed", f"expected {kind} from the member")
    return frame


async def find_pairing_members(wait: float = 3.0) -> list[tuple[str, str]]:
    """Members on the LAN with an open pairing window: [(device id, HOST:PORT)]."""
    from zeroconf import IPVersion, ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    from .discovery import SERVICE_TYPE, lan_addresses

    addresses = lan_addresses()
    if not addresses:
        return []
    azc = AsyncZeroconf(interfaces=addresses, ip_version=IPVersion.V4Only)
    names: set[str] = set()

    def on_change(zeroconf, service_type, name, state_change) -> None:
        if state_change is not ServiceStateChange.Removed:
            names.add(name)

    browser = AsyncServiceBrowser(azc.zeroconf, SERVICE_TYPE, handlers=[on_change])
    await asyncio.sleep(wait)
    found = []
    for name in sorted(names):
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(azc.zeroconf, 2000):
            continue
        props = {k.decode(): (v or b"").decode() for k, v in (info.properties or {}).items()}
        if props.get("pairing") != "1":
            continue
        for addr in info.parsed_addresses(IPVersion.V4Only):
            found.append((props.get("id", "?"), f"{addr}:{info.port}"))
            break
    await browser.async_cancel()
    await azc.async_close()
    return found


def default_device_name() -> str:
    return socket.gethostname() or "device"
