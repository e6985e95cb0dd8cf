"""Fixed-window rate limits kept in the document store, so every API process sharing it agrees.

One small document per key (``rate_limits/<key>``: the current window number and its count), changed
with the store's atomic ``update``; a new window overwrites the old one, so a key never holds more than
one document.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel

COLLECTION = "rate_limits"
MAX_KEY = 200


async def admit(kernel: "Kernel", key: str, limit: int, window_s: float = 60.0) -> bool:
    """Count one event for ``key``; False when the window already holds ``limit`` events."""
    if limit <= 0:
        return False
    window = int(time.time() // window_s)
    admitted = False

    def fn(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        nonlocal admitted
        count = int(doc.get("count") or 0) if doc is not None and doc.get("window") == window else 0
        if count >= limit:
            admitted = False
            return None
        admitted = True
        return {"window": window, "count": count + 1}

    await kernel.store.update(COLLECTION, key[:MAX_KEY], fn)
    return admitted


async def exhausted(kernel: "Kernel", key: str, limit: int, window_s: float = 60.0) -> bool:
    """Whether ``key`` has used up ``limit`` in the current window, without counting anything."""
    doc = await kernel.store.get(COLLECTION, key[:MAX_KEY])
    window = int(time.time() // window_s)
    return doc is not None and doc.get("window") == window and int(doc.get("count") or 0) >= limit
