"""Service metadata: ``GET /`` and ``GET /health``."""

from __future__ import annotations

from aiohttp import web

from gofannon.web.common import api_doc, dumps, json_response, kernel_of, public

routes = web.RouteTableDef()

_HEALTH = {"status": "healthy", "service": "user-service"}
_health_bodies: dict[str | None, bytes] = {}


def _health_body(tier: str | None) -> bytes:
    """The probe's answer, encoded once per sandbox tier: /health is the hottest, most constant route."""
    body = _health_bodies.get(tier)
    if body is None:
        data = dict(_HEALTH)
        if tier is not None:
            data["sandbox"] = tier
        body = _health_bodies[tier] = dumps(data).encode()
    return body


@routes.get("/")
@public
@api_doc(summary="Heartbeat with the service name", tags=["meta"])
async def root(request: web.Request) -> web.Response:
    return json_response({"Hello": "World", "Service": "User-Service"})


@routes.get("/health")
@public
@api_doc(summary="Readiness probe; also reports the active sandbox confinement tier", tags=["meta"])
async def health(request: web.Request) -> web.Response:
    tier = getattr(kernel_of(request), "sandbox_tier", None)
    return web.Response(body=_health_body(tier), content_type="application/json")
