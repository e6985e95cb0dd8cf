"""Timestamps in the reference's wire forms."""

from __future__ import annotations

import time
from datetime import datetime, timezone


#: (second, its ``YYYY-MM-DDTHH:MM:SS``): the formatted part of ``now_iso`` changes once a second.
_SECOND: tuple[int, str] = (0, "")


def now_iso() -> str:
    """Naive UTC ISO-8601 with microseconds and no zone, e.g. ``2026-11-23T08:08:24.437006`` (several are taken per
    API call, so the date and time are formatted once a second and only the microseconds each time)."""
    global _SECOND
    now = time.time()
    second = int(now)
    cached = _SECOND
    if cached[0] != second:
        cached = _SECOND = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{int((now - second) * 1_000_000):06d}"


def now_iso_tz() -> str:
    """UTC ISO-8601 with ``+00:00`` (trace events)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def now_ms() -> float:
    return time.time() * 1000.0


def parse_iso(value: str) -> datetime:
    dt = datetime.fromisoformat(value)
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
