"""Routes: the provider catalog (wire contract §1.3, §6.2) as the caller may use it.

A provider is listed when the caller has their own key for it, the server has one, or it needs none;
internal configuration (key variable names, role ARNs, base URLs) is never shown. The synthetic
``gofannon`` provider lists deployed agents.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gofannon.errors import NotFound
from gofannon.llm import catalog as catalog_mod
from gofannon.llm.service import USER_KEY_PROVIDERS, env_api_key, needs_key
from gofannon.web.common import api_doc, identity, json_response, kernel_of

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.auth import Identity
    from gofannon.kernel import Kernel

routes = web.RouteTableDef()
NOT_CONFIGURED = "Provider not found or not configured"


async def _gofannon_provider(kernel: "Kernel") -> dict[str, Any] | None:
    try:
        from gofannon.services import deployments
    except ImportError:  # pragma: no cover - the agents part is optional
        return None
    fn = getattr(deployments, "gofannon_provider_models", None)
    if fn is None:
        return None
    got = fn(kernel)
    if inspect.isawaitable(got):
        got = await got
    if not isinstance(got, dict):
        return None
    provider = got if isinstance(got.get("models"), dict) else {"models": got}
    return provider if provider["models"] else None


async def available_providers(kernel: "Kernel", ident: "Identity") -> dict[str, Any]:
    """Every provider the caller can use, public keys only (§6.2)."""
    from gofannon.services import users

    await users.get_or_create_user(kernel, ident)  # the reference creates the user here too
    cat = catalog_mod.active()
    out: dict[str, Any] = {}
    for slug, config in cat.providers.items():
        usable = not needs_key(config) or bool(env_api_key(kernel, slug, config))
        if not usable and slug in USER_KEY_PROVIDERS:
            usable = bool(await users.user_api_key(kernel, ident.uid, slug))
        if usable:
            out[slug] = cat.public_provider(slug)
    synthetic = await _gofannon_provider(kernel)
    if synthetic is not None:
        out["gofannon"] = synthetic
    return out


async def _provider(request: web.Request) -> dict[str, Any]:
    kernel, ident = kernel_of(request), identity(request)
    name = request.match_info["provider"]
    available = await available_providers(kernel, ident)
    if name not in available:
        raise NotFound(NOT_CONFIGURED)
    return available[name]  # type: ignore[no-any-return]


@routes.get("/providers")
@api_doc(summary="Providers the caller can use, keyed by slug", tags=["providers"])
async def list_providers(request: web.Request) -> web.Response:
    return json_response(await available_providers(kernel_of(request), identity(request)))


@routes.get("/providers/{provider}")
@api_doc(summary="One provider's configuration", tags=["providers"])
async def get_provider(request: web.Request) -> web.Response:
    return json_response(await _provider(request))


@routes.get("/providers/{provider}/models")
@api_doc(summary="The provider's model slugs", tags=["providers"])
async def list_models(request: web.Request) -> web.Response:
    provider = await _provider(request)
    return json_response(list((provider.get("models") or {}).keys()))


@routes.get("/providers/{provider}/models/{model:[\\s\\S]+}")
@api_doc(summary="One model's configuration (parameters, context window, built-in tools)", tags=["providers"])
async def get_model(request: web.Request) -> web.Response:
    provider = await _provider(request)
    model = (provider.get("models") or {}).get(request.match_info["model"])
    if model is None:
        raise NotFound("Model not found")
    return json_response(model)
