"""How a routed request fails, in routing terms; the API turns these into problems (SPEC-006 §10).

:class:`AttemptFailed` is one candidate failing (the router then tries the next one, §6.2); the
others are the request's final outcome when no candidate could answer.
"""

from __future__ import annotations

from typing import Any

# Who is to blame for a failed attempt decides the cooldown (SPEC-006 §6.3).
BLAME_PEER = "peer"  # the whole peer: lost, timed out, answered garbage
BLAME_CORTEX = "cortex"  # one (host, cortex): its backend failed
BLAME_NONE = "none"  # busy, stale advertisement, a request this host could not take

# Host error codes (§7.2) and whom they blame.
HOST_CODES = {
    "unknown_cortex": BLAME_NONE,
    "busy": BLAME_NONE,
    "context_window": BLAME_NONE,
    "bad_request": BLAME_NONE,
    "malformed": BLAME_NONE,
    "backend": BLAME_CORTEX,
    "bad_answer": BLAME_CORTEX,  # the model's answer failed the checks (SPEC-006 §13.4)
    "answer_limit": BLAME_CORTEX,  # the host cut its model's answer at its bound (§8.4)
    "timeout": BLAME_CORTEX,
    "internal": BLAME_CORTEX,
}


class AttemptFailed(Exception):
    """One candidate did not produce an answer (or stopped producing one)."""

    def __init__(self, code: str, detail: str, blame: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail[:300]
        self.blame = blame


class RoutingError(Exception):
    """A request that cannot be routed; ``status`` and ``extra`` shape the problem answer."""

    status = 500
    slug = ""

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class UnknownCortex(RoutingError):
    status, slug = 404, "unknown-cortex"


class UnsupportedInput(RoutingError):
    status, slug = 400, "unsupported-input"


class ContextTooLarge(RoutingError):
    status, slug = 413, "context-window"


class BadUpstreamRequest(RoutingError):
    status, slug = 400, "backend-rejected"


class WrongKind(RoutingError):
    """A chat request naming an embedding cortex, or the reverse (SPEC-006 §13.2)."""

    status, slug = 400, "wrong-kind"


class BadUpstreamAnswer(RoutingError):
    """Every candidate failed and one answered an embeddings answer out of shape (§13.5)."""

    status, slug = 502, "bad-upstream"


class NoRoute(RoutingError):
    """No candidate answered. ``retry_after`` (seconds) when a retry soon can succeed, else
    None: the client is told not to retry (SPEC-006 §10.4)."""

    status, slug = 503, "no-route"

    def __init__(self, detail: str, *, retry_after: int | None = None, **extra: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **extra)
        self.retry_after = retry_after


class RouteTimeout(RoutingError):
    status, slug = 504, "timeout"


class AnswerLimit(RoutingError):
    """An answer over ``max_answer_bytes`` (SPEC-006 §6.6): cut, never passed on."""

    status, slug = 502, "answer-limit"
