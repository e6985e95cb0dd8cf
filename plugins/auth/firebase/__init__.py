"""Auth plugin ``firebase``: ``Authorization: Bearer <Firebase ID token>`` when APP_ENV=firebase.

ID tokens are verified locally (RS256 signature against Google's published keys, ``aud`` = the project,
issuer ``https://securetoken.google.com/<project>``, expiry, a non-empty ``sub``) instead of through the
Admin SDK the reference never initialised (wire contract §12.12). The key URL is a setting, so a test or
an emulator can serve its own keys. The caller's uid is the Firebase uid, as in the reference, so user
documents made by a reference deployment keep working.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from gofannon import hookimpl
from gofannon.auth import Identity
from gofannon.errors import ServiceUnavailable, Unauthorized

if TYPE_CHECKING:  # pragma: no cover
    from aiohttp import web

    from gofannon.kernel import Kernel

log = logging.getLogger("gofannon.auth.firebase")

INVALID = "Invalid authentication token"
ISSUER_BASE = "https://securetoken.google.com/"


def _bearer(request: "web.Request") -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


class FirebaseAuthenticator:
    kind = "request"
    name = "firebase"

    async def authenticate(self, kernel: "Kernel", request: "web.Request") -> Identity | None:
        settings = kernel.settings
        if settings.app_env.lower() != "firebase":
            return None
        token = _bearer(request)
        if token is None or token.startswith(("gft_", "gfo_", "gfr_")):  # personal and MCP OAuth tokens
            return None
        project = settings.firebase_project_id
        if not project:
            log.error("APP_ENV=firebase but FIREBASE_PROJECT_ID is unset: every bearer token is refused")
            raise Unauthorized(INVALID)
        from gofannon_plugins.auth.oauth.keys import RemoteKeys, TokenRejected  # lazy: joserfc, cryptography

        keys = kernel.component("firebase_keys", lambda: RemoteKeys(settings.firebase_keys_url))
        claims_options = {
            "iss": {"essential": True, "value": ISSUER_BASE + project},
            "aud": {"essential": True, "value": project},
            "sub": {"essential": True},
            "iat": {"essential": True},
        }
        try:
            claims = await keys.verify(token, claims=claims_options, algorithms=("RS256",))
        except TokenRejected:
            raise Unauthorized(INVALID) from None
        except RuntimeError as exc:  # the key endpoint is unreachable: not the caller's fault
            raise ServiceUnavailable(f"Authentication error: {exc}") from None
        uid = str(claims["sub"])
        if not uid or len(uid) > 128:
            raise Unauthorized(INVALID)
        from gofannon.services.auth_config import auth_state
        from gofannon.services.sessions import personal_workspace

        return Identity(
            uid=uid, provider_type="firebase", email=claims.get("email"),
            display_name=claims.get("name") or claims.get("email"),
            workspaces=[personal_workspace("firebase", uid)],
            is_site_admin=auth_state(kernel).is_site_admin(uid) or auth_state(kernel).is_site_admin(f"firebase:{uid}"),
            auth_mode="firebase",
        )


@hookimpl
def register_auth_backends(register: Callable[..., None], settings: Any) -> None:
    register(FirebaseAuthenticator())
