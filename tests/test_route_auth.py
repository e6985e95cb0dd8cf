"""Every route of the running app, walked from its router: non-public routes refuse anonymous callers
with 401, and every /admin route refuses a signed-in non-admin with 403.

Written against whatever the router holds when it runs, so routes added later are covered too.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from gofannon.web.common import is_public

_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


def _routes(app: web.Application) -> list[tuple[str, str, Any]]:
    """(method, concrete path, handler) of every API route, placeholders filled with a sample value."""
    out = []
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS", "*"):
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        template = info.get("formatter") or info.get("path")
        if not template:
            continue  # static file directories
        path = _PARAM.sub(lambda m: "sample" if m.group(1) != "user_id" else "dev_stub:sample", template)
        out.append((route.method, path, route.handler))
    return out


def _is_admin(path: str) -> bool:
    return path == "/admin" or path.startswith("/admin/")


async def test_every_non_public_route_answers_401_without_credentials(client: Any) -> None:
    checked = []
    app = client.server.app
    for method, path, handler in _routes(app):
        if is_public(handler) and not _is_admin(path):
            continue
        async with client.request(method, path) as r:
            assert r.status == 401, f"{method} {path} answered {r.status}: {await r.text()}"
            assert r.headers.get("X-Auth-Reason") == "not_authenticated", f"{method} {path}"
            # the OpenAI-compatible API answers in OpenAI's error shape (DECISIONS.md), the rest {"detail"}
            assert ("error" if path.startswith("/v1/") else "detail") in await r.json()
        checked.append(f"{method} {path}")
    assert "GET /users/me" in checked and "GET /admin/users" in checked and len(checked) >= 10


async def test_every_admin_route_answers_403_to_a_signed_in_non_admin(client: Any) -> None:
    await client.login("alice")
    admin_routes = [(m, p) for m, p, _h in _routes(client.server.app) if _is_admin(p)]
    assert ("GET", "/admin/users") in admin_routes
    for method, path in admin_routes:
        async with client.request(method, path, json={}) as r:
            assert r.status == 403, f"{method} {path} answered {r.status}: {await r.text()}"


async def test_an_unknown_session_cookie_answers_session_expired_on_every_non_public_route(client: Any) -> None:
    client.session.cookie_jar.update_cookies({"gofannon_sid": "expired-or-forged"})
    for method, path, handler in _routes(client.server.app):
        if is_public(handler) and not _is_admin(path):
            continue
        async with client.request(method, path) as r:
            assert r.status == 401, f"{method} {path}"
            assert r.headers.get("X-Auth-Reason") == "session_expired", f"{method} {path}"
