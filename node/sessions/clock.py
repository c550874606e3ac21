"""Timestamps of SPEC-004: integer nanoseconds inside, ISO-8601 with 9 fractional digits outside.

Two clocks, never mixed: durations (session and lease expiry, repeat windows) are measured with
:func:`mono_ns`, which no wall-clock step moves; the wall clock (:func:`now_ns`) is only for what
is shown and what is sent. :func:`wall_of` shows a monotonic instant as wall time, now.

Stdlib only (the hook path may import it).
"""

from __future__ import annotations

import calendar
import re
import time

_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z\Z")
NS = 1_000_000_000


def now_ns() -> int:
    """Wall-clock time: for display and for what is sent, never for a duration."""
    return time.time_ns()


def mono_ns() -> int:
    """Monotonic time in ns: every duration and deadline on this node (SPEC-004 §1)."""
    return time.monotonic_ns()


_offset = [time.time_ns() - time.monotonic_ns()]


def wall_of(mono: int) -> int:
    """The wall-clock time (ns) that shows the monotonic instant ``mono`` as of now.

    The wall-minus-monotonic offset is kept until it moves by more than 1 ms (a clock step or
    slew), so the same instant shows as the same text from one call to the next.
    """
    offset = time.time_ns() - time.monotonic_ns()
    if abs(offset - _offset[0]) > 1_000_000:
        _offset[0] = offset
    return int(mono) + _offset[0]


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
