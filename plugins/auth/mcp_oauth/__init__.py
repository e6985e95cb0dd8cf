"""Auth plugin ``mcp_oauth``: the kernel as the OAuth 2.1 authorization server of its own ``/mcp`` resource.

What MCP clients look for (MCP authorization, revision 2025-06-18): protected-resource metadata (RFC 9728),
authorization-server metadata (RFC 8414), dynamic client registration (RFC 7591), the authorization code
grant with PKCE S256 and resource indicators (RFC 8707), refresh tokens with rotation, and revocation
(RFC 7009). The authorization step is the platform's own browser login followed by a consent page.

Routes (docs/auth.md, "Signing in from an MCP client"):

- ``GET /.well-known/oauth-protected-resource`` (also ``.../oauth-protected-resource/mcp``)
- ``GET /.well-known/oauth-authorization-server``
- ``POST /oauth/register``, ``GET|POST /oauth/authorize``, ``POST /oauth/token``, ``POST /oauth/revoke``

It also registers a request authenticator for the access tokens it issues (``gfo_...``): such a token is
valid only on the resource it is bound to (``<base>/mcp``). authlib is imported on the first OAuth request
(``.server``), not at start-up; grants live in the token store (``gofannon.services.oauth_server``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlencode

from aiohttp import web

from gofannon import hookimpl
from gofannon.auth import Identity
from gofannon.errors import Unauthorized
from gofannon.jsontext import loads
from gofannon.services import oauth_server
from gofannon.settings import DEV_ENVS
from gofannon.web.common import api_doc, dumps_bytes, kernel_of, optional_identity, public_origin

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel

log = logging.getLogger("gofannon.mcp_oauth")

#: Client registrations one address may make per minute.
REGISTER_PER_MINUTE = 20
MAX_REGISTRATION_BYTES = 64 * 1024
SWEEP_INTERVAL_S = 600.0
#: Consent-form fields carried through as hidden inputs (besides the CSRF token).
AUTHORIZE_FIELDS = ("response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge",
                    "code_challenge_method", "resource")
CSRF_FIELD = "csrf_token"


def base_url(request: web.Request) -> str:
    """The kernel's origin as this request's client sees it (the /mcp transport uses the same)."""
    return public_origin(request)


def _metadata_url(request: web.Request) -> str:
    return base_url(request) + "/.well-known/oauth-protected-resource"


def _bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


# -- the access-token authenticator -----------------------------------------------------------------
class OAuthTokenAuthenticator:
    """``Authorization: Bearer gfo_...``: an access token this server issued, on the resource it is bound to."""

    kind = "request"
    name = "mcp_oauth"

    async def authenticate(self, kernel: "Kernel", request: web.Request) -> Identity | None:
        token = _bearer(request)
        if token is None or not oauth_server.looks_like_token(token):
            return None
        ident = await oauth_server.resolve(kernel, token)
        if ident is None:
            raise self._invalid(request, "Invalid, expired or revoked OAuth access token")
        resource = str((ident.token or {}).get("resource") or "")
        here = base_url(request) + request.path
        if here.rstrip("/") != resource.rstrip("/"):
            raise self._invalid(request, f"This OAuth access token is valid only for {resource}")
        return ident

    @staticmethod
    def _invalid(request: web.Request, message: str) -> Unauthorized:
        challenge = (f'Bearer resource_metadata="{_metadata_url(request)}", error="invalid_token", '
                     f'error_description="{message}"')
        return Unauthorized(message, reason="not_authenticated", headers={"WWW-Authenticate": challenge})


# -- helpers for the handlers -----------------------------------------------------------------------
def _oauth_json(status: int, body: Any, headers: list[tuple[str, str]] | None = None) -> web.Response:
    response = web.Response(status=status, body=dumps_bytes(body if body != "" else {}),
                            content_type="application/json", charset="utf-8")
    for key, value in headers or []:
        if key.lower() != "content-type":
            response.headers[key] = value
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


def _oauth_error(status: int, error: str, description: str, **extra: str) -> web.Response:
    return _oauth_json(status, {"error": error, "error_description": description}, list(extra.items()))


def _context(request: web.Request) -> Any:
    from gofannon_plugins.auth.mcp_oauth.server import Context

    return Context(base=base_url(request), dev=kernel_of(request).settings.app_env.lower() in DEV_ENVS)


async def _form_pairs(request: web.Request) -> list[tuple[str, str]] | web.Response:
    if request.content_type != "application/x-www-form-urlencoded":
        return _oauth_error(400, "invalid_request", "The body must be application/x-www-form-urlencoded")
    try:
        form = await request.post()
    except ValueError:
        return _oauth_error(400, "invalid_request", "The form body could not be read")
    return [(k, v) for k, v in form.items() if isinstance(v, str)]


def _csrf(kernel: "Kernel", session_id: str, client_id: str) -> str:
    from gofannon.services import secrets

    return secrets.get(kernel).mac("mcp-oauth-consent", f"{session_id}\n{client_id}")


# -- metadata ---------------------------------------------------------------------------------------
@api_doc(summary="Protected resource metadata of /mcp (RFC 9728)", tags=["oauth"])
async def protected_resource(request: web.Request) -> web.Response:
    from gofannon_plugins.auth.mcp_oauth.server import resource_metadata

    return _oauth_json(200, resource_metadata(base_url(request)), [("Cache-Control", "public, max-age=300")])


@api_doc(summary="OAuth authorization server metadata (RFC 8414)", tags=["oauth"])
async def authorization_server(request: web.Request) -> web.Response:
    from gofannon_plugins.auth.mcp_oauth.server import server_metadata

    return _oauth_json(200, server_metadata(base_url(request)), [("Cache-Control", "public, max-age=300")])


# -- registration -----------------------------------------------------------------------------------
@api_doc(summary="Register an OAuth client dynamically (RFC 7591)", tags=["oauth"])
async def register_client(request: web.Request) -> web.Response:
    from gofannon.services import ratelimit
    from gofannon_plugins.auth.mcp_oauth import server as srv

    kernel = kernel_of(request)
    if not await ratelimit.admit(kernel, f"mcp-oauth-register:{request.remote}", REGISTER_PER_MINUTE):
        return _oauth_error(429, "temporarily_unavailable", "Too many client registrations; try again in a minute",
                            **{"Retry-After": "60"})
    raw = await request.read()
    if len(raw) > MAX_REGISTRATION_BYTES:
        return _oauth_error(413, "invalid_client_metadata", f"Client metadata over {MAX_REGISTRATION_BYTES} bytes")
    try:
        data = loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict) or not data:
        return _oauth_error(400, "invalid_client_metadata", "The body must be a JSON object of client metadata")
    ctx = _context(request)
    server = srv.build_server(ctx)
    status, body, headers = server.create_endpoint_response(
        "client_registration", srv.json_request("POST", str(request.url), request.headers, data))
    if status == 201:
        client_id, doc = ctx.effects["new_client"]
        await oauth_server.save_client(kernel, client_id, doc)
        kernel.record("oauth_client_registered", f"OAuth client {client_id} registered",
                      metadata={"clientId": client_id, "clientName": doc.get("client_name")})
    return _oauth_json(status, body, headers)


# -- authorization ----------------------------------------------------------------------------------
def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})


def _unreadable(pairs: list[tuple[str, str]]) -> bool:
    """Whether an authorization request carries what no OAuth parameter may (RFC 6749 Appendix A: every one
    is printable ASCII; a ``response_type`` is words of letters, digits and ``_``). authlib would echo such a
    ``response_type`` into its error and then refuse to build that error (a ValueError, not an OAuth error)."""
    for key, value in pairs:
        if key in AUTHORIZE_FIELDS and any(not " " <= ch <= "~" for ch in value):
            return True
        if key == "response_type" and not all(ch == " " or ch == "_" or ch.isascii() and ch.isalnum() for ch in value):
            return True
    return False


def _unreadable_page() -> web.Response:
    from gofannon_plugins.auth.mcp_oauth import pages

    return pages.error("This sign-in request cannot be completed",
                       "The request carries characters no OAuth parameter may contain.", 400,
                       {"error": "invalid_request"})


def _authorize_failure(error: Any) -> web.Response:
    """An error the client may see (redirect) when its redirect URI was checked, else a page for the user."""
    from gofannon_plugins.auth.mcp_oauth import pages, server as srv

    status, _body, headers = srv.error_response(error)
    location = dict(headers).get("Location")
    if status == 302 and location:
        return _redirect(location)
    return pages.error("This sign-in request cannot be completed", error.description or error.error, 400,
                       {"error": error.error})


def _login_redirect(request: web.Request, return_to: str) -> web.Response:
    from gofannon.services.auth_config import auth_state
    from gofannon_plugins.auth.mcp_oauth import pages

    backends = auth_state(kernel_of(request)).backends
    links = [(t, getattr(b, "display_name", t), f"/auth/login/{t}?" + urlencode({"return_to": return_to}))
             for t, b in sorted(backends.items())]
    if not links:
        return pages.error("Sign-in is not configured", "No login provider is enabled on this server.", 503)
    if len(links) == 1:
        return _redirect(links[0][2])
    return pages.choose_login(links)


async def _authorize_request(request: web.Request, pairs: list[tuple[str, str]]) -> tuple[Any, Any, Any]:
    """(context, server, authlib request) with the client loaded."""
    from gofannon_plugins.auth.mcp_oauth import server as srv

    ctx = _context(request)
    client_id = next((v for k, v in pairs if k == "client_id"), None)
    ctx.client = await oauth_server.get_client(kernel_of(request), client_id)
    server = srv.build_server(ctx)
    return ctx, server, srv.form_request(request.method, str(request.url), request.headers, pairs)


@api_doc(summary="OAuth authorization: browser login, then the consent page", tags=["oauth"])
async def authorize(request: web.Request) -> web.Response:
    """GET: check the request, make sure the browser is signed in, then show the consent form."""
    from gofannon_plugins.auth.mcp_oauth import pages, server as srv

    pairs = [(k, v) for k, v in request.query.items()]
    if _unreadable(pairs):
        return _unreadable_page()
    ctx, server, oreq = await _authorize_request(request, pairs)
    try:
        server.get_consent_grant(oreq, end_user=None)
    except srv.OAuth2Error as error:
        return _authorize_failure(error)
    except ValueError:  # authlib refusing to build an error out of what the request said
        return _unreadable_page()
    ident = optional_identity(request)
    if ident is None or ident.session_id is None:
        return _login_redirect(request, base_url(request) + request.path_qs)
    client = ctx.client or {}
    data = oreq.payload.data
    fields = [(k, data[k]) for k in AUTHORIZE_FIELDS if data.get(k)]
    fields.append((CSRF_FIELD, _csrf(kernel_of(request), ident.session_id, client["_id"])))
    return pages.consent(
        client_name=client.get("client_name") or client["_id"], client_id=client["_id"],
        redirect_uri=data.get("redirect_uri") or (client.get("redirect_uris") or [""])[0],
        resource=ctx.resource, user=ident.display_name or ident.email or ident.uid,
        action=request.path, fields=fields,
    )


@api_doc(summary="Submit the consent form: redirects to the client with code and state", tags=["oauth"])
async def authorize_decision(request: web.Request) -> web.Response:
    """POST of the consent form: allow → redirect with ``code`` and ``state``; deny → ``error=access_denied``."""
    from gofannon_plugins.auth.mcp_oauth import pages, server as srv

    got = await _form_pairs(request)
    if isinstance(got, web.Response):
        return pages.error("This sign-in request cannot be completed", "The consent form was not sent as a form.")
    form = dict(got)
    pairs = [(k, v) for k, v in got if k in AUTHORIZE_FIELDS]
    ident = optional_identity(request)
    if ident is None or ident.session_id is None:  # the session ended meanwhile: sign in and ask again
        return _login_redirect(request, base_url(request) + request.path + "?" + urlencode(pairs))
    kernel = kernel_of(request)
    ctx, server, oreq = await _authorize_request(request, pairs)
    expected = _csrf(kernel, ident.session_id, str(form.get("client_id") or ""))
    if not hmac.compare_digest(str(form.get(CSRF_FIELD) or ""), expected):
        return pages.error("This sign-in request cannot be completed",
                           "The consent form was not issued to this browser session. Start again from your "
                           "application.", 403)
    decision = form.get("decision")
    if decision not in ("allow", "deny"):
        return pages.error("This sign-in request cannot be completed", "Choose Allow or Deny.")
    if _unreadable(pairs):
        return _unreadable_page()
    try:
        grant = server.get_consent_grant(oreq, end_user=ident)
    except srv.OAuth2Error as error:
        return _authorize_failure(error)
    except ValueError:  # authlib refusing to build an error out of what the request said
        return _unreadable_page()
    status, _body, headers = server.create_authorization_response(
        oreq, grant_user=ident if decision == "allow" else None, grant=grant)
    if "new_code" in ctx.effects:
        code, doc = ctx.effects["new_code"]
        await oauth_server.save_code(kernel, code, doc)
        kernel.record("oauth_consent", f"{ident.uid} allowed OAuth client {doc['clientId']}", user_id=ident.uid,
                      metadata={"clientId": doc["clientId"]})
    location = dict(headers).get("Location")
    if status != 302 or not location:
        return pages.error("This sign-in request cannot be completed", "The request was refused.")
    return _redirect(location)


# -- token and revocation ---------------------------------------------------------------------------
async def _client_form(request: web.Request) -> "web.Response | tuple[Any, list[tuple[str, str]], dict[str, str], Any]":
    """What the token and revocation endpoints start from: the form (or its error answer), and the context
    with the client the request names (``client_id``, or HTTP Basic) loaded for authlib."""
    from gofannon_plugins.auth.mcp_oauth import server as srv

    got = await _form_pairs(request)
    if isinstance(got, web.Response):
        return got
    kernel = kernel_of(request)
    form = dict(got)
    ctx = _context(request)
    ctx.client = await oauth_server.get_client(kernel, form.get("client_id") or srv.basic_client_id(request.headers))
    return kernel, got, form, ctx


@api_doc(summary="OAuth token endpoint: authorization_code (PKCE S256) and refresh_token (rotated)", tags=["oauth"])
async def token(request: web.Request) -> web.Response:
    from gofannon_plugins.auth.mcp_oauth import server as srv

    started = await _client_form(request)
    if isinstance(started, web.Response):
        return started
    kernel, got, form, ctx = started
    grant_type = form.get("grant_type")
    if grant_type == "authorization_code":
        ctx.code = await oauth_server.get_code(kernel, form.get("code"))
        ctx.grant_id = oauth_server.new_grant_id()
    elif grant_type == "refresh_token":
        ctx.grant = await oauth_server.get_grant(kernel, form.get("refresh_token"))
        ctx.grant_id = ctx.grant["_id"] if ctx.grant else None
    server = srv.build_server(ctx)
    status, body, headers = server.create_token_response(
        srv.form_request("POST", str(request.url), request.headers, got))
    if "end_grant" in ctx.effects:  # a replayed code or rotated-out refresh token
        await oauth_server.end_grant(kernel, ctx.effects["end_grant"])
        kernel.record("oauth_replay", f"A used OAuth credential was presented again; grant {ctx.effects['end_grant']} "
                      "ended", level="WARNING", metadata={"grantId": ctx.effects["end_grant"]})
    if status != 200:
        return _oauth_json(status, body, headers)
    issued = ctx.effects["token"]
    if grant_type == "authorization_code":
        assert ctx.code is not None and ctx.client is not None and ctx.grant_id is not None
        if not await oauth_server.mark_code_used(kernel, ctx.code, ctx.grant_id):
            return _oauth_error(400, "invalid_grant", "The authorization code was already used")
        doc = oauth_server.grant_document(code=ctx.code, client=ctx.client, access=issued["access_token"],
                                          refresh=issued.get("refresh_token"), scope=issued.get("scope"))
        await oauth_server.save_new_grant(kernel, ctx.grant_id, doc)
        await oauth_server.mark_client_used(kernel, ctx.client["_id"])
        kernel.record("oauth_token_issued", f"OAuth grant {ctx.grant_id} for client {ctx.client['_id']}",
                      user_id=doc["ownerId"], metadata={"grantId": ctx.grant_id, "clientId": ctx.client["_id"]})
    else:
        assert ctx.grant is not None
        rotated = oauth_server.rotated_document(ctx.grant, access=issued["access_token"],
                                                refresh=issued.get("refresh_token"))
        if not await oauth_server.replace_grant(kernel, ctx.grant, rotated):
            return _oauth_error(400, "invalid_grant", "The refresh token was already used")
    return _oauth_json(status, body, headers)


@api_doc(summary="Revoke an OAuth access or refresh token (RFC 7009)", tags=["oauth"])
async def revoke(request: web.Request) -> web.Response:
    from gofannon_plugins.auth.mcp_oauth import server as srv

    started = await _client_form(request)
    if isinstance(started, web.Response):
        return started
    kernel, got, form, ctx = started
    ctx.grant = await oauth_server.get_grant(kernel, form.get("token"))
    server = srv.build_server(ctx)
    status, body, headers = server.create_endpoint_response(
        "revocation", srv.form_request("POST", str(request.url), request.headers, got))
    revoked = ctx.effects.get("revoke")
    if status == 200 and revoked is not None:
        if revoked.kind == "refresh":
            await oauth_server.end_grant(kernel, revoked.doc["_id"])
        else:
            await oauth_server.revoke_access(kernel, revoked.doc["_id"], oauth_server.secret_hash(revoked.token))
    return _oauth_json(status, body, headers)


# -- housekeeping -----------------------------------------------------------------------------------
async def _sweep_forever(kernel: "Kernel") -> None:
    while True:
        await asyncio.sleep(SWEEP_INTERVAL_S)
        try:
            await oauth_server.sweep(kernel)
        except Exception:  # noqa: BLE001 - try again next time
            log.exception("OAuth sweep failed")


# -- hooks ------------------------------------------------------------------------------------------
@hookimpl
def register_auth_backends(register: Callable[..., None], settings: Any) -> None:
    register(OAuthTokenAuthenticator())


@hookimpl
def register_routes(register: Callable[..., None], settings: Any) -> None:
    register("GET", "/.well-known/oauth-protected-resource", protected_resource, public=True)
    register("GET", "/.well-known/oauth-protected-resource/mcp", protected_resource, public=True)
    register("GET", "/.well-known/oauth-authorization-server", authorization_server, public=True)
    register("POST", "/oauth/register", register_client, public=True)
    register("GET", "/oauth/authorize", authorize, public=True)
    register("POST", "/oauth/authorize", authorize_decision, public=True)
    register("POST", "/oauth/token", token, public=True)
    register("POST", "/oauth/revoke", revoke, public=True)



@hookimpl
def gofannon_startup(app: web.Application) -> None:
    from gofannon.web.keys import KERNEL

    kernel = app[KERNEL]
    if kernel.role == "api":
        kernel.spawn(_sweep_forever(kernel), name="mcp-oauth-sweeper")
