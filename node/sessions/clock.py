"""Timestamps of SPEC-004: integer nanoseconds inside, ISO-8601 with 9 fractional digits outside.

Stdlib only (the hook path may import it).
"""

from __future__ import annotations

import calendar
import re
import time

_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z$")
NS = 1_000_000_000


def now_ns() -> int:
    return time.time_ns()


def iso(ns: int) -> str:
    """``2026-11-25T11:43:07.123456789Z`` (SPEC-001 §10.1, exactly 9 digits)."""
    seconds, frac = divmod(int(ns), NS)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:09d}Z"


def parse_iso(text: str) -> int:
    """Nanoseconds of an ISO UTC timestamp ending in ``Z``; ValueError when it is not one."""
    m = _ISO.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"not an ISO-8601 UTC timestamp: {text!r}")
    y, mo, d, h, mi, s, frac = m.groups()
    seconds = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(s), 0, 0, 0))
    return seconds * NS + int((frac or "0").ljust(9, "0"))


def local_time(ns: int) -> str:
    """Wall-clock time in the device's zone, for messages a person reads (``14:05 CET``)."""
    return time.strftime("%H:%M %Z", time.localtime(ns / NS)).strip()
