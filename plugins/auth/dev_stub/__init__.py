"""Auth plugin ``dev_stub``: sign in as a configured user with one click. Only in APP_ENV local/dev/test."""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import urlencode

from gofannon import hookimpl
from gofannon.auth import ExternalIdentity, Identity
from gofannon.settings import DEV_ENVS


class DevStubBackend:
    type = "dev_stub"
    icon = "dev"

    def __init__(self, config: dict[str, Any]) -> None:
        self.display_name = str(config.get("display_name") or "Dev stub login")
        self.users: dict[str, dict[str, Any]] = {}
        for user in config.get("users") or []:
            if not isinstance(user, dict) or not user.get("uid"):
                raise ValueError("every dev_stub user needs a uid")
            self.users[str(user["uid"])] = user

    def user_ids(self) -> list[str]:
        return sorted(self.users)

    def _workspaces(self, user: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {"workspaceId": str(w["id"]), "role": w.get("role") or "member",
             "displayName": w.get("display_name") or str(w["id"]), "source": "dev_stub", "description": None}
            for w in user.get("workspaces") or [] if isinstance(w, dict) and w.get("id")
        ]

    async def authorize_url(self, kernel: Any, request: Any, *, state: str, redirect_uri: str,
                            login: dict[str, Any]) -> str:
        query = urlencode({"state": state, "redirect_uri": redirect_uri, "users": ",".join(self.user_ids())})
        return f"/auth/dev-stub-picker?{query}"

    async def exchange(self, kernel: Any, request: Any, *, code: str, redirect_uri: str,
                       login: dict[str, Any]) -> ExternalIdentity:
        user = self.users.get(code)
        if user is None:
            raise ValueError(f"Unknown dev user: {code}")
        return ExternalIdentity(
            provider_type="dev_stub",
            external_id=code,
            display_name=user.get("display_name") or code,
            email=user.get("email"),
            workspaces=self._workspaces(user),
        )

    async def refresh(self, kernel: Any, identity: Identity) -> list[dict[str, Any]] | None:
        user = self.users.get(identity.uid.split(":", 1)[-1])
        return self._workspaces(user) if user is not None else []


class DevStubFactory:
    kind = "login"
    type = "dev_stub"

    def create(self, config: dict[str, Any], settings: Any) -> DevStubBackend | None:
        if settings.app_env.lower() not in DEV_ENVS:
            return None
        return DevStubBackend(config)


@hookimpl
def register_auth_backends(register: Callable[..., None], settings: Any) -> None:
    register(DevStubFactory())
