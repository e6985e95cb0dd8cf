"""The auth config (the reference's YAML format) and the login backends it enables.

```yaml
auth:
  providers:
    - {type: dev_stub, enabled: true, config: {users: [{uid: alice, display_name: Alice, workspaces: [...]}]}}
  site_admins: [dev_stub:alice]
  session_ttl_hours: 24
  workspace_refresh_minutes: 15
  legacy_firebase_enabled: true
```

With no ``AUTH_CONFIG_PATH`` and APP_ENV local/dev/test, ``DEV_CONFIG`` lets a newcomer sign in at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.auth import LoginBackend
    from gofannon.kernel import Kernel

log = logging.getLogger("gofannon.auth")

DEV_CONFIG: dict[str, Any] = {
    "providers": [
        {
            "type": "dev_stub",
            "enabled": True,
            "config": {
                "display_name": "Dev stub login",
                "users": [
                    {"uid": "admin", "display_name": "Dev Admin", "email": "admin@dev.local"},
                    {"uid": "alice", "display_name": "Alice Dev", "email": "alice@dev.local",
                     "workspaces": [{"id": "project:demo", "role": "admin", "display_name": "Demo"}]},
                    {"uid": "bob", "display_name": "Bob Dev", "email": "bob@dev.local",
                     "workspaces": [{"id": "project:demo", "role": "member", "display_name": "Demo"}]},
                ],
            },
        }
    ],
    "site_admins": ["dev_stub:admin"],
}


@dataclass
class ProviderEntry:
    type: str
    enabled: bool = True
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class AuthConfig:
    providers: list[ProviderEntry] = field(default_factory=list)
    site_admins: list[str] = field(default_factory=list)
    session_ttl_hours: float = 24.0
    workspace_refresh_minutes: float = 15.0
    legacy_firebase_enabled: bool = True

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> "AuthConfig":
        providers = []
        for raw in data.get("providers") or []:
            if not isinstance(raw, dict) or not raw.get("type"):
                log.warning("auth config: skipping provider entry without a type: %r", raw)
                continue
            providers.append(ProviderEntry(str(raw["type"]), bool(raw.get("enabled", True)), dict(raw.get("config") or {})))
        return cls(
            providers=providers,
            site_admins=[str(x) for x in data.get("site_admins") or []],
            session_ttl_hours=float(data.get("session_ttl_hours", 24)),
            workspace_refresh_minutes=float(data.get("workspace_refresh_minutes", 15)),
            legacy_firebase_enabled=bool(data.get("legacy_firebase_enabled", True)),
        )


def load_auth_config(settings: Any) -> AuthConfig:
    path = settings.auth_config_path
    if not path:
        return AuthConfig.from_mapping(DEV_CONFIG) if settings.is_dev else AuthConfig()
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
        auth = data.get("auth", data) if isinstance(data, dict) else {}
        return AuthConfig.from_mapping(auth if isinstance(auth, dict) else {})
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError) as exc:
        log.error("AUTH_CONFIG_PATH=%s could not be read (%s); no login providers enabled", path, exc)
        return AuthConfig()


class AuthState:
    """The auth config and the login backends it enabled, built once per kernel."""

    def __init__(self, kernel: "Kernel") -> None:
        self.config = load_auth_config(kernel.settings)
        self.backends: dict[str, LoginBackend] = {}
        for entry in self.config.providers:
            if not entry.enabled:
                continue
            factory = kernel.auth_backends.get(f"login:{entry.type}")
            if factory is None:
                log.warning("auth config: no plugin provides login type %r; skipped", entry.type)
                continue
            try:
                backend = factory.create(entry.config, kernel.settings)
            except Exception as exc:  # noqa: BLE001 - a misconfigured provider is skipped, as in the reference
                log.warning("auth config: provider %r misconfigured (%s); skipped", entry.type, exc)
                continue
            if backend is not None:
                self.backends[entry.type] = backend

    def is_site_admin(self, uid: str) -> bool:
        return uid in self.config.site_admins


def auth_state(kernel: "Kernel") -> AuthState:
    return kernel.component("auth_state", lambda: AuthState(kernel))
