"""Browser login: ``/auth/*`` (providers, login, dev-stub picker, callback, me, logout, refresh)."""

from __future__ import annotations

import html
import secrets
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from gofannon.errors import BadRequest, NotFound, Unauthorized, UpstreamError, Unprocessable
from gofannon.services import sessions
from gofannon.services.auth_config import auth_state
from gofannon.services.identity import SESSION_COOKIE
from gofannon.timeutil import now_iso
from gofannon.web.common import api_doc, json_response, kernel_of, optional_identity, public, public_origin

routes = web.RouteTableDef()

STATE_COOKIE = "gofannon_auth_state"
RETURN_COOKIE = "gofannon_return_to"
STATE_COLLECTION = "auth_login_states"
STATE_TTL_S = 600


def _backends(request: web.Request) -> dict[str, Any]:
    backends = auth_state(kernel_of(request)).backends
    if not backends:
        raise NotFound("Not Found")
    return backends


def _backend(request: web.Request, provider_type: str) -> Any:
    backend = _backends(request).get(provider_type)
    if backend is None:
        raise NotFound(f"Unknown provider: {provider_type}")
    return backend


def _cookie_flags(request: web.Request) -> dict[str, Any]:
    return {"httponly": True, "samesite": "Lax", "secure": request.secure, "path": "/"}


def _redirect_uri(request: web.Request, provider_type: str) -> str:
    return f"{public_origin(request)}/auth/callback/{provider_type}"


def safe_return_to(frontend_url: str, value: str | None, own_origin: str | None = None) -> str:
    """Where to send the browser after login: a relative path or a URL on FRONTEND_URL's origin, or on the
    kernel's own origin (``own_origin``: the OAuth authorization step of /mcp returns to the kernel)."""
    base = frontend_url.rstrip("/")
    front = urlsplit(base)
    if not value:
        return base + "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or value.startswith("//") or "\\" in value:
        origins = {(front.scheme, front.netloc)}
        if own_origin:
            own = urlsplit(own_origin)
            origins.add((own.scheme, own.netloc))
        if parts.scheme in ("http", "https") and (parts.scheme, parts.netloc) in origins:
            return value
        return base + "/"
    path = value if value.startswith("/") else "/" + value
    return base + path


@routes.get("/auth/providers")
@public
@api_doc(summary="Enabled login providers", tags=["auth"])
async def providers(request: web.Request) -> web.Response:
    state = auth_state(kernel_of(request))
    items = [
        {"type": t, "displayName": b.display_name, "icon": b.icon}
        for t, b in sorted(_backends(request).items())
    ]
    return json_response({"providers": items, "legacyFirebaseEnabled": state.config.legacy_firebase_enabled})


@routes.get("/auth/login/{provider_type}")
@public
@api_doc(summary="Start a browser login (302 to the provider)", tags=["auth"])
async def login(request: web.Request) -> web.StreamResponse:
    provider_type = request.match_info["provider_type"]
    backend = _backend(request, provider_type)
    kernel = kernel_of(request)
    state = secrets.token_hex(24)
    login_data: dict[str, Any] = {}
    redirect_uri = _redirect_uri(request, provider_type)
    url = await backend.authorize_url(kernel, request, state=state, redirect_uri=redirect_uri, login=login_data)
    await kernel.store.put(STATE_COLLECTION, state, {"type": provider_type, "login": login_data, "createdAt": now_iso()})
    response = web.HTTPFound(url)
    flags = _cookie_flags(request)
    response.set_cookie(STATE_COOKIE, state, max_age=STATE_TTL_S, **flags)
    return_to = request.query.get("return_to")
    if return_to:
        response.set_cookie(RETURN_COOKIE, return_to, max_age=STATE_TTL_S, **flags)
    return response


@routes.get("/auth/dev-stub-picker")
@public
@api_doc(summary="Dev login: pick a configured user", tags=["auth"])
async def dev_stub_picker(request: web.Request) -> web.Response:
    backend: Any = auth_state(kernel_of(request)).backends.get("dev_stub")
    if backend is None:
        raise NotFound("Not Found")
    state = request.query.get("state", "")
    items = []
    for uid in backend.user_ids():
        href = "/auth/callback/dev_stub?" + urlencode({"code": uid, "state": state})
        items.append(f'<li><a href="{html.escape(href)}">{html.escape(uid)}</a></li>')
    if not items:
        return web.Response(status=500, text="<p>No dev users configured.</p>", content_type="text/html")
    page = (
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Dev login</title></head><body>"
        "<h1>Sign in as</h1><ul>" + "".join(items) + "</ul></body></html>"
    )
    return web.Response(text=page, content_type="text/html")


def _denied(reason: str) -> web.Response:
    page = (
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Login denied</title></head><body>"
        f"<h1>Login denied</h1><p>{html.escape(reason)}</p></body></html>"
    )
    return web.Response(status=403, text=page, content_type="text/html")


@routes.get("/auth/callback/{provider_type}")
@public
@api_doc(summary="Finish a browser login: creates the session and redirects", tags=["auth"])
async def callback(request: web.Request) -> web.StreamResponse:
    provider_type = request.match_info["provider_type"]
    backend = _backend(request, provider_type)
    kernel = kernel_of(request)
    code = request.query.get("code")
    if code is None:
        raise Unprocessable([{"type": "missing", "loc": ["query", "code"], "msg": "Field required", "input": None}])
    cookie_state = request.cookies.get(STATE_COOKIE)
    if not cookie_state:
        raise BadRequest("Missing state cookie; possible CSRF")
    state = request.query.get("state")
    if state is not None and state != cookie_state:
        raise BadRequest("State mismatch; possible CSRF")
    saved = await kernel.store.get(STATE_COLLECTION, cookie_state)
    if saved is None or saved.get("type") != provider_type or sessions.expired(
        saved.get("createdAt"), sessions.naive_utc_now(), older_than=timedelta(seconds=STATE_TTL_S)
    ):
        raise BadRequest("Login state expired or unknown; start the login again")
    if not await kernel.store.delete(STATE_COLLECTION, cookie_state):
        raise BadRequest("Login state expired or unknown; start the login again")  # used by a parallel callback
    try:
        ext = await backend.exchange(
            kernel, request, code=code, redirect_uri=_redirect_uri(request, provider_type), login=saved.get("login") or {}
        )
    except Exception as exc:  # noqa: BLE001 - the provider said no, or could not be reached
        raise UpstreamError(f"Provider exchange failed: {exc}") from None
    config = auth_state(kernel).config
    is_admin = ext.is_site_admin or ext.uid in config.site_admins
    if ext.deny_reason and not is_admin:
        return _denied(ext.deny_reason)
    from gofannon.services import workspaces

    # Invitations are accepted before the membership check: a workspace made here grants access too.
    if (ext.extra.get("claims") or {}).get("email_verified") is not False:
        await workspaces.accept_invitations(kernel, ext.uid, ext.email, ext.display_name)
    if not is_admin and not ext.workspaces and not await workspaces.has_manual_membership(kernel, ext.uid):
        return _denied("No active workspace memberships grant access to this platform.")
    sid, _doc = await sessions.create(kernel, ext, ttl_hours=config.session_ttl_hours, is_site_admin=is_admin)
    target = safe_return_to(kernel.settings.frontend_url, request.cookies.get(RETURN_COOKIE),
                            own_origin=public_origin(request))
    response = web.HTTPFound(target)
    flags = _cookie_flags(request)
    response.set_cookie(SESSION_COOKIE, sid, max_age=int(config.session_ttl_hours * 3600), **flags)
    response.del_cookie(STATE_COOKIE, path="/")
    response.del_cookie(RETURN_COOKIE, path="/")
    kernel.record("user_login", f"{ext.uid} signed in", user_id=ext.uid, metadata={"provider": provider_type})
    return response


@routes.get("/auth/me")
@public
@api_doc(summary="The signed-in user (SessionUser)", tags=["auth"])
async def me(request: web.Request) -> web.Response:
    ident = optional_identity(request)
    if ident is None:
        raise Unauthorized("Not authenticated")
    from gofannon.services import workspaces

    user = ident.session_user()
    user["workspaces"] = await workspaces.memberships(kernel_of(request), ident)
    return json_response(user)


@routes.post("/auth/logout")
@public
@api_doc(summary="End the session", status=204, tags=["auth"])
async def logout(request: web.Request) -> web.Response:
    sid = request.cookies.get(SESSION_COOKIE)
    if sid:
        await sessions.revoke(kernel_of(request), sid)
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


@routes.post("/auth/refresh-workspaces")
@public
@api_doc(summary="Re-read workspace memberships and the site-admin flag", tags=["auth"])
async def refresh_workspaces(request: web.Request) -> web.Response:
    kernel = kernel_of(request)
    ident = optional_identity(request)
    if ident is None or ident.session_id is None:
        raise Unauthorized("Not authenticated")
    return json_response(await sessions.refresh(kernel, ident))
