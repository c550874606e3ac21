"""Test harness: a node process whose wall clock is wrong, by design (SPEC-004 clock tests).

Put this directory on ``PYTHONPATH`` of a node subprocess and set either
``MAIA_TEST_CLOCK_OFFSET_S`` (a fixed offset in seconds) or ``MAIA_TEST_CLOCK_FILE`` (a file
holding the offset in seconds, read again at most every 50 ms, so a test can step the clock of
a running process forward or back). ``time.time``, ``time.time_ns`` and ``datetime.now`` /
``utcnow`` move by the offset; ``time.monotonic`` never moves, as on a real machine whose wall
clock is stepped.
"""

from __future__ import annotations

import os
import time

_FIXED = os.environ.get("MAIA_TEST_CLOCK_OFFSET_S")
_FILE = os.environ.get("MAIA_TEST_CLOCK_FILE")

if _FIXED or _FILE:
    import datetime as _dt

    _real_time, _real_time_ns, _mono = time.time, time.time_ns, time.monotonic
    _state = {"offset_ns": int(float(_FIXED or 0) * 1e9), "read": -1.0}

    def _offset_ns() -> int:
        if _FILE:
            now = _mono()
            if now - _state["read"] > 0.05:
                _state["read"] = now
                try:
                    with open(_FILE) as f:
                        _state["offset_ns"] = int(float(f.read().strip() or 0) * 1e9)
                except (OSError, ValueError):
                    pass
        return _state["offset_ns"]

    def _time() -> float:
        return _real_time() + _offset_ns() / 1e9

    def _time_ns() -> int:
        return _real_time_ns() + _offset_ns()

    time.time = _time
    time.time_ns = _time_ns

    class _Datetime(_dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return _dt.datetime.fromtimestamp(_time(), tz)

        @classmethod
        def utcnow(cls):
            return _dt.datetime.fromtimestamp(_time(), _dt.UTC).replace(tzinfo=None)

    _dt.datetime = _Datetime
