"""Which peers may be sent prompts for which cortex: approvals kept by this node (SPEC-006
006.6.7).

Any member may advertise any cortex with any load, and the router ranks peers by what they say:
a stolen laptop that advertised the desktop's cortex as local and idle received its prompts on
every node that did not define it. A pair of (device, cortex name) is a candidate only once
approved here: during this node's learning window (its first 10 minutes under this rule, so a
fresh or upgraded node takes the mesh as it is), or by its owner (``maia cortex allow``). Pairs
first seen later wait, pending, and are never sent a prompt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_SINCE = b"cortex-trust:since"
_PAIR = b"cortex-trust:pair:"  # + 32-byte device key + cortex name
MAX_PENDING = 256


class HostApprovals:
    """Approved (device key, cortex name) pairs, kept in Runtime's key/value table."""

    def __init__(self, env: Any, db: Any, *, learning_seconds: float = 600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._env, self._db, self._clock = env, db, clock
        self.learning_seconds = learning_seconds
        self._approved: set[tuple[bytes, str]] = set()
        self.pending: dict[tuple[bytes, str], float] = {}  # first seen (wall clock)
        with env.begin(db=db) as txn:
            since = txn.get(_SINCE)
            cur = txn.cursor()
            if cur.set_range(_PAIR):
                for key in cur.iternext(values=False):
                    key = bytes(key)
                    if not key.startswith(_PAIR):
                        break
                    rest = key[len(_PAIR):]
                    self._approved.add((rest[:32], rest[32:].decode()))
        if since is None:
            self.since = self._clock()
            self._put(_SINCE, repr(self.since).encode())
        else:
            self.since = float(bytes(since))

    def learning(self) -> bool:
        return self._clock() < self.since + self.learning_seconds

    def allows(self, key: bytes, name: str) -> bool:
        """Whether a peer's cortex may be sent prompts; a new pair is approved during the
        learning window and pending after it."""
        pair = (key, name)
        if pair in self._approved:
            return True
        if self.learning():
            self.approve(key, name)
            return True
        if pair not in self.pending and len(self.pending) < MAX_PENDING:
            self.pending[pair] = self._clock()
            log.warning("a peer offers cortex %r and is not approved on this node; it is sent "
                        "no prompt until the owner approves it: maia cortex allow %s %s",
                        name, key.hex()[:16], name)
        return False

    def approve(self, key: bytes, name: str) -> None:
        self._approved.add((key, name))
        self.pending.pop((key, name), None)
        self._put(_PAIR + key + name.encode(), b"1")

    def approved(self, key: bytes, name: str) -> bool:
        return (key, name) in self._approved

    def _put(self, key: bytes, value: bytes) -> None:
        with self._env.begin(write=True, db=self._db) as txn:
            txn.put(key, value)
