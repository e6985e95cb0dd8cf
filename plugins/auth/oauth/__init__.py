"""Auth plugin ``oauth``: browser logins through OAuth2 / OpenID Connect (oidc, google, microsoft, github, asf).

This module only registers the login types; authlib, joserfc and cryptography are imported (from
``backends``) when an auth config actually enables one of them, so start-up stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from gofannon import hookimpl

#: Login type -> backend class name in ``gofannon_plugins.auth.oauth.backends``.
LOGIN_TYPES = {"oidc": "OidcBackend", "google": "GoogleBackend", "microsoft": "MicrosoftBackend",
               "github": "GitHubBackend", "asf": "AsfBackend"}


class Factory:
    kind = "login"

    def __init__(self, type_: str, class_name: str) -> None:
        self.type = type_
        self._class_name = class_name

    def create(self, config: dict[str, Any], settings: Any) -> Any:
        backends = importlib.import_module("gofannon_plugins.auth.oauth.backends")
        return getattr(backends, self._class_name)(config)


@hookimpl
def register_auth_backends(register: Callable[..., None], settings: Any) -> None:
    for type_, class_name in LOGIN_TYPES.items():
        register(Factory(type_, class_name))
