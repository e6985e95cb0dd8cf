"""The provider catalog: data files under ``config/catalog/`` (one JSON file per provider, plus prices).

A provider file is ``{"slug", "api_key_env_var"?, ...provider keys, "models": {slug: model config}}``;
``prices.json`` maps ``provider/model`` to per-token prices. Operators add models or whole providers by
adding files (``GOFANNON_CONFIG_DIR``); plugins contribute their own defaults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_ACTIVE: "Catalog | None" = None


class Catalog:
    def __init__(self, providers: dict[str, dict[str, Any]], prices: dict[str, dict[str, Any]]) -> None:
        self.providers = providers
        self.prices = prices

    @classmethod
    def load(cls, config_dir: str | Path) -> "Catalog":
        base = Path(config_dir) / "catalog"
        providers: dict[str, dict[str, Any]] = {}
        prices: dict[str, dict[str, Any]] = {}
        if base.is_dir():
            for path in sorted(base.glob("*.json")):
                data = json.loads(path.read_text())
                if path.name == "prices.json":
                    prices.update(data)
                    continue
                slug = data.pop("slug", path.stem)
                providers[slug] = data
        return cls(providers, prices)

    def model(self, provider: str, model: str) -> dict[str, Any] | None:
        prov = self.providers.get(provider)
        if prov is None:
            return None
        return (prov.get("models") or {}).get(model)

    def exclusive_violation(self, provider: str, model: str, parameters: dict[str, Any] | None) -> str | None:
        """The reference's message when two mutually exclusive parameters are both set, else None."""
        config = self.model(provider, model)
        if not config or not parameters:
            return None
        schema = config.get("parameters") or {}
        for name, spec in schema.items():
            if parameters.get(name) is None:
                continue
            for other in spec.get("mutually_exclusive_with") or []:
                if parameters.get(other) is not None:
                    return f"Parameters '{name}' and '{other}' are mutually exclusive for {provider}/{model}."
        return None


def activate(catalog: Catalog) -> None:
    """Make ``catalog`` the one request models validate against (the kernel does this at start)."""
    global _ACTIVE
    _ACTIVE = catalog


def active() -> Catalog:
    global _ACTIVE
    if _ACTIVE is None:
        from gofannon.settings import PROJECT_ROOT

        _ACTIVE = Catalog.load(PROJECT_ROOT / "config")
    return _ACTIVE
