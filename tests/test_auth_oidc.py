"""OAuth2/OIDC logins run end to end against small real providers on 127.0.0.1.

The OpenID provider serves discovery, JWKS, an authorize endpoint that redirects back with a code, and a
token endpoint that checks PKCE and issues an RS256 ID token. A fake GitHub serves the OAuth endpoints
and the REST calls the github backend makes.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from conftest import free_port


class FakeOidcProvider:
    """A minimal but honest OpenID provider: what it checks is what a real one checks."""

    def __init__(self, client_id: str = "gofannon", client_secret: str = "shh", prefix: str = "") -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.prefix = prefix  # issuer path, e.g. "/<tenant>/v2.0" for Microsoft
        self.key = RSAKey.generate_key(2048, parameters={"kid": "key-1", "use": "sig", "alg": "RS256"})
        self.published = [self.key]
        self.codes: dict[str, dict[str, Any]] = {}
        self.authorize_requests: list[dict[str, str]] = []
        self.jwks_fetches = 0
        self.user: dict[str, Any] = {"sub": "u-123", "name": "Olga Idc", "email": "olga@example.org",
                                     "groups": ["engineers"]}
        self.tamper: str | None = None  # "nonce" | "audience" | "foreign_key" | "expired"
        self.server: TestServer | None = None

    @property
    def issuer(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/") + self.prefix

    def rotate_key(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": f"key-{secrets.token_hex(4)}", "use": "sig",
                                                         "alg": "RS256"})
        self.published = [self.key]

    def app(self) -> web.Application:
        app = web.Application()
        p = self.prefix
        app.router.add_get(f"{p}/.well-known/openid-configuration", self.discovery)
        app.router.add_get(f"{p}/jwks", self.jwks)
        app.router.add_get(f"{p}/authorize", self.authorize)
        app.router.add_post(f"{p}/token", self.token)
        app.router.add_get(f"{p}/userinfo", self.userinfo)
        return app

    async def discovery(self, request: web.Request) -> web.Response:
        base = self.issuer
        return web.json_response({
            "issuer": base, "authorization_endpoint": f"{base}/authorize", "token_endpoint": f"{base}/token",
            "jwks_uri": f"{base}/jwks", "userinfo_endpoint": f"{base}/userinfo",
            "id_token_signing_alg_values_supported": ["RS256"], "code_challenge_methods_supported": ["S256"],
        })

    async def jwks(self, request: web.Request) -> web.Response:
        self.jwks_fetches += 1
        return web.json_response(KeySet(self.published).as_dict(private=False))

    async def authorize(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        self.authorize_requests.append(q)
        if q.get("client_id") != self.client_id or q.get("response_type") != "code":
            return web.Response(status=400, text="bad client or response_type")
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return web.Response(status=400, text="PKCE required")
        code = secrets.token_urlsafe(16)
        self.codes[code] = q
        target = q["redirect_uri"] + "?" + urlencode({"code": code, "state": q.get("state", "")})
        raise web.HTTPFound(target)

    def _client_ok(self, request: web.Request, form: dict[str, str]) -> bool:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            cid, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        else:
            cid, secret = form.get("client_id", ""), form.get("client_secret", "")
        return cid == self.client_id and secret == self.client_secret

    async def token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        if not self._client_ok(request, form):
            return web.json_response({"error": "invalid_client"}, status=401)
        grant = self.codes.pop(form.get("code", ""), None)
        if grant is None or form.get("grant_type") != "authorization_code":
            return web.json_response({"error": "invalid_grant"}, status=400)
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return web.json_response({"error": "invalid_grant", "error_description": "redirect_uri"}, status=400)
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if challenge != grant["code_challenge"]:
            return web.json_response({"error": "invalid_grant", "error_description": "PKCE"}, status=400)
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": self.client_id, "iat": now, "exp": now + 300,
                  "nonce": grant.get("nonce"), **self.user}
        key = self.key
        if self.tamper == "nonce":
            claims["nonce"] = "something-else"
        elif self.tamper == "audience":
            claims["aud"] = "another-client"
        elif self.tamper == "expired":
            claims["iat"], claims["exp"] = now - 7200, now - 3600
        elif self.tamper == "foreign_key":
            key = RSAKey.generate_key(2048, parameters={"kid": self.key.kid})
        id_token = jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)
        return web.json_response({"access_token": "at-" + secrets.token_hex(8), "token_type": "Bearer",
                                  "expires_in": 3600, "id_token": id_token})

    async def userinfo(self, request: web.Request) -> web.Response:
        if not request.headers.get("Authorization", "").startswith("Bearer at-"):
            return web.json_response({"error": "invalid_token"}, status=401)
        return web.json_response(self.user)


async def _start(app: web.Application, opened: list[TestServer]) -> TestServer:
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    opened.append(server)
    return server


@pytest.fixture
async def provider() -> AsyncIterator[FakeOidcProvider]:
    opened: list[TestServer] = []
    fake = FakeOidcProvider()
    fake.server = await _start(fake.app(), opened)
    yield fake
    for server in opened:
        await server.close()


def auth_config(tmp_path: Path, providers: list[dict[str, Any]], site_admins: list[str] | None = None) -> str:
    path = tmp_path / "auth.yaml"
    path.write_text(yaml.safe_dump({"auth": {"providers": providers, "site_admins": site_admins or []}}))
    return str(path)


async def browser_login(client: Any, provider_type: str, return_to: str = "/agents") -> Any:
    """Follow the redirects a browser follows; returns the final response's status and Location."""
    async with client.get(f"/auth/login/{provider_type}?return_to={return_to}") as r:
        assert r.status == 302, await r.text()
        authorize = r.headers["Location"]
    async with client.session.get(authorize, allow_redirects=False) as r:
        assert r.status == 302, await r.text()
        callback = r.headers["Location"]
    assert urlsplit(callback).path == f"/auth/callback/{provider_type}"
    async with client.session.get(callback, allow_redirects=False) as r:
        return r.status, r.headers.get("Location"), await r.text()


@pytest.fixture
def oidc_env(tmp_path: Path, provider: FakeOidcProvider) -> Callable[..., dict[str, str]]:
    def make(**config: Any) -> dict[str, str]:
        entry = {"type": "oidc", "enabled": True,
                 "config": {"issuer": provider.issuer, "client_id": "gofannon", "client_secret": "shh",
                            "display_name": "Example SSO", **config}}
        return {"AUTH_CONFIG_PATH": auth_config(tmp_path, [entry], ["oidc:admin-sub"])}

    return make


async def test_oidc_login_runs_the_code_flow_with_pkce_and_nonce(serve: Any, provider: FakeOidcProvider,
                                                                 oidc_env: Any) -> None:
    client = await serve(**oidc_env())
    async with client.get("/auth/providers") as r:
        assert (await r.json())["providers"] == [{"type": "oidc", "displayName": "Example SSO", "icon": "openid"}]
    status, location, _ = await browser_login(client, "oidc")
    assert status == 302 and location == "http://localhost:3000/agents"
    sent = provider.authorize_requests[-1]
    assert sent["nonce"] and sent["code_challenge_method"] == "S256" and "openid" in sent["scope"].split()
    async with client.get("/auth/me") as r:
        me = await r.json()
    assert me["uid"] == "oidc:u-123" and me["email"] == "olga@example.org" and me["displayName"] == "Olga Idc"
    assert [w["workspaceId"] for w in me["workspaces"]] == ["personal:oidc:u-123", "group:engineers"]
    assert me["workspaces"][1]["source"] == "oidc_claim"
    async with client.get("/users/me") as r:
        assert (await r.json())["basicInfo"] == {"displayName": "Olga Idc", "email": "olga@example.org"}


@pytest.mark.parametrize("tamper", ["nonce", "audience", "foreign_key", "expired"])
async def test_an_id_token_that_fails_verification_gets_no_session(serve: Any, provider: FakeOidcProvider,
                                                                  oidc_env: Any, tamper: str) -> None:
    client = await serve(**oidc_env())
    provider.tamper = tamper
    status, _location, body = await browser_login(client, "oidc")
    assert status == 502 and "Provider exchange failed" in body
    assert "ID token rejected" in body, body
    async with client.get("/users/me") as r:
        assert r.status == 401


async def test_a_rotated_signing_key_is_fetched_on_the_next_login(serve: Any, provider: FakeOidcProvider,
                                                                 oidc_env: Any) -> None:
    client = await serve(**oidc_env(jwks_min_refetch_seconds=0))
    assert (await browser_login(client, "oidc"))[0] == 302
    fetches = provider.jwks_fetches
    provider.rotate_key()
    assert (await browser_login(client, "oidc"))[0] == 302
    assert provider.jwks_fetches == fetches + 1


async def test_allowlist_mode_denies_people_outside_the_allowed_groups(serve: Any, provider: FakeOidcProvider,
                                                                      oidc_env: Any) -> None:
    client = await serve(**oidc_env(allowed_groups=["admins-only"]))
    status, _location, body = await browser_login(client, "oidc")
    assert status == 403 and "Login denied" in body
    async with client.get("/auth/me") as r:
        assert r.status == 401
    provider.user = {**provider.user, "groups": ["admins-only"]}
    assert (await browser_login(client, "oidc"))[0] == 302


async def test_site_admins_from_the_config_are_admins_after_an_oidc_login(serve: Any, provider: FakeOidcProvider,
                                                                         oidc_env: Any) -> None:
    provider.user = {**provider.user, "sub": "admin-sub", "groups": []}
    client = await serve(**oidc_env(allowed_groups=["nobody"]))
    assert (await browser_login(client, "oidc"))[0] == 302
    async with client.get("/admin/users") as r:
        assert r.status == 200


async def test_workspace_refresh_keeps_oauth_memberships(serve: Any, provider: FakeOidcProvider, oidc_env: Any) -> None:
    client = await serve(**oidc_env())
    await browser_login(client, "oidc")
    async with client.post("/auth/refresh-workspaces") as r:
        assert await r.json() == {"added": [], "removed": [], "roleChanges": [], "siteAdminChanged": False}
    async with client.get("/auth/me") as r:
        assert "group:engineers" in [w["workspaceId"] for w in (await r.json())["workspaces"]]


# -- GitHub ---------------------------------------------------------------------------------------------------
class FakeGitHub:
    def __init__(self) -> None:
        self.codes: dict[str, dict[str, str]] = {}
        self.token = "gho_" + secrets.token_hex(10)
        self.orgs = [{"login": "apache"}, {"login": "other"}]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/login/oauth/authorize", self.authorize)
        app.router.add_post("/login/oauth/access_token", self.access_token)
        app.router.add_get("/api/user", self.user)
        app.router.add_get("/api/user/emails", self.emails)
        app.router.add_get("/api/user/orgs", self.user_orgs)
        app.router.add_get("/api/user/memberships/orgs/{org}", self.membership)
        return app

    async def authorize(self, request: web.Request) -> web.Response:
        code = secrets.token_hex(8)
        self.codes[code] = dict(request.query)
        raise web.HTTPFound(request.query["redirect_uri"] + "?" + urlencode({"code": code, "state": request.query["state"]}))

    async def access_token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if (form.get("client_id"), form.get("client_secret")) != ("gh-client", "gh-secret"):
            return web.json_response({"error": "incorrect_client_credentials"})
        grant = self.codes.pop(str(form.get("code")), None)
        if grant is None:
            return web.json_response({"error": "bad_verification_code"})
        return web.json_response({"access_token": self.token, "token_type": "bearer", "scope": "read:user"})

    def _authorized(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            raise web.HTTPUnauthorized()

    async def user(self, request: web.Request) -> web.Response:
        self._authorized(request)
        return web.json_response({"id": 4242, "login": "octo", "name": "Octo Cat", "email": None})

    async def emails(self, request: web.Request) -> web.Response:
        self._authorized(request)
        return web.json_response([{"email": "old@example.org", "primary": False, "verified": True},
                                  {"email": "octo@example.org", "primary": True, "verified": True}])

    async def user_orgs(self, request: web.Request) -> web.Response:
        self._authorized(request)
        return web.json_response(self.orgs)

    async def membership(self, request: web.Request) -> web.Response:
        self._authorized(request)
        role = "admin" if request.match_info["org"] == "apache" else "member"
        return web.json_response({"state": "active", "role": role})


async def serve_with_github(serve: Any, tmp_path: Path, fake: "FakeGitHub", opened: list[TestServer]) -> Any:
    """A kernel whose GitHub login goes to ``fake`` on 127.0.0.1 (allowed organisation: Apache)."""
    server = await _start(fake.app(), opened)
    base = str(server.make_url("")).rstrip("/")
    entry = {"type": "github", "config": {"client_id": "gh-client", "client_secret": "gh-secret",
                                          "allowed_orgs": ["Apache"], "base_url": base, "api_base_url": f"{base}/api"}}
    return await serve(AUTH_CONFIG_PATH=auth_config(tmp_path, [entry]))


async def test_github_login_turns_allowed_orgs_into_workspaces(serve: Any, tmp_path: Path) -> None:
    opened: list[TestServer] = []
    fake = FakeGitHub()
    try:
        client = await serve_with_github(serve, tmp_path, fake, opened)
        status, location, _ = await browser_login(client, "github")
        assert status == 302 and location == "http://localhost:3000/agents"
        async with client.get("/auth/me") as r:
            me = await r.json()
        assert me["uid"] == "github:4242" and me["email"] == "octo@example.org"
        assert me["workspaces"][1] == {"workspaceId": "org:apache", "role": "admin", "displayName": "apache",
                                       "source": "github_org", "description": None}
        fake.orgs = [{"login": "other"}]
        status, _location, body = await browser_login(client, "github")
        assert status == 403 and "No active workspace memberships" in body
    finally:
        for s in opened:
            await s.close()


async def test_a_misconfigured_provider_is_skipped_and_the_others_still_work(serve: Any, tmp_path: Path,
                                                                            provider: FakeOidcProvider) -> None:
    entries = [{"type": "github", "config": {"client_id": "x"}},  # no secret, no orgs
               {"type": "oidc", "config": {"issuer": provider.issuer, "client_id": "gofannon", "client_secret": "shh"}}]
    client = await serve(AUTH_CONFIG_PATH=auth_config(tmp_path, entries))
    async with client.get("/auth/providers") as r:
        assert [p["type"] for p in (await r.json())["providers"]] == ["oidc"]
    async with client.get("/auth/login/github") as r:
        assert r.status == 404


def test_asf_authorize_url_carries_only_state_and_redirect_uri() -> None:
    import asyncio

    from gofannon_plugins.auth.oauth.backends import AsfBackend

    backend = AsfBackend({})
    url = asyncio.run(backend.authorize_url(None, None, state="s1", redirect_uri="http://h/auth/callback/asf", login={}))
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://oauth.apache.org/auth"
    assert parse_qs(parts.query) == {"state": ["s1"], "redirect_uri": ["http://h/auth/callback/asf"]}


def test_the_example_auth_config_enables_every_provider_it_shows(make_settings: Any, tmp_path: Path) -> None:
    from gofannon.kernel import Kernel
    from gofannon.services.auth_config import AuthState
    from gofannon.settings import PROJECT_ROOT

    data = yaml.safe_load((PROJECT_ROOT / "config" / "auth.example.yaml").read_text())
    for entry in data["auth"]["providers"]:
        entry["enabled"] = True
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump(data))
    state = AuthState(Kernel(make_settings(AUTH_CONFIG_PATH=str(path))))
    assert sorted(state.backends) == ["asf", "dev_stub", "github", "google", "microsoft", "oidc"]


# -- Google and Microsoft: the same OpenID flow plus their membership APIs --------------------------------------
async def test_google_login_enforces_the_hosted_domain(serve: Any, provider: FakeOidcProvider, tmp_path: Path) -> None:
    entry = {"type": "google", "config": {"client_id": "gofannon", "client_secret": "shh", "issuer": provider.issuer,
                                          "hosted_domain": "example.org", "mode": "open_domain"}}
    client = await serve(AUTH_CONFIG_PATH=auth_config(tmp_path, [entry]))
    provider.user = {**provider.user, "hd": "example.org"}
    assert (await browser_login(client, "google"))[0] == 302
    assert provider.authorize_requests[-1]["hd"] == "example.org"
    async with client.get("/auth/me") as r:
        me = await r.json()
    assert me["uid"] == "google:u-123" and me["workspaces"][1]["workspaceId"] == "domain:example.org"
    provider.user = {**provider.user, "hd": "elsewhere.com"}
    status, _location, body = await browser_login(client, "google")
    assert status == 403 and "example.org" in body


def graph_app(token_prefix: str, groups: list[dict[str, str]]) -> web.Application:
    async def me(request: web.Request) -> web.Response:
        assert request.headers["Authorization"].startswith(f"Bearer {token_prefix}")
        return web.json_response({"id": "ms-oid-1", "displayName": "Mia Soft", "mail": None,
                                  "userPrincipalName": "mia@contoso.example"})

    async def member_of(request: web.Request) -> web.Response:
        return web.json_response({"value": groups})

    app = web.Application()
    app.router.add_get("/v1.0/me", me)
    app.router.add_get("/v1.0/me/memberOf", member_of)
    return app


async def test_microsoft_login_reads_groups_from_graph(serve: Any, tmp_path: Path) -> None:
    opened: list[TestServer] = []
    fake = FakeOidcProvider(prefix="/tenant-1/v2.0")
    try:
        fake.server = await _start(fake.app(), opened)
        groups = [{"@odata.type": "#microsoft.graph.group", "id": "g-allowed", "displayName": "AI users"},
                  {"@odata.type": "#microsoft.graph.group", "id": "g-admins", "displayName": "AI admins"},
                  {"@odata.type": "#microsoft.graph.group", "id": "g-other", "displayName": "Other"}]
        graph = await _start(graph_app("at-", groups), opened)
        base = str(fake.server.make_url("")).rstrip("/")
        entry = {"type": "microsoft", "config": {
            "tenant_id": "tenant-1", "client_id": "gofannon", "client_secret": "shh", "authority_base": base,
            "graph_api_base": str(graph.make_url("/v1.0")), "allowed_groups": ["g-allowed"],
            "admin_groups": ["g-admins"]}}
        client = await serve(AUTH_CONFIG_PATH=auth_config(tmp_path, [entry]))
        assert (await browser_login(client, "microsoft"))[0] == 302
        async with client.get("/auth/me") as r:
            me = await r.json()
        assert me["uid"] == "microsoft:ms-oid-1" and me["email"] == "mia@contoso.example"
        assert [(w["workspaceId"], w["role"]) for w in me["workspaces"][1:]] == [
            ("group:g-allowed", "member"), ("group:g-admins", "admin")]
    finally:
        for s in opened:
            await s.close()


async def test_an_unreadable_auth_config_enables_no_providers_instead_of_failing(serve: Any, tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("auth: [providers: {unclosed")
    client = await serve(APP_ENV="production", AUTH_CONFIG_PATH=str(path))
    async with client.get("/auth/providers") as r:
        assert r.status == 404
    async with client.get("/health") as r:
        assert r.status == 200
