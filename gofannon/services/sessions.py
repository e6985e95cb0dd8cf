"""Login sessions (``user_sessions``): created at login, looked up per request, revoked at logout."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.auth import Identity
    from gofannon.kernel import Kernel

COLLECTION = "user_sessions"


async def lookup(kernel: "Kernel", sid: str) -> "Identity | None":
    """The identity of a live session, or None (missing, corrupt or expired: those are deleted)."""
    return None  # TODO(auth issue): implemented by the auth work
