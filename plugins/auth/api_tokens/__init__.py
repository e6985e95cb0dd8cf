"""Auth plugin ``api_tokens``: ``Authorization: Bearer gft_...`` personal API tokens (kind ``request``).

Only bearer values with the ``gft_`` prefix are claimed, so other bearer schemes (Firebase ID tokens)
are left to their own authenticators. A claimed token that does not resolve is a 401.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from gofannon import hookimpl
from gofannon.auth import Identity
from gofannon.errors import Unauthorized
from gofannon.services import tokens

if TYPE_CHECKING:  # pragma: no cover
    from aiohttp import web

    from gofannon.kernel import Kernel


def bearer(request: "web.Request") -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class ApiTokenAuthenticator:
    kind = "request"
    name = "api_tokens"

    async def authenticate(self, kernel: "Kernel", request: "web.Request") -> Identity | None:
        token = bearer(request)
        if token is None or not tokens.looks_like_token(token):
            return None
        ident = await tokens.resolve(kernel, token)
        if ident is None:
            raise Unauthorized("Invalid or revoked API token", reason="not_authenticated")
        return ident


@hookimpl
def register_auth_backends(register: Callable[..., None], settings: Any) -> None:
    register(ApiTokenAuthenticator())
