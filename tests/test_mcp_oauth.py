"""The OAuth 2.1 authorization server of /mcp (plugin ``mcp_oauth``): metadata, registration, the browser step
(dev_stub login + consent form), tokens with PKCE, refresh rotation, revocation; with the official MCP SDK's
OAuth client and over plain HTTP."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import aiohttp
import httpx2
import pytest
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from conftest import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthMetadata,
    OAuthToken,
    ProtectedResourceMetadata,
)
from test_mcp_server import ECHO, deploy

LOOPBACK_CB = "http://127.0.0.1:8765/callback"


# -- helpers: PKCE, a browser, the flow over plain HTTP ----------------------------------------------
def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


class Browser:
    """A user agent with its own cookie jar that signs in with dev_stub and answers the consent form."""

    def __init__(self, origin: str, uid: str = "alice") -> None:
        self.origin, self.uid = origin, uid
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.last_page = ""

    async def close(self) -> None:
        await self.session.close()

    async def open(self, url: str) -> tuple[str | None, str]:
        """Follow the kernel's redirects (and pick the dev user on the login page) until a page is shown or
        the browser is sent away from the kernel: ``(location outside the kernel, page html)``."""
        url = urljoin(self.origin, url)
        for _ in range(12):
            async with self.session.get(url, allow_redirects=False) as r:
                if r.status in (301, 302, 303, 307):
                    url = urljoin(url, r.headers["Location"])
                    if not url.startswith(self.origin):
                        return url, ""
                    continue
                page = await r.text()
                self.last_page = page
                if "<h1>Sign in as</h1>" in page:
                    links = [html.unescape(h) for h in re.findall(r'href="([^"]+)"', page)]
                    url = urljoin(url, next(h for h in links if f"code={self.uid}&" in h))
                    continue
                return None, page
        raise AssertionError("too many redirects")

    async def consent(self, page: str, decision: str = "allow", **override: str) -> tuple[int, str, str]:
        """Submit the consent form shown on ``page``: (status, Location, body)."""
        form = re.search(r'<form method="post" action="([^"]+)"', page)
        assert form is not None, page
        action = html.unescape(form.group(1))
        fields = {html.unescape(k): html.unescape(v)
                  for k, v in re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', page)}
        fields.update(override)
        fields["decision"] = decision
        async with self.session.post(urljoin(self.origin, action), data=fields, allow_redirects=False) as r:
            return r.status, r.headers.get("Location", ""), await r.text()


async def register(client: Client, **metadata: Any) -> tuple[int, dict[str, Any]]:
    body = {"client_name": "Test client", "redirect_uris": [LOOPBACK_CB], "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"], **metadata}
    async with client.post("/oauth/register", json=body) as r:
        return r.status, await r.json()


def authorize_url(client: Client, client_id: str, challenge: str, **params: str) -> str:
    query = {"response_type": "code", "client_id": client_id, "redirect_uri": LOOPBACK_CB, "state": "st-123",
             "code_challenge": challenge, "code_challenge_method": "S256", "resource": client.url("/mcp"), **params}
    return "/oauth/authorize?" + urlencode({k: v for k, v in query.items() if v is not None})


def redirect_params(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def token_request(client: Client, auth: aiohttp.BasicAuth | None = None,
                        **form: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as plain:  # the client application: no cookies
        async with plain.post(client.url("/oauth/token"), data=form, auth=auth) as r:
            assert r.headers["Content-Type"].startswith("application/json")
            assert r.headers.get("Cache-Control") == "no-store"
            return r.status, await r.json()


async def sign_in(client: Client, uid: str = "alice", **reg: Any) -> dict[str, Any]:
    """Register a public client, approve it in a browser as ``uid``, exchange the code: the token answer."""
    status, registered = await register(client, **reg)
    assert status == 201, registered
    verifier, challenge = pkce()
    browser = Browser(client.url("/"), uid)
    try:
        away, page = await browser.open(authorize_url(client, registered["client_id"], challenge))
        assert away is None, away
        status, location, _ = await browser.consent(page)
    finally:
        await browser.close()
    assert status == 302
    got = redirect_params(location)
    status, tokens = await token_request(client, grant_type="authorization_code", code=got["code"],
                                         redirect_uri=LOOPBACK_CB, client_id=registered["client_id"],
                                         code_verifier=verifier, resource=client.url("/mcp"))
    assert status == 200, tokens
    return {**tokens, "client_id": registered["client_id"]}


async def mcp_status(client: Client, access_token: str) -> tuple[int, str]:
    """POST an MCP initialize with the token: the HTTP status and the WWW-Authenticate challenge."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "test", "version": "1"}}}
    headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json, text/event-stream"}
    async with aiohttp.ClientSession() as plain:
        async with plain.post(client.url("/mcp"), json=body, headers=headers) as r:
            return r.status, r.headers.get("WWW-Authenticate", "")


# -- metadata ---------------------------------------------------------------------------------------
async def test_metadata_names_the_mcp_resource_and_this_server_as_its_authorization_server(client: Client) -> None:
    base = client.url("/").rstrip("/")
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
        async with client.get(path) as r:
            assert r.status == 200
            prm = await r.json()
        assert prm["resource"] == base + "/mcp"
        assert prm["authorization_servers"] == [base]
        assert prm["bearer_methods_supported"] == ["header"] and prm["scopes_supported"]
        ProtectedResourceMetadata.model_validate(prm)
    async with client.get("/.well-known/oauth-authorization-server") as r:
        assert r.status == 200
        meta = await r.json()
    AuthorizationServerMetadata(meta).validate()  # authlib's RFC 8414 checks
    OAuthMetadata.model_validate(meta)  # what the MCP SDK parses
    assert meta["issuer"] == base
    assert meta["authorization_endpoint"] == base + "/oauth/authorize"
    assert meta["token_endpoint"] == base + "/oauth/token"
    assert meta["registration_endpoint"] == base + "/oauth/register"
    assert meta["revocation_endpoint"] == base + "/oauth/revoke"
    assert meta["response_types_supported"] == ["code"]
    assert meta["grant_types_supported"] == ["authorization_code", "refresh_token"]
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert set(meta["token_endpoint_auth_methods_supported"]) == {"none", "client_secret_post", "client_secret_basic"}


# -- the official MCP SDK's OAuth client -------------------------------------------------------------
class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


async def test_the_mcp_sdk_signs_in_through_login_and_consent_then_lists_tools(serve: Any) -> None:
    alice = await serve()
    await alice.login("alice")
    await deploy(alice, name="Echo", friendlyName="echo", description="Repeats", code=ECHO,
                 inputSchema={"inputText": "string"}, outputSchema={"outputText": "string"})
    browser = Browser(alice.url("/"), "alice")  # a different cookie jar: the browser signs in on its own
    seen: dict[str, str] = {}

    async def redirect_handler(url: str) -> None:
        seen["authorize"] = url

    async def callback_handler() -> AuthorizationCodeResult:
        away, page = await browser.open(seen["authorize"])
        assert away is None and 'name="decision" value="allow"' in page
        assert "Claude-ish &lt;desktop&gt;" in page  # the client's name, escaped
        status, location, _ = await browser.consent(page)
        assert status == 302 and location.startswith(LOOPBACK_CB)
        got = redirect_params(location)
        return AuthorizationCodeResult(code=got["code"], state=got.get("state"))

    storage = MemoryStorage()
    auth = OAuthClientProvider(
        server_url=alice.url("/mcp"),
        client_metadata=OAuthClientMetadata(client_name="Claude-ish <desktop>", redirect_uris=[LOOPBACK_CB],
                                            grant_types=["authorization_code", "refresh_token"]),
        storage=storage, redirect_handler=redirect_handler, callback_handler=callback_handler,
    )

    async def list_tools() -> list[str]:
        async with httpx2.AsyncClient(auth=auth, timeout=httpx2.Timeout(30)) as http:
            async with streamable_http_client(alice.url("/mcp"), http_client=http) as (read, write):
                async with ClientSession(read, write) as session:
                    if session.initialize_result is None:
                        await session.initialize()
                    return [t.name for t in (await session.list_tools()).tools]

    try:
        assert await list_tools() == ["echo"]
    finally:
        await browser.close()
    assert storage.tokens is not None and storage.tokens.access_token.startswith("gfo_")
    assert storage.tokens.refresh_token and storage.tokens.refresh_token.startswith("gfr_")
    assert "resource=" in seen["authorize"] and "code_challenge_method=S256" in seen["authorize"]

    # An hour later the SDK refreshes by itself (no browser): a new pair, the old access token is dead.
    first = storage.tokens
    seen.clear()
    auth.context.token_expiry_time = 1.0  # what the SDK computed from expires_in has passed
    assert await list_tools() == ["echo"]
    assert seen == {}  # no new authorization: the refresh token did it
    assert storage.tokens.access_token != first.access_token and storage.tokens.refresh_token != first.refresh_token
    assert (await mcp_status(alice, first.access_token))[0] == 401

    # The grant is one of alice's tokens, with the client's name; revoking it there ends access and refresh.
    async with alice.get("/users/me/tokens") as r:
        listed = [t for t in (await r.json())["tokens"] if t.get("kind") == "oauth"]
    assert len(listed) == 1 and listed[0]["clientName"] == "Claude-ish <desktop>"
    assert listed[0]["resource"] == alice.url("/mcp") and "token" not in listed[0]
    assert (await mcp_status(alice, storage.tokens.access_token))[0] == 200
    async with alice.delete(f"/users/me/tokens/{listed[0]['id']}") as r:
        assert r.status == 204
    status, challenge = await mcp_status(alice, storage.tokens.access_token)
    assert status == 401 and "resource_metadata=" in challenge
    info = storage.client_info
    assert info is not None and info.token_endpoint_auth_method == "client_secret_basic" and info.client_secret
    status, body = await token_request(alice, auth=aiohttp.BasicAuth(info.client_id, info.client_secret),
                                       grant_type="refresh_token", refresh_token=storage.tokens.refresh_token)
    assert status == 400 and body["error"] == "invalid_grant"


# -- the flow over plain HTTP -----------------------------------------------------------------------
async def test_without_a_session_authorize_sends_the_browser_to_login_and_back_to_consent(client: Client) -> None:
    status, registered = await register(client)
    assert status == 201 and registered["client_id"] and "client_secret" not in registered
    assert registered["token_endpoint_auth_method"] == "none"
    _verifier, challenge = pkce()
    url = authorize_url(client, registered["client_id"], challenge)
    async with client.get(url) as r:  # no session yet
        assert r.status == 302
        login = r.headers["Location"]
    assert login.startswith("/auth/login/dev_stub?")
    assert redirect_params(login)["return_to"] == client.url(url)
    browser = Browser(client.url("/"), "bob")
    try:
        away, page = await browser.open(url)
        assert away is None
        assert '<button name="decision" value="allow">' in page and 'value="deny"' in page
        assert "Bob" in page or "bob" in page
        hidden = dict(re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', page))
        assert {"client_id", "redirect_uri", "state", "code_challenge", "code_challenge_method", "resource",
                "csrf_token"} <= set(hidden)
        status, location, _ = await browser.consent(page, decision="deny")
    finally:
        await browser.close()
    assert status == 302
    got = redirect_params(location)
    assert location.startswith(LOOPBACK_CB + "?") and got["error"] == "access_denied" and got["state"] == "st-123"
    assert "code" not in got


async def test_code_exchange_issues_tokens_bound_to_mcp_and_refresh_rotates(client: Client,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from gofannon.services import oauth_server

    tokens = await sign_in(client)
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 3600 and tokens["scope"] == "mcp"
    access, refresh = tokens["access_token"], tokens["refresh_token"]
    assert access.startswith("gfo_") and refresh.startswith("gfr_")
    assert (await mcp_status(client, access))[0] == 200
    async with aiohttp.ClientSession() as plain:  # bound to /mcp: not a key to the rest of the API
        async with plain.get(client.url("/users/me/tokens"), headers={"Authorization": f"Bearer {access}"}) as r:
            assert r.status == 401
            assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
            assert "valid only for" in (await r.json())["detail"]
        async with plain.get(client.url("/users/me/tokens"), headers={"Authorization": f"Bearer {refresh}"}) as r:
            assert r.status == 401  # a refresh token is not an access token

    status, second = await token_request(client, grant_type="refresh_token", refresh_token=refresh,
                                         client_id=tokens["client_id"], resource=client.url("/mcp"))
    assert status == 200, second
    assert second["access_token"] != access and second["refresh_token"] != refresh
    assert (await mcp_status(client, second["access_token"]))[0] == 200
    assert (await mcp_status(client, access))[0] == 401  # the old access token went with the rotation

    # Presented again at once, the rotated-out refresh token is refused and the grant stays: that is how a client's
    # retried or concurrent refresh looks (``REPLAY_GRACE``).
    status, body = await token_request(client, grant_type="refresh_token", refresh_token=refresh,
                                       client_id=tokens["client_id"])
    assert status == 400 and body["error"] == "invalid_grant"
    assert (await mcp_status(client, second["access_token"]))[0] == 200
    # Later it is a replay: refused, and it ends the whole grant.
    monkeypatch.setattr(oauth_server, "REPLAY_GRACE", timedelta(0))
    status, body = await token_request(client, grant_type="refresh_token", refresh_token=refresh,
                                       client_id=tokens["client_id"])
    assert status == 400 and body["error"] == "invalid_grant"
    assert (await mcp_status(client, second["access_token"]))[0] == 401
    status, body = await token_request(client, grant_type="refresh_token", refresh_token=second["refresh_token"],
                                       client_id=tokens["client_id"])
    assert status == 400 and body["error"] == "invalid_grant"


async def test_revocation_ends_an_access_token_or_the_whole_grant(client: Client) -> None:
    await client.login("alice")
    tokens = await sign_in(client)
    async with aiohttp.ClientSession() as plain:
        async with plain.post(client.url("/oauth/revoke"), data={"token": tokens["access_token"],
                                                                  "client_id": tokens["client_id"]}) as r:
            assert r.status == 200
    assert (await mcp_status(client, tokens["access_token"]))[0] == 401
    status, fresh = await token_request(client, grant_type="refresh_token", refresh_token=tokens["refresh_token"],
                                        client_id=tokens["client_id"])
    assert status == 200, fresh  # revoking the access token left the refresh token

    async with aiohttp.ClientSession() as plain:
        form = {"token": fresh["refresh_token"], "token_type_hint": "refresh_token", "client_id": tokens["client_id"]}
        async with plain.post(client.url("/oauth/revoke"), data=form) as r:
            assert r.status == 200
        async with plain.post(client.url("/oauth/revoke"), data=form) as r:
            assert r.status == 200  # RFC 7009: an unknown token is not an error
    assert (await mcp_status(client, fresh["access_token"]))[0] == 401
    async with client.get("/users/me/tokens") as r:
        assert [t for t in (await r.json())["tokens"] if t.get("kind") == "oauth"] == []


async def test_a_confidential_client_authenticates_with_its_secret(client: Client) -> None:
    status, registered = await register(client, token_endpoint_auth_method="client_secret_basic")
    assert status == 201 and registered["client_secret"]
    verifier, challenge = pkce()
    browser = Browser(client.url("/"))
    try:
        _, page = await browser.open(authorize_url(client, registered["client_id"], challenge))
        _, location, _ = await browser.consent(page)
    finally:
        await browser.close()
    code = redirect_params(location)["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": LOOPBACK_CB,
            "code_verifier": verifier}
    async with aiohttp.ClientSession() as plain:
        wrong = aiohttp.BasicAuth(registered["client_id"], "not-the-secret")
        async with plain.post(client.url("/oauth/token"), data=form, auth=wrong) as r:
            assert r.status == 401 and (await r.json())["error"] == "invalid_client"
            assert r.headers["WWW-Authenticate"].startswith("Basic ")  # the scheme the client used
        unknown = aiohttp.BasicAuth("no-such-client", "whatever")
        async with plain.post(client.url("/oauth/token"), data=form, auth=unknown) as r:
            assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Basic ")
        # without an Authorization header an unknown client is a 400 without a challenge (RFC 6749 5.2)
        async with plain.post(client.url("/oauth/token"), data={**form, "client_id": "no-such-client"}) as r:
            assert r.status == 400 and (await r.json())["error"] == "invalid_client"
            assert "WWW-Authenticate" not in r.headers
        async with plain.post(client.url("/oauth/token"), data={**form, "client_id": registered["client_id"],
                                                                "client_secret": "not-the-secret"}) as r:
            assert r.status == 401 and (await r.json())["error"] == "invalid_client"  # known client, wrong secret
            assert r.headers["WWW-Authenticate"].startswith("Basic ")
        right = aiohttp.BasicAuth(registered["client_id"], registered["client_secret"])
        async with plain.post(client.url("/oauth/token"), data=form, auth=right) as r:
            assert r.status == 200, await r.text()


# -- bad input --------------------------------------------------------------------------------------
async def test_registration_refuses_unsafe_redirect_uris_and_bad_metadata(serve: Any) -> None:
    prod = await serve(APP_ENV="production")
    for uris in (["http://evil.example/cb"], ["javascript:alert(1)"], ["JavaScript:alert(1)"], ["data:text/html,hi"],
                 ["file:///etc/passwd"], ["/relative/cb"], ["https://app.example/cb#frag"], [], None,
                 ["https://user@app.example/cb"]):
        status, body = await register(prod, redirect_uris=uris)
        assert status == 400 and body["error"] in ("invalid_redirect_uri", "invalid_client_metadata"), (uris, body)
        assert body["error_description"]
    for uri in ("https://app.example/cb", "http://127.0.0.1/cb", "http://localhost:3000/cb", "http://[::1]:9/cb",
                "com.example.app:/oauth/cb", "cursor://anysphere.cursor-retrieval/oauth/callback"):  # native apps
        status, body = await register(prod, redirect_uris=[uri])
        assert status == 201, (uri, body)
    status, body = await register(prod, token_endpoint_auth_method="private_key_jwt")
    assert status == 400 and body["error"] == "invalid_client_metadata"
    status, body = await register(prod, grant_types=["client_credentials"])
    assert status == 400 and body["error"] == "invalid_client_metadata"
    async with prod.post("/oauth/register", data="not json", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400 and (await r.json())["error"] == "invalid_client_metadata"


async def test_authorize_errors_redirect_only_to_a_checked_redirect_uri(client: Client) -> None:
    await client.login("alice")
    _, registered = await register(client, redirect_uris=["https://app.example/cb", LOOPBACK_CB])
    cid = registered["client_id"]
    _verifier, challenge = pkce()

    async def get(url: str) -> tuple[int, str, str]:
        async with client.get(url) as r:
            return r.status, r.headers.get("Location", ""), await r.text()

    # Not trusted: an unknown client, an unregistered redirect URI -> an error page, never a redirect.
    for url in (authorize_url(client, "mcp_nobody", challenge),
                authorize_url(client, cid, challenge, redirect_uri="https://evil.example/cb"),
                authorize_url(client, cid, challenge, redirect_uri="https://app.example/cb/other")):
        status, location, page = await get(url)
        assert status == 400 and location == "" and "cannot be completed" in page, url
    # Missing redirect_uri with two registered: a page too.
    status, _, page = await get(authorize_url(client, cid, challenge, redirect_uri=None))
    assert status == 400 and "redirect_uri" in page

    # Trusted redirect URI: the error goes back to the client with its state.
    cases = {
        "plain PKCE": ({"code_challenge_method": "plain"}, "invalid_request"),
        "no PKCE": ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),
        "another server's resource": ({"resource": "https://other.example/mcp"}, "invalid_target"),
        "unsupported response type": ({"response_type": "token"}, "unsupported_response_type"),
        "unknown scope": ({"scope": "admin"}, "invalid_scope"),
    }
    for name, (params, error) in cases.items():
        status, location, _ = await get(authorize_url(client, cid, challenge, **params))  # type: ignore[arg-type]
        assert status == 302 and location.startswith(LOOPBACK_CB), name
        got = redirect_params(location)
        assert got["error"] == error and got["state"] == "st-123" and "code" not in got, (name, got)
        assert got.get("error_description"), name

    # What no OAuth parameter may carry (found by fuzzing: authlib echoed such a response_type into its error,
    # then refused to build it, and the answer was a 500): a page, no redirect.
    for params in ({"response_type": "code\f"}, {"response_type": "🙂"}, {"response_type": 'co"de'},
                   {"response_type": "co\\de"}, {"state": "st\x01"}, {"scope": "mcp\u202e"}):
        status, location, page = await get(authorize_url(client, cid, challenge, **params))
        assert status == 400 and location == "" and "characters no OAuth parameter may contain" in page, params


async def test_a_loopback_redirect_may_use_another_port_but_must_match_at_the_token_endpoint(client: Client) -> None:
    await client.login("alice")
    _, registered = await register(client, redirect_uris=["http://127.0.0.1/callback"])
    verifier, challenge = pkce()
    other_port = "http://127.0.0.1:49152/callback"
    async with client.get(authorize_url(client, registered["client_id"], challenge, redirect_uri=other_port)) as r:
        assert r.status == 200, await r.text()
        page = await r.text()
    browser = Browser(client.url("/"))
    browser.session = client.session  # the signed-in cookie jar
    status, location, _ = await browser.consent(page)
    assert status == 302 and location.startswith(other_port + "?")
    code = redirect_params(location)["code"]
    base = {"grant_type": "authorization_code", "code": code, "client_id": registered["client_id"],
            "code_verifier": verifier}
    status, body = await token_request(client, **base, redirect_uri="http://127.0.0.1:1/callback")
    assert status == 400 and body["error"] == "invalid_grant"
    status, body = await token_request(client, **base, redirect_uri=other_port)
    assert status == 200, body
    # Only loopback http gets that freedom: an https redirect must match exactly.
    _, registered = await register(client, redirect_uris=["https://app.example/cb"])
    async with client.get(authorize_url(client, registered["client_id"], challenge,
                                        redirect_uri="https://app.example:8443/cb")) as r:
        assert r.status == 400


async def test_the_token_endpoint_refuses_wrong_verifier_reuse_and_mismatches(client: Client,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    await client.login("alice")
    _, registered = await register(client)
    cid = registered["client_id"]

    async def code_for(challenge: str) -> str:
        async with client.get(authorize_url(client, cid, challenge)) as r:
            page = await r.text()
        browser = Browser(client.url("/"))
        browser.session = client.session
        _, location, _ = await browser.consent(page)
        return redirect_params(location)["code"]

    verifier, challenge = pkce()
    code = await code_for(challenge)
    base = {"grant_type": "authorization_code", "code": code, "redirect_uri": LOOPBACK_CB, "client_id": cid}
    for form, error in [
        ({**base, "code_verifier": pkce()[0]}, "invalid_grant"),  # wrong verifier
        ({k: v for k, v in base.items()}, "invalid_request"),  # no verifier
        ({**base, "code_verifier": verifier, "resource": "https://other.example/mcp"}, "invalid_target"),
        ({**base, "code_verifier": verifier, "client_id": "mcp_nobody"}, "invalid_client"),
        ({**base, "code_verifier": verifier, "code": "not-a-code"}, "invalid_grant"),
        ({**base, "code_verifier": verifier, "grant_type": "password"}, "unsupported_grant_type"),
    ]:
        status, body = await token_request(client, **form)
        assert status in (400, 401) and body["error"] == error, (form, body)
        assert body.get("error_description") or error == "unsupported_grant_type"
    # The failures above did not use the code up.
    status, tokens = await token_request(client, **base, code_verifier=verifier)
    assert status == 200, tokens
    # A second use of the code (past the retry grace) is refused, and ends the grant the first use produced.
    from gofannon.services import oauth_server

    monkeypatch.setattr(oauth_server, "REPLAY_GRACE", timedelta(0))
    status, body = await token_request(client, **base, code_verifier=verifier)
    assert status == 400 and body["error"] == "invalid_grant"
    assert (await mcp_status(client, tokens["access_token"]))[0] == 401

    # Another client cannot redeem this client's code.
    _, other = await register(client)
    verifier, challenge = pkce()
    code = await code_for(challenge)
    status, body = await token_request(client, grant_type="authorization_code", code=code, redirect_uri=LOOPBACK_CB,
                                       client_id=other["client_id"], code_verifier=verifier)
    assert status == 400 and body["error"] == "invalid_grant"

    async with aiohttp.ClientSession() as plain:
        async with plain.post(client.url("/oauth/token"), json={"grant_type": "authorization_code"}) as r:
            assert r.status == 400 and (await r.json())["error"] == "invalid_request"


async def test_the_consent_form_needs_this_sessions_csrf_token_and_escapes_what_it_echoes(serve: Any) -> None:
    alice = await serve()
    await alice.login("alice")
    _, registered = await register(alice, client_name='<script>alert("x")</script>')
    _verifier, challenge = pkce()
    async with alice.get(authorize_url(alice, registered["client_id"], challenge, state='"><img src=x>')) as r:
        assert r.status == 200
        assert r.headers["X-Frame-Options"] == "DENY"
        page = await r.text()
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert '"><img' not in page

    browser = Browser(alice.url("/"))
    browser.session = alice.session
    status, location, body = await browser.consent(page, csrf_token="forged")
    assert status == 403 and location == "" and "session" in body
    status, location, body = await browser.consent(page, decision="maybe")
    assert status == 400 and location == ""

    # Bob's session (another browser, same server) cannot submit the form made for alice's.
    other = Browser(alice.url("/"), "bob")
    try:
        await Client(alice.server, other.session).login("bob")
        status, location, _ = await other.consent(page)
    finally:
        await other.close()
    assert status == 403 and location == ""

    status, location, _ = await browser.consent(page)
    assert status == 302 and redirect_params(location)["state"] == '"><img src=x>'


async def test_an_unknown_oauth_token_is_a_401_with_invalid_token(client: Client) -> None:
    bogus = "gfo_" + "0" * 32 + "_" + "x" * 43
    status, challenge = await mcp_status(client, bogus)
    assert status == 401 and "resource_metadata=" in challenge
    async with aiohttp.ClientSession() as plain:
        async with plain.get(client.url("/agents"), headers={"Authorization": f"Bearer {bogus}"}) as r:
            assert r.status == 401
            assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
            assert (await r.json())["detail"]


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/revoke"])
async def test_form_endpoints_want_a_form(client: Client, path: str) -> None:
    async with client.post(path, data="x", headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 400 and (await r.json())["error"] == "invalid_request"


# -- expiry, housekeeping, races --------------------------------------------------------------------
def _grant_id(token: str) -> str:
    return token.split("_")[1]


async def _age(client: Client, collection: str, doc_id: str, **fields: Any) -> None:
    """Set timestamps of a stored document in the past (what an hour or a month of waiting would do)."""
    from gofannon.web.keys import KERNEL

    def change(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        assert doc is not None
        doc.update(fields)
        return doc

    await client.server.app[KERNEL].store.update(collection, doc_id, change)


async def test_an_expired_access_token_is_refused_and_refresh_brings_a_new_one(client: Client) -> None:
    tokens = await sign_in(client)
    await _age(client, "api_tokens", _grant_id(tokens["access_token"]), accessExpiresAt="2020-01-01T00:00:00")
    status, challenge = await mcp_status(client, tokens["access_token"])
    assert status == 401 and "resource_metadata=" in challenge
    status, fresh = await token_request(client, grant_type="refresh_token", refresh_token=tokens["refresh_token"],
                                        client_id=tokens["client_id"])
    assert status == 200, fresh
    assert (await mcp_status(client, fresh["access_token"]))[0] == 200


async def test_expired_grants_and_codes_are_swept_and_an_expired_refresh_token_is_refused(client: Client) -> None:
    from gofannon.services import oauth_server
    from gofannon.web.keys import KERNEL

    await client.login("alice")
    tokens = await sign_in(client)
    grant_id = _grant_id(tokens["access_token"])
    await _age(client, "api_tokens", grant_id, refreshExpiresAt="2020-01-01T00:00:00")
    status, body = await token_request(client, grant_type="refresh_token", refresh_token=tokens["refresh_token"],
                                       client_id=tokens["client_id"])
    assert status == 400 and body["error"] == "invalid_grant"
    await _age(client, "api_tokens", grant_id, accessExpiresAt="2020-01-01T00:00:00")
    kernel = client.server.app[KERNEL]
    codes = await kernel.store.list("oauth_codes")
    assert codes  # the used code is kept (replay detection) until it expires
    for code in codes:
        await _age(client, "oauth_codes", code["_id"], expiresAt="2020-01-01T00:00:00")
    _, unused = await register(client)  # registered two days ago, never used: goes
    await _age(client, "oauth_clients", unused["client_id"], client_id_issued_at=1)
    await _age(client, "oauth_clients", tokens["client_id"], client_id_issued_at=1)
    assert await oauth_server.sweep(kernel) == len(codes) + 2
    assert await kernel.store.get("oauth_clients", unused["client_id"]) is None
    assert await kernel.store.get("oauth_clients", tokens["client_id"]) is not None  # it obtained a grant: stays
    async with client.get("/users/me/tokens") as r:
        assert [t for t in (await r.json())["tokens"] if t.get("kind") == "oauth"] == []
    assert await kernel.store.list("oauth_codes") == []


async def consented_code(client: Client) -> tuple[dict[str, str], dict[str, Any]]:
    """Alice consents to a newly registered client: the code exchange's form, and the client."""
    await client.login("alice")
    _, registered = await register(client)
    verifier, challenge = pkce()
    async with client.get(authorize_url(client, registered["client_id"], challenge)) as r:
        page = await r.text()
    browser = Browser(client.url("/"))
    browser.session = client.session
    _, location, _ = await browser.consent(page)
    form = {"grant_type": "authorization_code", "code": redirect_params(location)["code"], "redirect_uri": LOOPBACK_CB,
            "client_id": registered["client_id"], "code_verifier": verifier}
    return form, registered


async def test_a_code_or_refresh_token_raced_twice_is_granted_once(client: Client) -> None:
    import asyncio

    form, registered = await consented_code(client)
    results = await asyncio.gather(*(token_request(client, **form) for _ in range(6)))
    winners = [body for status, body in results if status == 200]
    assert len(winners) == 1 and all(body["error"] == "invalid_grant" for status, body in results if status != 200)
    # the losers were a race, not a replay: the winner's grant stands
    assert (await mcp_status(client, winners[0]["access_token"]))[0] == 200

    refresh = {"grant_type": "refresh_token", "refresh_token": winners[0]["refresh_token"],
               "client_id": registered["client_id"]}
    results = await asyncio.gather(*(token_request(client, **refresh) for _ in range(6)))
    assert sum(1 for status, _ in results if status == 200) == 1, results  # the first write wins; the rest are refused
    assert all(body["error"] == "invalid_grant" for status, body in results if status != 200)
    fresh = next(body for status, body in results if status == 200)
    assert (await mcp_status(client, fresh["access_token"]))[0] == 200


async def test_a_code_presented_again_later_ends_the_grant_it_gave(client: Client,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 6749 4.1.2: a used code coming back revokes what it produced (after ``REPLAY_GRACE``, which covers a
    client's own retry)."""
    from gofannon.services import oauth_server

    form, registered = await consented_code(client)
    status, issued = await token_request(client, **form)
    assert status == 200, issued
    status, body = await token_request(client, **form)  # a retry, at once: refused, nothing ended
    assert status == 400 and body["error"] == "invalid_grant"
    assert (await mcp_status(client, issued["access_token"]))[0] == 200
    monkeypatch.setattr(oauth_server, "REPLAY_GRACE", timedelta(0))
    status, body = await token_request(client, **form)  # later: a replay
    assert status == 400 and body["error"] == "invalid_grant"
    assert (await mcp_status(client, issued["access_token"]))[0] == 401


async def test_with_several_login_providers_the_user_chooses_one_and_comes_back(serve: Any, tmp_path: Any) -> None:
    config = tmp_path / "auth.yaml"
    config.write_text(
        "auth:\n  providers:\n"
        "    - {type: dev_stub, config: {users: [{uid: alice, display_name: Alice,"
        " workspaces: [{id: 'project:x', role: member}]}]}}\n"
        "    - {type: github, config: {client_id: gh, client_secret: s, mode: open_github}}\n")
    client = await serve(AUTH_CONFIG_PATH=str(config))
    _, registered = await register(client)
    url = authorize_url(client, registered["client_id"], pkce()[1])
    async with client.get(url) as r:
        assert r.status == 200
        page = await r.text()
    links = [html.unescape(h) for h in re.findall(r'href="([^"]+)"', page)]
    assert sorted(urlsplit(h).path for h in links) == ["/auth/login/dev_stub", "/auth/login/github"]
    assert all(redirect_params(h)["return_to"] == client.url(url) for h in links)
    browser = Browser(client.url("/"))
    try:
        away, page = await browser.open(next(h for h in links if "dev_stub" in h))
        assert away is None and '<button name="decision" value="allow">' in page
    finally:
        await browser.close()


async def test_oversized_client_metadata_is_refused(client: Client) -> None:
    status, body = await register(client, client_name="x" * 70000)
    assert status == 413 and body["error"] == "invalid_client_metadata"
    status, body = await register(client, client_name="x" * 201)
    assert status == 400 and body["error"] == "invalid_client_metadata"


async def test_a_grant_is_its_owners_alone_to_see_and_end(serve: Any) -> None:
    alice = await serve()
    await alice.login("alice")
    tokens = await sign_in(alice, "alice")
    grant_id = _grant_id(tokens["access_token"])
    bob = Client(alice.server, aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)))
    try:
        await bob.login("bob")
        async with bob.get("/users/me/tokens") as r:
            assert r.status == 200 and all(t["id"] != grant_id for t in (await r.json())["tokens"])
        async with bob.delete(f"/users/me/tokens/{grant_id}") as r:
            assert r.status == 404
    finally:
        await bob.session.close()
    assert (await mcp_status(alice, tokens["access_token"]))[0] == 200
    async with alice.get("/openapi.json") as r:
        paths = (await r.json())["paths"]
    assert {"/oauth/register", "/oauth/authorize", "/oauth/token", "/oauth/revoke",
            "/.well-known/oauth-authorization-server", "/.well-known/oauth-protected-resource"} <= set(paths)


async def test_login_returns_to_the_kernels_own_origin_but_never_elsewhere(client: Client) -> None:
    async def land(return_to: str) -> str:
        browser = Browser(client.url("/"))
        try:
            async with browser.session.get(client.url("/auth/login/dev_stub?" + urlencode({"return_to": return_to})),
                                           allow_redirects=False) as r:
                picker = urljoin(client.url("/"), r.headers["Location"])
            async with browser.session.get(picker) as r:
                page = await r.text()
            link = next(html.unescape(h) for h in re.findall(r'href="([^"]+)"', page) if "code=alice&" in h)
            async with browser.session.get(urljoin(client.url("/"), link), allow_redirects=False) as r:
                return r.headers["Location"]
        finally:
            await browser.close()

    own = client.url("/oauth/authorize?client_id=x")
    assert await land(own) == own
    assert await land("http://evil.example/oauth/authorize") == "http://localhost:3000/"
    assert await land("//evil.example/x") == "http://localhost:3000/"


async def test_a_token_bound_to_another_resource_is_refused_at_mcp(client: Client) -> None:
    """The same kernel under another name is another resource: a token issued for one is refused at the other."""
    tokens = await sign_in(client)
    assert (await mcp_status(client, tokens["access_token"]))[0] == 200
    other = client.url("/mcp").replace("127.0.0.1", "localhost")
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {}}}
    async with aiohttp.ClientSession() as plain:
        async with plain.post(other, json=call, headers={"Authorization": f"Bearer {tokens['access_token']}",
                                                          "Accept": "application/json, text/event-stream"}) as r:
            assert r.status == 401
            assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
            assert "localhost" in r.headers["WWW-Authenticate"]  # its metadata names the resource it is


async def test_two_api_processes_on_one_redis_store_share_clients_consent_and_grants(serve: Any,
                                                                                     redis_url: str) -> None:
    import os
    import time

    env = {"GOFANNON_STORAGE": "redis", "REDIS_URL": redis_url,
           "GOFANNON_REDIS_PREFIX": f"oauth{os.getpid()}{time.monotonic_ns()}:"}
    one = await serve(**env)
    two = await serve(**env)
    _, registered = await register(one)  # registered on one ...
    verifier, challenge = pkce()
    browser = Browser(two.url("/"))  # ... authorized on two ...
    try:
        _, page = await browser.open(authorize_url(two, registered["client_id"], challenge,
                                                   resource=two.url("/mcp")))
        assert '<button name="decision" value="allow">' in page
        status, location, _ = await browser.consent(page)
    finally:
        await browser.close()
    assert status == 302
    status, tokens = await token_request(one, grant_type="authorization_code",  # ... redeemed on one ...
                                         code=redirect_params(location)["code"], redirect_uri=LOOPBACK_CB,
                                         client_id=registered["client_id"], code_verifier=verifier)
    assert status == 200, tokens
    assert (await mcp_status(two, tokens["access_token"]))[0] == 200  # ... and used on two (same host, same resource)


async def test_a_native_app_with_a_private_use_scheme_gets_its_code_and_a_token(client: Client) -> None:
    """IDE-style clients register ``cursor://...``: the code comes back on that scheme and PKCE binds it."""
    app_cb = "cursor://anysphere.cursor-retrieval/oauth/callback"
    status, registered = await register(client, redirect_uris=[app_cb])
    assert status == 201, registered
    verifier, challenge = pkce()
    browser = Browser(client.url("/"), "alice")
    try:
        away, page = await browser.open(authorize_url(client, registered["client_id"], challenge, redirect_uri=app_cb))
        assert away is None, away
        status, location, _ = await browser.consent(page)
    finally:
        await browser.close()
    assert status == 302 and location.startswith(app_cb + "?"), location
    got = redirect_params(location)
    assert got["state"] == "st-123"
    status, tokens = await token_request(client, grant_type="authorization_code", code=got["code"],
                                         redirect_uri=app_cb, client_id=registered["client_id"],
                                         code_verifier=verifier, resource=client.url("/mcp"))
    assert status == 200 and tokens["access_token"].startswith("gfo_"), tokens
    assert (await mcp_status(client, tokens["access_token"]))[0] == 200


async def test_behind_a_proxy_the_public_url_names_the_issuer_and_the_resource(serve: Any) -> None:
    """TLS ends at a proxy, so requests arrive as http: GOFANNON_PUBLIC_URL is what clients are told."""
    public = "https://agents.example.org"
    client = await serve(GOFANNON_PUBLIC_URL=public + "/")
    async with client.get("/.well-known/oauth-protected-resource") as r:
        resource = await r.json()
    assert resource["resource"] == f"{public}/mcp" and resource["authorization_servers"] == [public]
    async with client.get("/.well-known/oauth-authorization-server") as r:
        server = await r.json()
    assert server["issuer"] == public and server["token_endpoint"] == f"{public}/oauth/token"
    async with client.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}) as r:
        assert r.status == 401
        assert f'resource_metadata="{public}/.well-known/oauth-protected-resource"' in r.headers["WWW-Authenticate"]
