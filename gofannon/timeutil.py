"""Timestamps in the reference's wire forms."""

from __future__ import annotations

import time
from datetime import datetime, timezone


def now_iso() -> str:
    """Naive UTC ISO-8601 with microseconds and no zone, e.g. ``2026-11-23T08:08:24.437006``."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")[:-6]  # without "+00:00" (no .replace: slow)


def now_iso_tz() -> str:
    """UTC ISO-8601 with ``+00:00`` (trace events)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def now_ms() -> float:
    return time.time() * 1000.0


def parse_iso(value: str) -> datetime:
    dt = datetime.fromisoformat(value)
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
