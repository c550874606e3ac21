"""Slots for incoming connections not yet proven members (SPEC-005 005.9.10a).

Before the handshake has even read a HELLO, aiohttp buffers each WebSocket message whole, up to
the 8 MiB frame limit: a stranger on the LAN opening hundreds of connections and sending a 7 MiB
"HELLO" on each made the node hold gigabytes. An incoming connection therefore takes a slot
before its upgrade and gives it back once the chain exchange has told member from stranger;
with no slot free, it is answered 503 and nothing of it is read.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

MAX_UNPROVEN = 16
MAX_UNPROVEN_PER_ADDRESS = 4
#: Not counted per address: nodes under test share it, and a local process can read the
#: node's token file anyway; loopback connections still take slots of the total.
LOOPBACK = frozenset({"127.0.0.1", "::1"})


class Slot:
    """One connection's place in the gate; ``release`` may be called any number of times."""

    __slots__ = ("_address", "_gate")

    def __init__(self, gate: HandshakeGate, address: str) -> None:
        self._gate: HandshakeGate | None = gate
        self._address = address

    def release(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate._give_back(self._address)


class HandshakeGate:
    """How many incoming connections may be between upgrade and proven membership at once, in
    all and per remote address."""

    def __init__(self, total: int = MAX_UNPROVEN,
                 per_address: int = MAX_UNPROVEN_PER_ADDRESS) -> None:
        self.total = total
        self.per_address = per_address
        self._by_address: dict[str, int] = {}
        self._held = 0
        self.turned_away = 0  # since start: shown by status, logged once per burst

    @property
    def held(self) -> int:
        return self._held

    def take(self, address: str | None) -> Slot | None:
        """A slot for a connection from ``address``, or None when the gate is full for it."""
        address = address or "?"
        crowded = address not in LOOPBACK and \
            self._by_address.get(address, 0) >= self.per_address
        if self._held >= self.total or crowded:
            self.turned_away += 1
            if self.turned_away in (1, 10, 100) or self.turned_away % 1000 == 0:
                log.warning("turned away %d incoming connection(s) waiting to prove membership "
                            "(latest from %s): %d held", self.turned_away, address, self._held)
            return None
        self._held += 1
        self._by_address[address] = self._by_address.get(address, 0) + 1
        return Slot(self, address)

    def _give_back(self, address: str) -> None:
        self._held -= 1
        left = self._by_address.get(address, 1) - 1
        if left > 0:
            self._by_address[address] = left
        else:
            self._by_address.pop(address, None)
