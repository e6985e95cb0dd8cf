"""The provider catalog: data files under ``config/catalog/`` (one JSON file per provider, plus prices).

A provider file is ``{"slug", "api_key_env_var"?, ...provider keys, "models": {slug: model config}}``;
``prices.json`` maps ``provider/model`` to per-token prices (``input_cost_per_token``,
``output_cost_per_token``, ``cache_read_input_token_cost``). Layers, later wins: what provider plugins
contribute, the bundled ``config/catalog/``, then the operator's ``$GOFANNON_CONFIG_DIR/catalog/``. A
later file replaces provider keys and individual models; models it does not name are kept. So an operator
adds a model, or a whole OpenAI-compatible provider (``{"slug": "vllm", "plugin": "openai_compat",
"base_url": "http://gpu:8000/v1", "models": {...}}``), with a file alone.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Iterable

_ACTIVE: "Catalog | None" = None

#: Provider keys that are operator configuration, never shown to users (DECISIONS: GET /providers leaks
#: nothing internal). Besides these, any key that looks like a credential or a variable name is hidden.
INTERNAL_KEYS = frozenset({
    "api_key_env_var", "assume_role_arn", "aws_region", "litellm_provider_prefix", "plugin", "base_url",
    "base_url_env", "api_path", "headers", "api_key", "key_optional",
})
_SECRETISH = ("secret", "token", "password", "credential", "_arn", "_env", "env_var", "api_key")


def is_internal(key: str) -> bool:
    lowered = key.lower()
    return key in INTERNAL_KEYS or key.startswith("_") or any(part in lowered for part in _SECRETISH)


def _merge_provider(into: dict[str, dict[str, Any]], slug: str, data: dict[str, Any]) -> None:
    data = copy.deepcopy(data)
    models = data.pop("models", None) or {}
    target = into.setdefault(slug, {"models": {}})
    target.update({k: v for k, v in data.items() if k != "slug"})
    target.setdefault("models", {})
    if not isinstance(models, dict):
        raise ValueError(f"catalog provider {slug!r}: 'models' must be an object keyed by model slug")
    target["models"].update(models)


class Problem(str):
    """A problem with a request's parameters: its text, and the parameter it is about (``param``)."""

    param: str | None

    def __new__(cls, text: str, param: str | None = None) -> "Problem":
        made = super().__new__(cls, text)
        made.param = param
        return made


class Catalog:
    def __init__(self, providers: dict[str, dict[str, Any]], prices: dict[str, dict[str, Any]]) -> None:
        self.providers = providers
        self.prices = prices

    @classmethod
    def load(cls, config_dir: str | Path) -> "Catalog":
        return cls.build([Path(config_dir)])

    @classmethod
    def build(cls, config_dirs: Iterable[Path], contributions: Iterable[dict[str, dict[str, Any]]] = ()) -> "Catalog":
        """Merge plugin contributions, then each config dir's ``catalog/*.json`` in order."""
        providers: dict[str, dict[str, Any]] = {}
        prices: dict[str, dict[str, Any]] = {}
        for contribution in contributions:
            for slug, data in (contribution or {}).items():
                _merge_provider(providers, slug, data)
        seen: set[Path] = set()
        for config_dir in config_dirs:
            base = (Path(config_dir) / "catalog").resolve()
            if base in seen or not base.is_dir():
                continue
            seen.add(base)
            for path in sorted(base.glob("*.json")):
                try:
                    data = json.loads(path.read_text())
                except ValueError as exc:
                    raise ValueError(f"catalog file {path}: not valid JSON ({exc})") from None
                if not isinstance(data, dict):
                    raise ValueError(f"catalog file {path}: expected a JSON object")
                if path.name == "prices.json":
                    prices.update(data)
                    continue
                _merge_provider(providers, str(data.get("slug") or path.stem), data)
        return cls(providers, prices)

    # -- lookups ------------------------------------------------------------------------------------
    def provider(self, provider: str) -> dict[str, Any] | None:
        return self.providers.get(provider)

    def model(self, provider: str, model: str) -> dict[str, Any] | None:
        prov = self.providers.get(provider)
        if prov is None:
            return None
        return (prov.get("models") or {}).get(model)

    def public_provider(self, provider: str) -> dict[str, Any] | None:
        """A provider's config as users may see it: internal keys removed."""
        prov = self.providers.get(provider)
        if prov is None:
            return None
        return {k: copy.deepcopy(v) for k, v in prov.items() if not is_internal(k)}

    def price(self, provider: str, model: str) -> dict[str, Any] | None:
        """Per-token prices of a model, from ``prices.json`` or the model entry's own ``pricing``."""
        config = self.model(provider, model) or {}
        own = config.get("pricing")
        if isinstance(own, dict):
            return own
        return self.prices.get(f"{provider}/{model}")

    def cost(self, provider: str, model: str, input_tokens: int, output_tokens: int,
             cached_input_tokens: int = 0) -> tuple[float, bool]:
        """(USD cost, priced?). A model without a price costs 0 and is reported unpriced."""
        price = self.price(provider, model)
        if not price:
            return 0.0, False
        try:
            inp = float(price.get("input_cost_per_token") or 0.0)
            out = float(price.get("output_cost_per_token") or 0.0)
            cached = float(price.get("cache_read_input_token_cost", inp) or 0.0)
        except (TypeError, ValueError):
            return 0.0, False
        cached_tokens = min(max(0, cached_input_tokens), max(0, input_tokens))
        cost = (input_tokens - cached_tokens) * inp + cached_tokens * cached + output_tokens * out
        return (cost if math.isfinite(cost) and cost > 0 else 0.0), True

    # -- parameter checks ---------------------------------------------------------------------------
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

    def parameter_problems(self, provider: str, model: str, parameters: dict[str, Any]) -> list[str]:
        """What is wrong with ``parameters`` for this model (types, ranges, choices, exclusivity).

        Parameters the catalog does not describe pass unchecked: agents send vendor options the
        catalog does not list, as the reference allowed.
        """
        problems: list[str] = []
        exclusive = self.exclusive_violation(provider, model, parameters)
        if exclusive:
            problems.append(exclusive)
        schema = (self.model(provider, model) or {}).get("parameters") or {}
        for name, value in parameters.items():
            spec = schema.get(name)
            if value is None or not isinstance(spec, dict):
                continue
            kind = spec.get("type")
            where = f"Parameter '{name}' of {provider}/{model}"
            if kind in ("float", "integer", "int"):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    problems.append(Problem(f"{where} must be a number, got {value!r}.", name))
                    continue
                if kind in ("integer", "int") and not float(value).is_integer():
                    problems.append(Problem(f"{where} must be an integer, got {value!r}.", name))
                    continue
                lo, hi = spec.get("min"), spec.get("max")
                if isinstance(lo, (int, float)) and value < lo or isinstance(hi, (int, float)) and value > hi:
                    problems.append(Problem(f"{where} must be between {lo} and {hi}, got {value!r}.", name))
            elif kind == "choice":
                choices = spec.get("choices") or []
                if choices and value not in choices:
                    problems.append(Problem(f"{where} must be one of {', '.join(map(str, choices))}; got {value!r}.", name))
            elif kind == "boolean" and not isinstance(value, bool):
                problems.append(Problem(f"{where} must be true or false, got {value!r}.", name))
        return problems


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


def build_for(settings: Any, providers: dict[str, Any]) -> Catalog:
    """The catalog of a kernel: plugin contributions, bundled files, then the operator's config dir."""
    from gofannon.settings import PROJECT_ROOT

    contributions = []
    for plugin in providers.values():
        contribute = getattr(plugin, "catalog", None)
        if contribute is not None:
            contributions.append(contribute(settings) or {})
    return Catalog.build([PROJECT_ROOT / "config", Path(settings.config_dir)], contributions)
