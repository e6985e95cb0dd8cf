"""Admin users: ``GET /admin/users`` and ``PUT /admin/users/{user_id}`` (wire contract §1.5, DECISIONS.md "Admin").

A signed-in site admin is admitted. For the reference's admin panel, ``X-Admin-Password`` is accepted too,
without a login, when ``ADMIN_PANEL_ENABLED`` is on and ``ADMIN_PANEL_PASSWORD`` is set (no default
password; constant-time compare). The handlers are marked public so that header-only path gets past the
middleware; ``require_admin`` then answers 401 to a caller with neither credential.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from gofannon.errors import Forbidden, TooManyRequests, Unauthorized, Unprocessable
from gofannon.models.user import AdminUserUpdate
from gofannon.services import ratelimit, users
from gofannon.services.identity import SESSION_COOKIE
from gofannon.web.common import api_doc, json_response, kernel_of, optional_identity, parse_body, public

routes = web.RouteTableDef()

ADMIN_PASSWORD_HEADER = "X-Admin-Password"
MAX_USER_ID = 256
MAX_PASSWORD_FAILURES = 10


def password_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


async def require_admin(request: web.Request) -> str:
    """Who is acting as admin (a uid, or ``admin-panel`` for the password path); 401/403 otherwise.

    Wrong passwords are counted per client address (``MAX_PASSWORD_FAILURES`` a minute, in the shared
    store); past that every password attempt from the address answers 429 until the minute is over, so the
    password cannot be guessed at network speed.
    """
    ident = optional_identity(request)
    if ident is not None and ident.is_site_admin:
        return ident.uid
    settings = kernel_of(request).settings
    given = request.headers.get(ADMIN_PASSWORD_HEADER)
    if given is not None:
        if not settings.admin_panel_enabled:
            raise Forbidden("Admin panel is disabled")
        kernel = kernel_of(request)
        limit_key = f"admin_password_failures:{request.remote or 'unknown'}"
        if await ratelimit.exhausted(kernel, limit_key, MAX_PASSWORD_FAILURES):
            raise TooManyRequests("Too many wrong admin passwords; try again in a minute", headers={"Retry-After": "60"})
        expected = settings.admin_panel_password
        if not expected or not password_matches(given, expected):
            await ratelimit.admit(kernel, limit_key, MAX_PASSWORD_FAILURES)
            kernel.record("admin_password_rejected", "wrong X-Admin-Password", level="WARNING",
                          metadata={"client_host": request.remote})
            raise Unauthorized("Invalid admin password")
        return "admin-panel"
    if ident is not None:
        raise Forbidden("Site admin access required")
    if request.cookies.get(SESSION_COOKIE):
        raise Unauthorized("Session expired or invalid", reason="session_expired")
    raise Unauthorized("Not authenticated. Session cookie missing or invalid.", reason="not_authenticated")


@routes.get("/admin/users")
@public
@api_doc(summary="Every User (site admin, or X-Admin-Password when the admin panel is enabled)", tags=["admin"])
async def list_users(request: web.Request) -> web.Response:
    await require_admin(request)
    return json_response(await users.list_users(kernel_of(request)))


@routes.put("/admin/users/{user_id}")
@public
@api_doc(summary="Edit a user's allowance, reset date or remaining spend (creates the user when unknown)",
         body=AdminUserUpdate, tags=["admin"])
async def update_user(request: web.Request) -> web.Response:
    actor = await require_admin(request)
    user_id = request.match_info["user_id"]
    if not user_id.strip() or len(user_id) > MAX_USER_ID:
        raise Unprocessable([{"type": "string_too_long", "loc": ["path", "user_id"],
                              "msg": f"user_id must be 1 to {MAX_USER_ID} characters", "input": user_id[:64]}])
    body = await parse_body(request, AdminUserUpdate)
    kernel = kernel_of(request)
    doc = await users.admin_update(kernel, user_id, monthly_allowance=body.monthly_allowance,
                                   allowance_reset_date=body.allowance_reset_date,
                                   spend_remaining=body.spend_remaining)
    kernel.record("admin_user_update", f"{actor} updated {user_id}", user_id=actor,
                  metadata={"target": user_id, "changes": body.model_dump(by_alias=True, exclude_none=True)})
    return json_response(doc)
