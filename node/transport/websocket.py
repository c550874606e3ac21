"""aiohttp glue for the maia-node transport: open a WebSocket sized for sealed frames, then
run the handshake as initiator (``connect``) or responder (``accept``).

Socket options live here so both ends agree: frames up to the limit plus the MAC, no
permessage-deflate (sealed frames do not compress, and compressing before encryption would leak
content through sizes), and a heartbeat so a vanished laptop is noticed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiohttp
from aiohttp import web

from crdt import DeviceKey

from .channel import SecureChannel
from .crypto import MAC_BYTES
from .errors import HandshakeError
from .frames import ABORT_TIMEOUT, CLOSE_TIMEOUT, close_socket
from .handshake import DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_FRAME, handshake

HEARTBEAT = 15.0


async def _refuse_redirect(session, context, params) -> None:
    """A peer's ``/v1/peer`` that answers with a redirect is refused before it is followed.

    Why: aiohttp follows up to 10 redirects by default, so a stranger (or a member whose record
    names it) answering ``302 Location: http://127.0.0.1:…/`` or a cloud metadata URL would make
    the dialler GET a host its address filter refuses (SPEC-005 005.9.6, 005.12.10). A peer
    dial speaks only the handshake, to the address it chose."""
    location = params.response.headers.get("Location", "")[:200]
    raise HandshakeError(
        "redirected", f"{params.url} answered {params.response.status} to {location!r}; "
        "a peer dial never follows a redirect"
    )


#: The trace that refuses redirects (``_refuse_redirect``); every session a dial uses has it.
REFUSE_REDIRECTS = aiohttp.TraceConfig()
REFUSE_REDIRECTS.on_request_redirect.append(_refuse_redirect)
REFUSE_REDIRECTS.freeze()


def peer_session() -> aiohttp.ClientSession:
    """A client session for peer dials: it never follows a redirect (``_refuse_redirect``)."""
    return aiohttp.ClientSession(trace_configs=[REFUSE_REDIRECTS])


def _ws_message_limit(max_frame: int) -> int:
    """aiohttp's ``max_msg_size`` for sealed frames of up to ``max_frame`` plaintext bytes.

    aiohttp refuses a message whose size *equals* ``max_msg_size``, so the limit is one past the
    largest sealed frame; ``read_frame`` then enforces the exact limit itself.
    """
    return max_frame + MAC_BYTES + 1


async def connect(
    session: aiohttp.ClientSession,
    url: str,
    *,
    key: DeviceKey,
    mesh_id: bytes,
    certs: Sequence[bytes] = (),
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    max_frame: int = DEFAULT_MAX_FRAME,
) -> SecureChannel:
    """Open a WebSocket to ``url`` and handshake as initiator.

    The WebSocket upgrade gets its own ``timeout`` (then ``HandshakeError("handshake_timeout")``)
    and the handshake another; connection errors (refused, unreachable) propagate unchanged as
    aiohttp errors so a caller can tell "no node there" from "node failed to prove itself".
    A redirect is refused, never followed (``HandshakeError("redirected")``), whatever session
    the caller passes: one made without ``peer_session`` gets the refusal added here.
    """
    if REFUSE_REDIRECTS not in session.trace_configs:
        session.trace_configs.append(REFUSE_REDIRECTS)
    try:
        async with asyncio.timeout(timeout):
            ws = await session.ws_connect(
                url,
                max_msg_size=_ws_message_limit(max_frame),
                heartbeat=HEARTBEAT,
                compress=0,
                timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT),
            )
    except TimeoutError:
        raise HandshakeError(
            "handshake_timeout", f"no WebSocket upgrade from {url} within {timeout:g} s"
        ) from None
    try:
        return await handshake(
            ws,
            key=key,
            mesh_id=mesh_id,
            initiator=True,
            certs=certs,
            timeout=timeout,
            max_frame=max_frame,
        )
    except BaseException:
        await close_socket(ws, wait=ABORT_TIMEOUT)  # no-op after a HandshakeError (closed)
        raise


async def accept(
    request: web.Request,
    *,
    key: DeviceKey,
    mesh_id: bytes,
    certs: Sequence[bytes] = (),
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    max_frame: int = DEFAULT_MAX_FRAME,
) -> tuple[web.WebSocketResponse, SecureChannel]:
    """Upgrade ``request`` to a WebSocket and handshake as responder.

    Return the response (the handler must return it) and the channel. A ``HandshakeError``
    raised here carries the already-closed response as ``exc.response`` so the handler can
    still return it: aiohttp logs a server error when a handler raises after the upgrade.
    """
    ws = web.WebSocketResponse(
        max_msg_size=_ws_message_limit(max_frame),
        heartbeat=HEARTBEAT,
        compress=False,
        timeout=CLOSE_TIMEOUT,
    )
    await ws.prepare(request)
    try:
        channel = await handshake(
            ws,
            key=key,
            mesh_id=mesh_id,
            initiator=False,
            certs=certs,
            timeout=timeout,
            max_frame=max_frame,
        )
    except HandshakeError as exc:
        exc.response = ws
        raise
    return ws, channel
