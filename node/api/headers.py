"""Response header values built from text the node does not choose (SPEC-003 §10.4).

A revoking device's name and the time it signed, a peer's cortex name, a routing note taken
from a model's answer: each is somebody else's text. A CR, LF or other control character in
a header value makes the HTTP server refuse the whole response, so a member that revoked this
device with ``at = "2024\\r\\nx"`` took down every answer of its local API, ``/health``
included, just when the owner needed it. Such text is percent-encoded: printable ASCII stays
as it is, anything else (control characters, ``%``, non-ASCII) becomes ``%XX`` of its UTF-8
bytes, which a client reverses with ``urllib.parse.unquote``.
"""

from __future__ import annotations

from urllib.parse import quote

#: Printable ASCII but ``%``: kept as it is.
_KEPT = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")
MAX_HEADER_TEXT = 300


def header_text(text: object, limit: int = MAX_HEADER_TEXT) -> str:
    """``text`` as a safe header value, cut to ``limit`` characters before encoding."""
    return quote(str(text)[:limit], safe=_KEPT)
