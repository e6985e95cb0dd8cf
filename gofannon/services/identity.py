"""Resolve the caller of a request: session cookie first, then bearer authenticators.

A cookie, when present, wins over a bearer token (as in the reference): an invalid cookie answers 401
``session_expired`` even when a valid token is sent too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gofannon.errors import Unauthorized

if TYPE_CHECKING:  # pragma: no cover
    from aiohttp import web

    from gofannon.auth import Identity
    from gofannon.kernel import Kernel

SESSION_COOKIE = "gofannon_sid"


async def authenticate(kernel: "Kernel", request: "web.Request", *, required: bool) -> "Identity | None":
    from gofannon.services import sessions

    sid = request.cookies.get(SESSION_COOKIE)
    if sid:
        doc = await sessions.load(kernel, sid)
        if doc is not None:
            ident = sessions.identity_from(doc, sid)
            if sessions.refresh_due(kernel, doc):
                sessions.refresh_in_background(kernel, ident)
            return ident
        if required:
            raise Unauthorized("Session expired or invalid", reason="session_expired")
        return None
    for backend in kernel.auth_backends.values():
        if getattr(backend, "kind", None) != "request":
            continue
        authenticate_request = getattr(backend, "authenticate", None)
        if authenticate_request is None:
            continue
        try:
            ident = await authenticate_request(kernel, request)
        except Unauthorized:
            if required:
                raise
            return None
        if ident is not None:
            return ident
    if required:
        if kernel.settings.app_env.lower() == "firebase":
            raise Unauthorized("Not authenticated")  # wire contract §0.2: firebase mode, no bearer
        raise Unauthorized("Not authenticated. Session cookie missing or invalid.", reason="not_authenticated")
    return None
