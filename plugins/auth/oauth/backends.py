"""The ``oauth`` plugin's backends: browser logins through OAuth2 / OpenID Connect providers.

Login types: ``oidc`` (any OpenID provider, configured by issuer URL and discovery), ``google``,
``microsoft``, ``github`` and ``asf``. The OAuth2 protocol work is authlib's framework-neutral async
client (``AsyncOAuth2Client``, on httpx); ID tokens are verified with joserfc against the provider's JWKS.
Every endpoint base URL can be overridden in the provider's ``config`` (tests point them at loopback).

PKCE (S256) is sent to every provider that takes it, and OIDC logins carry a ``nonce`` checked in the ID
token. The verifier and nonce live server-side with the login state, never in the browser.

Memberships are read at login only; ``refresh`` answers "unknown" (None), so a workspace refresh keeps
the memberships of the session instead of wiping them (wire contract §12.24).
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client

from gofannon.auth import ExternalIdentity, Identity
from gofannon_plugins.auth.oauth.keys import RemoteKeys, TokenRejected

log = logging.getLogger("gofannon.auth.oauth")

NO_MEMBERSHIP = "No active workspace memberships grant access to this platform."
DISCOVERY_TTL_S = 3600.0


def _required(config: dict[str, Any], key: str, provider: str) -> str:
    value = config.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{provider}: config.{key} is required")
    return value.strip()


def _str_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value or []]


def membership(workspace_id: str, role: str, display_name: str, source: str) -> dict[str, Any]:
    return {"workspaceId": workspace_id, "role": role, "displayName": display_name, "source": source,
            "description": None}


class OAuthBackend:
    """Authorization-code flow with PKCE; subclasses say where the endpoints are and who signed in."""

    type = "oauth"
    icon = "oauth"
    default_display_name = "OAuth"
    default_scopes: tuple[str, ...] = ()
    pkce = True
    token_endpoint_auth_method = "client_secret_basic"

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.client_id = _required(config, "client_id", self.type)
        self.client_secret = str(config.get("client_secret") or "") or None
        self.display_name = str(config.get("display_name") or self.default_display_name)
        self.icon = str(config.get("icon") or self.icon)
        scopes = config.get("scopes")
        self.scopes = _str_list(scopes) if scopes else list(self.default_scopes)
        self.redirect_uri_override = config.get("redirect_uri")
        self.timeout_s = float(config.get("timeout_seconds", 15))
        self.pkce = bool(config.get("pkce", self.pkce))

    # -- what subclasses provide --------------------------------------------------------------------------
    async def endpoints(self) -> dict[str, str]:
        """``authorization_endpoint`` and ``token_endpoint``."""
        raise NotImplementedError

    def authorize_params(self, login: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def identify(self, client: AsyncOAuth2Client, token: dict[str, Any], login: dict[str, Any]) -> ExternalIdentity:
        raise NotImplementedError

    # -- the flow ------------------------------------------------------------------------------------------
    def _client(self, redirect_uri: str) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.client_id, client_secret=self.client_secret, scope=" ".join(self.scopes),
            redirect_uri=self.redirect_uri_override or redirect_uri, timeout=self.timeout_s,
            code_challenge_method="S256" if self.pkce else None,
            token_endpoint_auth_method=str(self.config.get("token_endpoint_auth_method")
                                           or self.token_endpoint_auth_method),
        )

    async def authorize_url(self, kernel: Any, request: Any, *, state: str, redirect_uri: str,
                            login: dict[str, Any]) -> str:
        ep = await self.endpoints()
        verifier = generate_token(64) if self.pkce else None
        if verifier:
            login["code_verifier"] = verifier
        params = self.authorize_params(login)
        async with self._client(redirect_uri) as client:
            url, _state = client.create_authorization_url(
                ep["authorization_endpoint"], state=state, code_verifier=verifier, **params
            )
        return str(url)

    async def exchange(self, kernel: Any, request: Any, *, code: str, redirect_uri: str,
                       login: dict[str, Any]) -> ExternalIdentity:
        ep = await self.endpoints()
        extra: dict[str, Any] = {}
        if login.get("code_verifier"):
            extra["code_verifier"] = login["code_verifier"]
        async with self._client(redirect_uri) as client:
            token = await client.fetch_token(
                ep["token_endpoint"], grant_type="authorization_code", code=code,
                headers={"Accept": "application/json"}, **extra,
            )
            if "access_token" not in token and "id_token" not in token:
                raise ValueError(f"token endpoint answered no token: {dict(token)}")
            return await self.identify(client, dict(token), login)

    async def refresh(self, kernel: Any, identity: Identity) -> list[dict[str, Any]] | None:
        return None  # no stored access token: keep the session's memberships


class OidcBackend(OAuthBackend):
    """Any OpenID Connect provider, configured by ``issuer`` (discovery at ``/.well-known/openid-configuration``).

    Memberships come from a claim (``groups_claim``, default ``groups``): with ``allowed_groups`` only those
    groups admit (``mode: allowlist``); otherwise (``mode: open``) every signed-in person is admitted.
    """

    type = "oidc"
    icon = "openid"
    default_display_name = "Single sign-on"
    default_scopes: tuple[str, ...] = ("openid", "email", "profile")
    source = "oidc_claim"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.issuer = self.configured_issuer(config).rstrip("/")
        self.allowed_groups = _str_list(config.get("allowed_groups"))
        self.admin_groups = _str_list(config.get("admin_groups"))
        self.group_names: dict[str, str] = dict(config.get("group_display_names") or {})
        self.mode = str(config.get("mode") or ("allowlist" if self.allowed_groups else "open"))
        if self.mode == "allowlist" and not self.allowed_groups:
            raise ValueError(f"{self.type}: mode allowlist needs allowed_groups")
        self.groups_claim = str(config.get("groups_claim") or "groups")
        self.jwks_refetch_s = float(config.get("jwks_min_refetch_seconds", 10))
        self._discovery: dict[str, Any] | None = None
        self._discovered_at = 0.0
        self._keys: RemoteKeys | None = None

    def configured_issuer(self, config: dict[str, Any]) -> str:
        return _required(config, "issuer", self.type)

    async def discovery(self) -> dict[str, Any]:
        if self._discovery is None or time.monotonic() - self._discovered_at > DISCOVERY_TTL_S:
            url = f"{self.issuer}/.well-known/openid-configuration"
            async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=True) as client:
                response = await client.get(url)
            response.raise_for_status()
            doc = response.json()
            for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(doc.get(key), str):
                    raise ValueError(f"{url}: discovery document lacks {key}")
            self._discovery, self._discovered_at = doc, time.monotonic()
            if self._keys is None or self._keys.url != doc["jwks_uri"]:
                self._keys = RemoteKeys(doc["jwks_uri"], timeout_s=self.timeout_s, min_refetch_s=self.jwks_refetch_s)
        return self._discovery

    async def endpoints(self) -> dict[str, str]:
        return await self.discovery()

    def authorize_params(self, login: dict[str, Any]) -> dict[str, Any]:
        login["nonce"] = generate_token(32)
        return {"nonce": login["nonce"]}

    def expected_issuer(self, discovery: dict[str, Any]) -> dict[str, Any]:
        return {"essential": True, "value": discovery.get("issuer") or self.issuer}

    async def verify_id_token(self, token: dict[str, Any], login: dict[str, Any]) -> dict[str, Any]:
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise ValueError("the provider returned no id_token")
        discovery = await self.discovery()
        assert self._keys is not None
        claims_options: dict[str, Any] = {
            "iss": self.expected_issuer(discovery),
            "aud": {"essential": True, "value": self.client_id},
            "sub": {"essential": True},
        }
        if login.get("nonce"):
            claims_options["nonce"] = {"essential": True, "value": login["nonce"]}
        algorithms = discovery.get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithms = [a for a in algorithms if a in ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256")] or ["RS256"]
        try:
            return await self._keys.verify(id_token, claims=claims_options, algorithms=algorithms)
        except TokenRejected as exc:
            raise ValueError(f"ID token rejected: {exc}") from None

    async def userinfo(self, client: AsyncOAuth2Client) -> dict[str, Any]:
        url = (await self.discovery()).get("userinfo_endpoint")
        if not isinstance(url, str):
            return {}
        response = await client.get(url)
        return response.json() if response.status_code == 200 else {}

    def memberships_from(self, groups: list[str]) -> list[dict[str, Any]]:
        chosen = [g for g in groups if g in self.allowed_groups] if self.mode == "allowlist" else groups
        return [membership(f"group:{g}", "admin" if g in self.admin_groups else "member",
                           self.group_names.get(g, g), self.source) for g in chosen]

    async def identify(self, client: AsyncOAuth2Client, token: dict[str, Any], login: dict[str, Any]) -> ExternalIdentity:
        claims = await self.verify_id_token(token, login)
        if not claims.get("email") or not claims.get("name"):
            claims = {**await self.userinfo(client), **claims}
        raw_groups = claims.get(self.groups_claim) or []
        groups = [str(g) for g in raw_groups] if isinstance(raw_groups, list) else []
        workspaces = self.memberships_from(groups)
        if self.mode != "allowlist" and not workspaces:
            workspaces = [membership(f"{self.type}:members", "member", self.display_name, self.source)]
        return ExternalIdentity(
            provider_type=self.type, external_id=str(claims["sub"]),
            display_name=claims.get("name") or claims.get("preferred_username") or claims.get("email"),
            email=claims.get("email"), workspaces=workspaces,
            deny_reason=None if workspaces else NO_MEMBERSHIP, extra={"claims": claims},
        )


class GoogleBackend(OidcBackend):
    """Google sign-in; ``hosted_domain`` enforced on the ``hd`` claim; groups from the Directory API."""

    type = "google"
    icon = "google"
    default_display_name = "Google"
    source = "google_group"

    def __init__(self, config: dict[str, Any]) -> None:
        self.hosted_domain = str(config.get("hosted_domain") or "") or None
        config = dict(config)
        mode = str(config.get("mode") or "allowlist")
        config["mode"] = "allowlist" if mode == "allowlist" else "open"
        super().__init__(config)
        self.google_mode = mode
        if mode == "open_domain" and not self.hosted_domain:
            raise ValueError("google: mode open_domain needs hosted_domain")
        if not config.get("scopes") and mode == "allowlist":
            self.scopes = [*self.default_scopes, "https://www.googleapis.com/auth/admin.directory.group.readonly"]
        self.directory_base = str(config.get("directory_api_base")
                                  or "https://admin.googleapis.com/admin/directory/v1").rstrip("/")

    def configured_issuer(self, config: dict[str, Any]) -> str:
        return str(config.get("issuer") or "https://accounts.google.com")

    def authorize_params(self, login: dict[str, Any]) -> dict[str, Any]:
        params = super().authorize_params(login)
        if self.hosted_domain:
            params["hd"] = self.hosted_domain
        return params

    async def identify(self, client: AsyncOAuth2Client, token: dict[str, Any], login: dict[str, Any]) -> ExternalIdentity:
        claims = await self.verify_id_token(token, login)
        email = claims.get("email")
        ext = ExternalIdentity(provider_type=self.type, external_id=str(claims["sub"]),
                               display_name=claims.get("name") or email, email=email, extra={"claims": claims})
        if self.hosted_domain and claims.get("hd") != self.hosted_domain:
            ext.deny_reason = f"Sign in with an account of {self.hosted_domain}."
            return ext
        if self.google_mode == "open_domain":
            ext.workspaces = [membership(f"domain:{self.hosted_domain}", "member", self.hosted_domain or "", self.source)]
            return ext
        groups: list[dict[str, Any]] = []
        if email:
            response = await client.get(f"{self.directory_base}/groups", params={"userKey": email})
            if response.status_code == 200:
                groups = [g for g in response.json().get("groups") or [] if isinstance(g, dict)]
        for group in groups:
            address = str(group.get("email") or "")
            if address not in self.allowed_groups:
                continue
            role = "member"
            member = await client.get(f"{self.directory_base}/groups/{quote(address)}/members/{quote(str(email))}")
            if member.status_code == 200 and member.json().get("role") in ("OWNER", "MANAGER"):
                role = "admin"
            ext.workspaces.append(membership(f"group:{address}", role,
                                             self.group_names.get(address) or group.get("name") or address, self.source))
        if not ext.workspaces:
            ext.deny_reason = NO_MEMBERSHIP
        return ext


class MicrosoftBackend(OidcBackend):
    """Microsoft Entra ID; external id and groups from Microsoft Graph."""

    type = "microsoft"
    icon = "microsoft"
    default_display_name = "Microsoft"
    default_scopes = ("openid", "profile", "email", "User.Read", "GroupMember.Read.All")
    source = "oidc_claim"
    MULTI_TENANT = ("common", "organizations", "consumers")

    def __init__(self, config: dict[str, Any]) -> None:
        self.tenant_id = _required(config, "tenant_id", "microsoft")
        config = dict(config)
        mode = str(config.get("mode") or "allowlist")
        config["mode"] = "allowlist" if mode == "allowlist" else "open"
        super().__init__(config)
        self.ms_mode = mode
        self.graph_base = str(config.get("graph_api_base") or "https://graph.microsoft.com/v1.0").rstrip("/")

    def configured_issuer(self, config: dict[str, Any]) -> str:
        base = str(config.get("authority_base") or "https://login.microsoftonline.com").rstrip("/")
        return f"{base}/{config['tenant_id']}/v2.0"

    def expected_issuer(self, discovery: dict[str, Any]) -> dict[str, Any]:
        if self.tenant_id in self.MULTI_TENANT:  # the issuer names the user's tenant: check the shape only
            return {"essential": True}
        return super().expected_issuer(discovery)

    async def identify(self, client: AsyncOAuth2Client, token: dict[str, Any], login: dict[str, Any]) -> ExternalIdentity:
        claims = await self.verify_id_token(token, login)
        response = await client.get(f"{self.graph_base}/me")
        response.raise_for_status()
        me = response.json()
        email = me.get("mail") or me.get("userPrincipalName") or claims.get("email")
        ext = ExternalIdentity(provider_type=self.type, external_id=str(me.get("id") or claims["sub"]),
                               display_name=me.get("displayName") or claims.get("name"), email=email,
                               extra={"claims": claims})
        if self.ms_mode == "open_tenant":
            tenant = str(claims.get("tid") or self.tenant_id)
            ext.workspaces = [membership(f"tenant:{tenant}", "member", self.display_name, self.source)]
            return ext
        groups_response = await client.get(f"{self.graph_base}/me/memberOf", params={"$select": "id,displayName"})
        values = (groups_response.json().get("value") or []) if groups_response.status_code == 200 else []
        for group in values:
            gid = str(group.get("id") or "")
            if gid in self.allowed_groups or gid in self.admin_groups:
                ext.workspaces.append(membership(
                    f"group:{gid}", "admin" if gid in self.admin_groups else "member",
                    self.group_names.get(gid) or group.get("displayName") or gid, self.source))
        if not ext.workspaces:
            ext.deny_reason = NO_MEMBERSHIP
        return ext


class GitHubBackend(OAuthBackend):
    """GitHub OAuth apps: memberships are the ``allowed_orgs`` the user belongs to (org admins → admin)."""

    type = "github"
    icon = "github"
    default_display_name = "GitHub"
    default_scopes = ("read:user", "user:email", "read:org")
    token_endpoint_auth_method = "client_secret_post"  # what GitHub documents

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        if not self.client_secret:
            raise ValueError("github: config.client_secret is required")
        self.mode = str(config.get("mode") or "allowlist")
        self.allowed_orgs = [o.lower() for o in _str_list(config.get("allowed_orgs"))]
        if self.mode == "allowlist" and not self.allowed_orgs:
            raise ValueError("github: mode allowlist needs allowed_orgs")
        self.org_names: dict[str, str] = {str(k).lower(): str(v) for k, v in (config.get("org_display_names") or {}).items()}
        self.base_url = str(config.get("base_url") or "https://github.com").rstrip("/")
        self.api_base = str(config.get("api_base_url") or "https://api.github.com").rstrip("/")

    async def endpoints(self) -> dict[str, str]:
        return {"authorization_endpoint": f"{self.base_url}/login/oauth/authorize",
                "token_endpoint": f"{self.base_url}/login/oauth/access_token"}

    async def identify(self, client: AsyncOAuth2Client, token: dict[str, Any], login: dict[str, Any]) -> ExternalIdentity:
        headers = {"Accept": "application/vnd.github+json"}
        response = await client.get(f"{self.api_base}/user", headers=headers)
        response.raise_for_status()
        user = response.json()
        email = user.get("email")
        if not email:
            emails = await client.get(f"{self.api_base}/user/emails", headers=headers)
            if emails.status_code == 200:
                email = next((e.get("email") for e in emails.json() if e.get("primary") and e.get("verified")), None)
        ext = ExternalIdentity(provider_type=self.type, external_id=str(user["id"]),
                               display_name=user.get("name") or user.get("login"), email=email,
                               extra={"login": user.get("login")})
        if self.mode == "open_github":
            ext.workspaces = [membership("github:members", "member", self.display_name, "github_org")]
            return ext
        orgs = await client.get(f"{self.api_base}/user/orgs", headers=headers)
        names = [str(o.get("login")) for o in orgs.json()] if orgs.status_code == 200 else []
        for org in names:
            if org.lower() not in self.allowed_orgs:
                continue
            role = "member"
            detail = await client.get(f"{self.api_base}/user/memberships/orgs/{quote(org)}", headers=headers)
            if detail.status_code == 200:
                info = detail.json()
                if info.get("state") not in (None, "active"):
                    continue
                role = "admin" if info.get("role") == "admin" else "member"
            ext.workspaces.append(membership(f"org:{org}", role, self.org_names.get(org.lower(), org), "github_org"))
        if not ext.workspaces:
            ext.deny_reason = NO_MEMBERSHIP
        return ext


class AsfBackend:
    """Apache's oauth.apache.org: the authorize URL carries state and redirect_uri; the code is redeemed
    with a GET. Projects and PMCs in its answer become memberships (PMC → admin). Unlike the reference,
    committers are admitted (its "admin-only for testing" TODO is not reproduced); LDAP lookups are not
    implemented, so ``config.ldap`` is ignored with a warning."""

    type = "asf"
    icon = "asf"

    def __init__(self, config: dict[str, Any]) -> None:
        self.display_name = str(config.get("display_name") or "Apache")
        self.init_url = str(config.get("oauth_init_url") or "https://oauth.apache.org/auth")
        self.token_url = str(config.get("oauth_callback_url") or "https://oauth.apache.org/token")
        self.project_names: dict[str, str] = dict(config.get("project_display_names") or {})
        self.timeout_s = float(config.get("timeout_seconds", 15))
        if config.get("ldap"):
            log.warning("asf: LDAP membership lookups are not implemented; using the OAuth answer's projects")

    async def authorize_url(self, kernel: Any, request: Any, *, state: str, redirect_uri: str,
                            login: dict[str, Any]) -> str:
        sep = "&" if "?" in self.init_url else "?"
        return f"{self.init_url}{sep}{urlencode({'state': state, 'redirect_uri': redirect_uri})}"

    async def exchange(self, kernel: Any, request: Any, *, code: str, redirect_uri: str,
                       login: dict[str, Any]) -> ExternalIdentity:
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            response = await client.get(self.token_url, params={"code": code})
        response.raise_for_status()
        data = response.json()
        if not isinstance(data, dict) or not data.get("uid"):
            raise ValueError("oauth.apache.org answered no uid")
        pmcs = {str(p) for p in data.get("pmcs") or []}
        projects = sorted({str(p) for p in data.get("projects") or []} | pmcs)
        workspaces = [membership(f"project:{p}", "admin" if p in pmcs else "member", self.project_names.get(p, p),
                                 "ldap_pmc" if p in pmcs else "ldap_committer") for p in projects]
        return ExternalIdentity(provider_type=self.type, external_id=str(data["uid"]),
                                display_name=data.get("fullname") or data["uid"], email=data.get("email"),
                                workspaces=workspaces, deny_reason=None if workspaces else NO_MEMBERSHIP)

    async def refresh(self, kernel: Any, identity: Identity) -> list[dict[str, Any]] | None:
        return None
