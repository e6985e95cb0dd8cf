"""authlib's OAuth 2.1 server driven from aiohttp: one short-lived ``AuthorizationServer`` per request.

authlib has no aiohttp integration and is synchronous, so a request runs in three steps: the handler loads
from the store what authlib may ask for (the client, the code, the grant) into a ``Context``; authlib checks
the request and decides, calling back into the context (which only reads what was loaded and records what
should be written); the handler then writes the outcome (``Context.effects``) and only then answers. A write
that loses a race (a code used twice at once, a refresh token rotated twice at once) turns the answer into
``invalid_grant``. This module imports authlib at import time; the plugin imports it on first use.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Any

from authlib.common.errors import AuthlibHTTPError
from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientMixin,
    InvalidRequestError,
    JsonPayload,
    JsonRequest,
    OAuth2Error,
    OAuth2Payload,
    OAuth2Request,
    TokenMixin,
    grants,
)
from authlib.oauth2.rfc6749.errors import InsecureTransportError
from authlib.oauth2.rfc6749.util import extract_basic_authorization
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7591 import (ClientMetadataClaims, ClientRegistrationEndpoint, InvalidClientMetadataError,
                                    InvalidRedirectURIError)
from authlib.oauth2.rfc7636 import CodeChallenge

from gofannon.services import oauth_server as store

__all__ = ["Context", "OAuth2Error", "build_server", "form_request", "json_request", "basic_client_id"]

AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
GRANT_TYPES = ["authorization_code", "refresh_token"]
MAX_REDIRECT_URIS = 10
MAX_URI_CHARS = 2000
MAX_NAME_CHARS = 200


class InvalidTargetError(OAuth2Error):
    """RFC 8707 §2: the requested resource is not one this server issues tokens for."""

    error = "invalid_target"


# -- the request adapters ---------------------------------------------------------------------------
class _Payload(OAuth2Payload):
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._list: dict[str, list[str]] = {}
        for key, value in pairs:
            self._list.setdefault(key, []).append(value)
        self._data = {key: values[0] for key, values in self._list.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> dict[str, list[str]]:  # type: ignore[override]
        return self._list


class AioOAuth2Request(OAuth2Request):
    """The parameters of one request (query for GET, form for POST) in authlib's shape."""

    def __init__(self, method: str, uri: str, headers: Any, pairs: list[tuple[str, str]]) -> None:
        try:
            super().__init__(method, uri, headers=headers)
        except InsecureTransportError:
            # Transport policy is the kernel's (https in production is the operator's proxy's business, see
            # docs/auth.md); authlib only uses the URI for this check.
            super().__init__(method, "https://" + uri.split("://", 1)[-1], headers=headers)
        self.payload = _Payload(pairs)

    @property
    def args(self) -> dict[str, str]:
        return self.payload.data

    @property
    def form(self) -> dict[str, str]:
        return self.payload.data


class _JsonPayload(JsonPayload):
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    @property
    def data(self) -> dict[str, Any]:
        return self._data


def form_request(method: str, uri: str, headers: Any, pairs: list[tuple[str, str]]) -> AioOAuth2Request:
    return AioOAuth2Request(method, uri, headers, pairs)


def json_request(method: str, uri: str, headers: Any, data: dict[str, Any]) -> JsonRequest:
    req = JsonRequest(method, uri, headers)
    req.payload = _JsonPayload(data)
    return req


def basic_client_id(headers: Any) -> str | None:
    client_id, _secret = extract_basic_authorization(headers)
    return client_id or None


# -- what a request loaded, and what it should write ------------------------------------------------
@dataclass
class Context:
    base: str  # scheme://host of the kernel as the client sees it
    dev: bool  # APP_ENV local/dev/test: http redirect URIs are allowed anywhere
    client: dict[str, Any] | None = None
    code: dict[str, Any] | None = None
    grant: dict[str, Any] | None = None
    grant_id: str | None = None
    #: Filled while authlib runs:
    effects: dict[str, Any] = field(default_factory=dict)

    @property
    def resource(self) -> str:
        return self.base + "/mcp"

    def resource_ok(self, value: str) -> bool:
        return value in (self.resource, self.resource + "/")


class Client(ClientMixin):
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def get_client_id(self) -> str:
        return str(self.doc["_id"])

    def get_default_redirect_uri(self) -> str | None:
        uris = self.doc.get("redirect_uris") or []
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        return store.SCOPE  # the only scope; requested ones were checked against scopes_supported

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return store.redirect_uri_matches(list(self.doc.get("redirect_uris") or []), redirect_uri)

    def check_client_secret(self, client_secret: str) -> bool:
        stored = str(self.doc.get("client_secret_hash") or "")
        return bool(stored) and hmac.compare_digest(store.digest(client_secret), stored)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.doc.get("token_endpoint_auth_method")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in (self.doc.get("grant_types") or [])


class AuthorizationCode:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.code_challenge = doc.get("codeChallenge")
        self.code_challenge_method = doc.get("codeChallengeMethod")

    def get_redirect_uri(self) -> str | None:
        return self.doc.get("redirectUri")

    def get_scope(self) -> str | None:
        return self.doc.get("scope")


class Credential(TokenMixin):
    """One token of a stored grant (for refresh and revocation)."""

    def __init__(self, doc: dict[str, Any], kind: str, token: str) -> None:
        self.doc, self.kind, self.token = doc, kind, token

    def check_client(self, client: Client) -> bool:
        return self.doc.get("clientId") == client.get_client_id()

    def get_scope(self) -> str | None:
        return self.doc.get("scope")

    def get_expires_in(self) -> int:
        return int(store.ACCESS_TTL.total_seconds())

    def is_expired(self) -> bool:
        return False  # expired tokens are never loaded as credentials

    def is_revoked(self) -> bool:
        return False


# -- extensions -------------------------------------------------------------------------------------
class S256Only(CodeChallenge):
    """PKCE is required of every client, and only with S256 (OAuth 2.1, MCP authorization)."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: Any) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge with code_challenge_method=S256")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("Only code_challenge_method=S256 is supported (plain is refused)")
        super().validate_code_challenge(grant, redirect_uri)


def _check_authorize_resource(grant: Any, result: Any) -> None:
    """RFC 8707 at the authorization endpoint: the one resource is ``<base>/mcp``; absent means that one."""
    ctx: Context = grant.server.ctx
    values = grant.request.payload.datalist.get("resource") or []
    if len(values) > 1:
        raise InvalidTargetError("Only one resource may be requested")
    if values and not ctx.resource_ok(values[0]):
        raise InvalidTargetError(f"Tokens are issued only for the resource {ctx.resource}")


def _check_token_resource(grant: Any, bound: str | None) -> None:
    values = grant.request.payload.datalist.get("resource") or []
    if len(values) > 1 or (values and values[0].rstrip("/") != (bound or "").rstrip("/")):
        raise InvalidTargetError(f"This grant is bound to the resource {bound}")


# -- grants -----------------------------------------------------------------------------------------
class CodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    @property
    def ctx(self) -> Context:
        return self.server.ctx  # type: ignore[no-any-return]

    def generate_authorization_code(self) -> str:
        return store.new_code()

    def save_authorization_code(self, code: str, request: Any) -> None:
        user = request.user
        data = request.payload.data
        self.ctx.effects["new_code"] = (code, {
            "clientId": request.client.get_client_id(),
            "redirectUri": data.get("redirect_uri"),
            "scope": request.scope,
            "resource": self.ctx.resource,
            "codeChallenge": data.get("code_challenge"),
            "codeChallengeMethod": data.get("code_challenge_method"),
            "uid": user.uid,
            "identity": {"providerType": user.provider_type, "displayName": user.display_name,
                         "email": user.email, "workspaces": user.workspaces},
        })

    def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode | None:
        doc = self.ctx.code
        if doc is None or doc.get("clientId") != client.get_client_id():
            return None
        if doc.get("usedBy"):
            if store.code_replayed(doc):
                self.ctx.effects["end_grant"] = doc["usedBy"]  # a replayed code ends what it produced
            return None
        return AuthorizationCode(doc) if store.code_usable(doc) else None

    def validate_token_request(self) -> None:
        super().validate_token_request()
        _check_token_resource(self, self.request.authorization_code.doc.get("resource"))

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        self.ctx.effects["use_code"] = True

    def authenticate_user(self, authorization_code: AuthorizationCode) -> str:
        return str(authorization_code.doc["uid"])


class RefreshGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation

    @property
    def ctx(self) -> Context:
        return self.server.ctx  # type: ignore[no-any-return]

    def authenticate_refresh_token(self, refresh_token: str) -> Credential | None:
        doc = self.ctx.grant
        if doc is None:
            return None
        if store.matches(doc, "refreshHash", refresh_token) and store.refresh_live(doc):
            return Credential(doc, "refresh", refresh_token)
        if store.replayed(doc, refresh_token):
            self.ctx.effects["end_grant"] = doc["_id"]  # a rotated-out token came back: end the whole grant
        return None

    def validate_token_request(self) -> None:
        super().validate_token_request()
        _check_token_resource(self, self.request.refresh_token.doc.get("resource"))

    def authenticate_user(self, refresh_token: Credential) -> str:
        return str(refresh_token.doc["ownerId"])

    def revoke_old_credential(self, refresh_token: Credential) -> None:
        """Nothing here: the rotated grant document (written after authlib answers) replaces the old hashes."""


# -- endpoints --------------------------------------------------------------------------------------
class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> Credential | None:
        doc = self.server.ctx.grant
        parsed = store.parse_token(token_string)
        if doc is None or parsed is None:
            return None
        field_name = "accessHash" if parsed[0] == "access" else "refreshHash"
        return Credential(doc, parsed[0], token_string) if store.matches(doc, field_name, token_string) else None

    def revoke_token(self, token: Credential, request: Any) -> None:
        self.server.ctx.effects["revoke"] = token


class Claims(ClientMetadataClaims):
    """authlib's metadata checks, except ``redirect_uris``: authlib wants a host in every URI, which refuses a
    native app's private-use scheme (``com.example.app:/cb``); ``save_client`` checks them by our rules."""

    def validate_redirect_uris(self) -> None:
        return None


class Registration(ClientRegistrationEndpoint):
    """Open dynamic client registration (RFC 7591), as MCP clients expect; rate-limited by the handler."""

    def authenticate_token(self, request: Any) -> bool:
        return True

    def get_server_metadata(self) -> dict[str, Any]:
        return server_metadata(self.server.ctx.base)

    def extract_client_metadata(self, request: Any) -> dict[str, Any]:
        metadata: dict[str, Any] = super().extract_client_metadata(request)
        # We support exactly these two; a client that names none of them gets both.
        metadata.setdefault("grant_types", list(GRANT_TYPES))
        metadata.setdefault("response_types", ["code"])
        return metadata

    def generate_client_id(self, request: Any) -> str:
        return "mcp_" + store.new_grant_id()

    def generate_client_secret(self, request: Any) -> str | None:
        method = request.payload.data.get("token_endpoint_auth_method", "client_secret_basic")
        return None if method == "none" else store.new_code()

    def generate_client_info(self, request: Any) -> dict[str, Any]:
        info: dict[str, Any] = super().generate_client_info(request)
        if info.get("client_secret") is None:  # a public client has no secret to show or expire
            info.pop("client_secret", None)
            info.pop("client_secret_expires_at", None)
        return info

    def save_client(self, client_info: dict[str, Any], client_metadata: dict[str, Any], request: Any) -> Client:
        ctx: Context = self.server.ctx
        uris = client_metadata.get("redirect_uris")
        if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
            raise InvalidRedirectURIError("redirect_uris must be a non-empty list of URLs")
        if len(uris) > MAX_REDIRECT_URIS or any(len(u) > MAX_URI_CHARS for u in uris):
            raise InvalidRedirectURIError(f"At most {MAX_REDIRECT_URIS} redirect_uris of {MAX_URI_CHARS} characters")
        for uri in uris:
            problem = store.redirect_uri_problem(uri, dev=ctx.dev)
            if problem:
                raise InvalidRedirectURIError(_ascii(problem))
        name = client_metadata.get("client_name")
        if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME_CHARS):
            raise InvalidClientMetadataError(f"client_name must be a string of at most {MAX_NAME_CHARS} characters")
        if client_metadata.get("token_endpoint_auth_method") not in AUTH_METHODS:
            raise InvalidClientMetadataError("token_endpoint_auth_method must be one of: " + ", ".join(AUTH_METHODS))
        secret = client_info.get("client_secret")
        doc = {
            "client_name": name,
            "redirect_uris": list(dict.fromkeys(uris)),
            "token_endpoint_auth_method": client_metadata["token_endpoint_auth_method"],
            "grant_types": client_metadata["grant_types"],
            "response_types": client_metadata["response_types"],
            "client_secret_hash": store.digest(secret) if secret else None,
            "client_id_issued_at": client_info["client_id_issued_at"],
            "metadata": {k: v for k, v in client_metadata.items() if k in ("client_uri", "logo_uri", "software_id",
                                                                          "software_version", "scope")},
        }
        ctx.effects["new_client"] = (client_info["client_id"], doc)
        return Client({"_id": client_info["client_id"], **doc})


def _ascii(text: str) -> str:
    """authlib accepts only a restricted ASCII set in error descriptions."""
    return "".join(c if 0x20 <= ord(c) <= 0x7E and c not in '"\\' else "?" for c in text)


# -- the server -------------------------------------------------------------------------------------
class Server(AuthorizationServer):
    """authlib's server for one request; every callback reads the request's ``Context``."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(scopes_supported=[store.SCOPE])
        self.ctx = ctx
        self.register_token_generator("default", BearerTokenGenerator(
            self._access_token, self._refresh_token, int(store.ACCESS_TTL.total_seconds())))
        self.register_grant(CodeGrant, [S256Only(required=True), _AuthorizeResource()])
        self.register_grant(RefreshGrant)
        self.register_endpoint(Revocation)
        self.register_endpoint(Registration(self, claims_classes=[Claims]))

    def _access_token(self, **_: Any) -> str:
        assert self.ctx.grant_id is not None
        return store.mint(self.ctx.grant_id, "access")

    def _refresh_token(self, **_: Any) -> str:
        assert self.ctx.grant_id is not None
        return store.mint(self.ctx.grant_id, "refresh")

    def query_client(self, client_id: str) -> Client | None:
        doc = self.ctx.client
        return Client(doc) if doc is not None and doc["_id"] == client_id else None

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        self.ctx.effects["token"] = token

    def create_oauth2_request(self, request: Any) -> Any:
        return request

    def create_json_request(self, request: Any) -> Any:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> tuple[int, Any, list[tuple[str, str]]]:
        return status, body, list(headers or [])

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None


class _AuthorizeResource:
    def __call__(self, grant: Any) -> None:
        grant.register_hook("after_validate_authorization_request_payload", _check_authorize_resource)


def build_server(ctx: Context) -> Server:
    return Server(ctx)


def error_response(error: AuthlibHTTPError) -> tuple[int, Any, list[tuple[str, str]]]:
    status, body, headers = error()
    return status, body, list(headers)


def server_metadata(base: str) -> dict[str, Any]:
    """RFC 8414 authorization server metadata."""
    return {
        "issuer": base,
        "authorization_endpoint": base + "/oauth/authorize",
        "token_endpoint": base + "/oauth/token",
        "registration_endpoint": base + "/oauth/register",
        "revocation_endpoint": base + "/oauth/revoke",
        "scopes_supported": [store.SCOPE],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(GRANT_TYPES),
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
    }


def resource_metadata(base: str) -> dict[str, Any]:
    """RFC 9728 protected resource metadata of ``<base>/mcp``."""
    return {
        "resource": base + "/mcp",
        "authorization_servers": [base],
        "bearer_methods_supported": ["header"],
        "scopes_supported": [store.SCOPE],
        "resource_name": "Gofannon MCP server",
    }
