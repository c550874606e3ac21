"""Browser logins: an opaque cookie value mapped, in memory only, to a login (SPEC-003 §11.2).

A login is Runtime state: it lives as long as the node process and no longer, so nothing that
authenticates a browser is ever written to disk. The cookie value is a random secret; the
login's ``label`` is a separate random name that may appear in logs and rate-limit keys.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

LIFETIME_SECONDS = 12 * 3600
MAX_LOGINS = 32
SECRET_BYTES = 32


@dataclass(slots=True)
class Login:
    """One browser's login: what the cookie value maps to."""

    label: str
    csrf_token: str
    created: float
    expires: float

    def seconds_left(self, now: float | None = None) -> int:
        return max(0, int(self.expires - (time.time() if now is None else now)))

    def csrf_matches(self, presented: str | None) -> bool:
        if not presented:
            return False
        return hmac.compare_digest(presented.encode("utf-8", "replace"),
                                   self.csrf_token.encode("ascii"))


class Logins:
    """The live logins of this node, by cookie value; bounded and expiring.

    ``on_end(label)`` is called whenever a login ends (logout, expiry noticed, eviction), so
    that whatever it holds open (live streams) closes with it.
    """

    def __init__(
        self,
        *,
        lifetime: float = LIFETIME_SECONDS,
        max_logins: int = MAX_LOGINS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lifetime = lifetime
        self.max_logins = max_logins
        self._clock = clock
        self._by_cookie: OrderedDict[str, Login] = OrderedDict()
        self.on_end: list[Callable[[str], None]] = []

    def __repr__(self) -> str:
        # Cookie values are credentials: never let them reach a log line.
        return f"{type(self).__name__}(logins={len(self._by_cookie)})"

    def __len__(self) -> int:
        self._expire()
        return len(self._by_cookie)

    def create(self) -> tuple[str, Login]:
        """A new login; returns (cookie value, login). The oldest goes when the bound is hit."""
        self._expire()
        while len(self._by_cookie) >= self.max_logins:
            _, oldest = self._by_cookie.popitem(last=False)
            self._ended(oldest)
        now = self._clock()
        cookie = secrets.token_urlsafe(SECRET_BYTES)
        login = Login(
            label=secrets.token_hex(4),
            csrf_token=secrets.token_urlsafe(SECRET_BYTES),
            created=now,
            expires=now + self.lifetime,
        )
        self._by_cookie[cookie] = login
        return cookie, login

    def get(self, cookie: str | None) -> Login | None:
        """The live login for a cookie value, or None (unknown or expired)."""
        if not cookie:
            return None
        login = self._by_cookie.get(cookie)
        if login is None:
            return None
        if login.expires <= self._clock():
            self._drop(cookie)
            return None
        return login

    def by_label(self, label: str) -> Login | None:
        self._expire()
        return next((x for x in self._by_cookie.values() if x.label == label), None)

    def end(self, cookie: str | None) -> bool:
        """End the login a cookie value names; False when there was none."""
        if not cookie or cookie not in self._by_cookie:
            return False
        self._drop(cookie)
        return True

    def end_all(self) -> None:
        for cookie in list(self._by_cookie):
            self._drop(cookie)

    def _expire(self) -> None:
        now = self._clock()
        for cookie in [c for c, x in self._by_cookie.items() if x.expires <= now]:
            self._drop(cookie)

    def _drop(self, cookie: str) -> None:
        login = self._by_cookie.pop(cookie, None)
        if login is not None:
            self._ended(login)

    def _ended(self, login: Login) -> None:
        for callback in list(self.on_end):
            callback(login.label)
