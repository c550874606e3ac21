"""Per-client token-bucket rate limiting with bounded memory.

aiohttp has no rate limiter, and an unbounded per-client table is itself a
resource-exhaustion hole (OWASP API4), so the table here is capped: buckets
that have refilled completely carry no information and are dropped first,
and beyond the cap the least recently seen client is forgotten.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets keyed by client: ``rate`` tokens per second, at most ``burst``."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1 or max_clients < 1:
            raise ValueError("rate must be > 0, burst >= 1 and max_clients >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_clients = max_clients
        self._clock = clock
        # Least recently seen first, so idle clients sit at the front.
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def acquire(self, key: str) -> float:
        """Take one token for ``key``.

        Returns 0.0 when the request may proceed, otherwise the number of
        seconds until a token will be available (nothing is taken then).
        """
        now = self._clock()
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(tokens=self.burst, updated=now)
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        self._buckets[key] = bucket  # re-insert at the most recent end
        self._evict(now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def retry_after(self, wait: float) -> str:
        """A ``Retry-After`` value (whole seconds, at least 1) for a wait from acquire."""
        return str(max(1, math.ceil(wait)))

    def _evict(self, now: float) -> None:
        full_after = self.burst / self.rate
        while self._buckets:
            key, oldest = next(iter(self._buckets.items()))
            idle_full = now - oldest.updated >= full_after
            if not idle_full and len(self._buckets) <= self.max_clients:
                break
            # A refilled bucket equals a fresh one, so dropping it loses nothing;
            # over the cap, forgetting the stalest client keeps memory bounded.
            del self._buckets[key]
