"""The workspace a request acts in: ``X-Gofannon-Workspace`` or ``?workspace=``, resolved once per request by
``gofannon.services.memberships.resolve_active`` (membership checked; a bound token's workspace wins)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gofannon.services.memberships import HEADER, QUERY, resolve_active
from gofannon.web.common import identity, kernel_of

try:
    ACTIVE_KEY: Any = web.RequestKey("gofannon_workspace", object)
except AttributeError:  # pragma: no cover - aiohttp < 3.14
    ACTIVE_KEY = "gofannon_workspace"


async def active_workspace(request: web.Request) -> tuple[str, str]:
    """The workspace this request acts in and the caller's role there; computed once per request."""
    cached = request.get(ACTIVE_KEY)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    named = request.headers.get(HEADER) or request.query.get(QUERY)
    result = await resolve_active(kernel_of(request), identity(request), named)
    request[ACTIVE_KEY] = result
    return result
