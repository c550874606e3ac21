"""Requests being answered now, so that background work can yield to them (SPEC-003 §7.5a).

A node's event loop answers the API, talks to its peers and runs background jobs (a
consolidation run) in turn. A job that takes its turns back to back makes every request wait
behind each of its steps: during a 10,000-entry consolidation run, a `POST /v1/memory` took
114-340 ms at p99 instead of ~30 (issue 14). Between its steps, a job asks this count and waits
a moment while someone else's request is being answered.
"""

from __future__ import annotations

import asyncio
import time

#: Longest a job waits for requests at one step: a steady stream of requests slows a job,
#: it never stops it.
MAX_YIELD = 0.05
_POLL = 0.002


class Foreground:
    """How many requests (not counting streaming routes) are being answered now."""

    __slots__ = ("in_flight",)

    def __init__(self) -> None:
        self.in_flight = 0

    async def yield_to_requests(self, own: int = 0, most: float = MAX_YIELD) -> float:
        """Wait while more than ``own`` requests (the caller's own, if it runs inside one)
        are in flight, at most ``most`` seconds; returns how long it waited."""
        start = time.monotonic()
        waited = 0.0
        while self.in_flight > own and waited < most:
            await asyncio.sleep(_POLL)
            waited = time.monotonic() - start  # real time: a busy loop wakes late
        return waited
