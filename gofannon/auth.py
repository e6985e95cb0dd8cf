"""Who the caller is: the identity every handler sees, and the auth backend contracts.

Backends are plugins registered through ``register_auth_backends``. A ``LoginBackend`` runs a browser
login (dev_stub, OAuth2/OIDC) and yields an ``ExternalIdentity``; the kernel turns that into a session
(cookie ``gofannon_sid``). A ``RequestAuthenticator`` resolves a caller straight from a request
(bearer tokens: personal API tokens, Firebase ID tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from aiohttp import web

    from gofannon.kernel import Kernel


@dataclass
class Identity:
    uid: str
    provider_type: str
    email: str | None = None
    display_name: str | None = None
    workspaces: list[dict[str, Any]] = field(default_factory=list)
    is_site_admin: bool = False
    auth_mode: str = "session"  # session | token | firebase
    session_id: str | None = None
    #: When the caller came with a bearer token of the token store: that token's scope, one dict whose keys are
    #: all optional: ``id``, ``kind`` ("personal" | "oauth"), ``models`` (allowed model ids, ``*`` suffix = prefix),
    #: ``maxSpend``, ``rpm``, ``expiresAt``, ``workspaceId``, ``resource`` (OAuth: the resource it is bound to),
    #: ``clientId``/``clientName`` (OAuth). None for sessions and unscoped callers. Checked by
    #: ``gofannon.services.scopes`` for ``/v1``, ``/mcp`` and ``/rest`` alike, and (``models``, ``maxSpend``) on every
    #: other route that calls a model.
    token: dict[str, Any] | None = None

    def session_user(self) -> dict[str, Any]:
        """The ``SessionUser`` shape of ``GET /auth/me``."""
        return {
            "uid": self.uid,
            "displayName": self.display_name,
            "email": self.email,
            "providerType": self.provider_type,
            "workspaces": self.workspaces,
            "isSiteAdmin": self.is_site_admin,
        }


@dataclass
class ExternalIdentity:
    """What a login backend learned about the person who signed in."""

    provider_type: str
    external_id: str
    display_name: str | None = None
    email: str | None = None
    workspaces: list[dict[str, Any]] = field(default_factory=list)
    is_site_admin: bool = False
    deny_reason: str | None = None  # set by the backend's login policy to refuse the login
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def uid(self) -> str:
        return f"{self.provider_type}:{self.external_id}"


@runtime_checkable
class LoginBackend(Protocol):
    """One configured login provider (an entry of the auth config's ``providers`` list)."""

    type: str
    display_name: str
    icon: str

    async def authorize_url(self, kernel: "Kernel", request: "web.Request", *, state: str, redirect_uri: str,
                            login: dict[str, Any]) -> str:
        """The URL to send the browser to. ``login`` is a dict the backend may fill (PKCE verifier,
        nonce); it is kept server-side with the state and handed back to ``exchange``."""
        ...

    async def exchange(self, kernel: "Kernel", request: "web.Request", *, code: str, redirect_uri: str,
                       login: dict[str, Any]) -> ExternalIdentity:
        """Turn the callback's ``code`` into who signed in; raise to refuse (502 to the browser)."""
        ...

    async def refresh(self, kernel: "Kernel", identity: Identity) -> list[dict[str, Any]] | None:
        """Re-read memberships; None = unknown (keep the current ones)."""
        ...


@runtime_checkable
class LoginBackendFactory(Protocol):
    """What a plugin registers for a login provider type: builds a backend from its config entry."""

    kind: str  # "login"
    type: str

    def create(self, config: dict[str, Any], settings: Any) -> LoginBackend | None:
        """A backend for this config, or None when it cannot run here (e.g. dev_stub outside dev)."""
        ...


@runtime_checkable
class RequestAuthenticator(Protocol):
    """What a plugin registers to resolve callers from requests (bearer tokens)."""

    kind: str  # "request"
    name: str

    async def authenticate(self, kernel: "Kernel", request: "web.Request") -> Identity | None:
        """Return the caller, None when this authenticator does not apply, or raise ``Unauthorized``."""
        ...
