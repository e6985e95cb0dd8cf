"""Service metadata: ``GET /`` and ``GET /health``."""

from __future__ import annotations

from aiohttp import web

from gofannon.web.common import api_doc, json_response, kernel_of, public

routes = web.RouteTableDef()

_HEALTH = {"status": "healthy", "service": "user-service"}


@routes.get("/")
@public
@api_doc(summary="Heartbeat with the service name", tags=["meta"])
async def root(request: web.Request) -> web.Response:
    return json_response({"Hello": "World", "Service": "User-Service"})


@routes.get("/health")
@public
@api_doc(summary="Readiness probe; also reports the active sandbox confinement tier", tags=["meta"])
async def health(request: web.Request) -> web.Response:
    kernel = kernel_of(request)
    body = dict(_HEALTH)
    tier = getattr(kernel, "sandbox_tier", None)
    if tier is not None:
        body["sandbox"] = tier
    return json_response(body)
