"""The application factory: ``create_app(settings)`` builds the aiohttp app the CLI and tests serve."""

from __future__ import annotations

import importlib
import logging
from typing import Any, AsyncIterator, Iterable

from aiohttp import web

from gofannon.kernel import Kernel
from gofannon.settings import Settings
from gofannon.web.common import public
from gofannon.web.keys import KERNEL, SETTINGS
from gofannon.web.middleware import CATCH_ALL, Pipeline, answer_malformed_requests, build_pipeline

log = logging.getLogger("gofannon.app")

#: Kernel route modules, each with a ``routes`` RouteTableDef and/or a ``setup(app)`` function.
#: ``ui`` comes last: its single-page-app fallback must not shadow API routes.
WEB_MODULES: tuple[str, ...] = (
    "meta", "logs", "auth", "tokens", "users", "admin", "providers", "chat", "sessions",
    "agents", "codegen", "runs", "deployments", "chain", "data_store", "mcp", "mcp_server", "specs", "demos", "v1", "openapi",
    "workspaces", "ui",
)


def _wrapped(routes: Iterable[web.AbstractRouteDef], pipeline: Pipeline | None) -> list[web.AbstractRouteDef]:
    """A module's route table with each handler behind the pipeline (when it wraps routes)."""
    if pipeline is None:
        return list(routes)
    return [web.RouteDef(r.method, r.path, pipeline.wrap(r.handler), r.kwargs) if isinstance(r, web.RouteDef) else r
            for r in routes]


def _add_plugin_routes(app: web.Application, kernel: Kernel, pipeline: Pipeline | None) -> None:
    routes = kernel.pm.collect(
        "register_routes",
        key=lambda method, path, handler, public=False: f"{method.upper()} {path}",
        value=lambda method, path, handler, public=False: (method.upper(), path, handler, public),
        settings=kernel.settings,
    )
    for method, path, handler, is_public in routes.values():
        if is_public:
            handler = public(handler)
        app.router.add_route(method, path, pipeline.wrap(handler) if pipeline else handler)


async def _kernel_ctx(app: web.Application) -> AsyncIterator[None]:
    kernel = app[KERNEL]
    await kernel.open()
    results = kernel.pm.hook.gofannon_startup(app=app)
    for res in results:
        if hasattr(res, "__await__"):
            await res
    try:
        yield
    finally:
        for res in kernel.pm.hook.gofannon_shutdown(app=app):
            if hasattr(res, "__await__"):
                await res
        await kernel.close()


def create_app(settings: Settings | None = None, *, kernel: Kernel | None = None) -> web.Application:
    settings = settings or (kernel.settings if kernel else Settings.load())
    kernel = kernel or Kernel(settings)
    answer_malformed_requests()
    app = web.Application(client_max_size=settings.max_body_bytes, handler_args={"max_field_size": 65536})
    app[SETTINGS] = settings
    app[KERNEL] = kernel
    built = build_pipeline(app)
    # Served web UI: its middleware looks at requests before routing, so the pipeline runs as a middleware too.
    # Otherwise every route is wrapped, and a catch-all route answers the rest (no aiohttp middleware at all).
    pipeline = None if settings.ui_dir else built
    if pipeline is None:
        app.middlewares.append(built.middleware)
    ui_setup: Any = None
    for name in WEB_MODULES:
        module = importlib.import_module(f"gofannon.web.{name}")
        if name == "ui":
            ui_setup = getattr(module, "setup", None)
            continue
        routes = getattr(module, "routes", None)
        if routes is not None:
            app.router.add_routes(_wrapped(routes, pipeline))
        setup = getattr(module, "setup", None)
        if setup is not None:
            setup(app)
    _add_plugin_routes(app, kernel, pipeline)
    if ui_setup is not None:
        ui_setup(app)
    if pipeline is not None:
        app.router.add_route("*", CATCH_ALL, pipeline.fallback)
    app.cleanup_ctx.append(_kernel_ctx)
    return app
