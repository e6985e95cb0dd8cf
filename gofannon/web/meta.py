"""Service metadata: ``GET /``, the liveness probe ``GET /health`` and the readiness probe ``GET /health/ready``."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gofannon.web.common import api_doc, dumps, json_response, kernel_of, public

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel

routes = web.RouteTableDef()
log = logging.getLogger("gofannon.web.meta")

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


#: Longest a readiness check may take before it counts as failed (a hung dependency must not hang the probe).
READY_CHECK_TIMEOUT_S = 2.0


async def _check_store(kernel: "Kernel") -> dict[str, Any]:
    await kernel.store.get("users", "__readiness_probe__")
    return {"ok": True, "backend": kernel.settings.storage}


async def _check_queue(kernel: "Kernel") -> dict[str, Any]:
    url = kernel.settings.redis_url
    if not url:
        return {"ok": True, "backend": "inline"}
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, socket_connect_timeout=READY_CHECK_TIMEOUT_S,
                                     socket_timeout=READY_CHECK_TIMEOUT_S)
    try:
        await client.ping()
    finally:
        await client.aclose()
    return {"ok": True, "backend": "rq"}


async def _check_sandbox(kernel: "Kernel") -> dict[str, Any]:
    from gofannon.sandbox.pool import get_pool

    pool = get_pool(kernel)
    if not pool.alive:
        return {"ok": False, "error": "the sandbox pool is stopped"}
    return {"ok": True, "tier": pool.tier, "warm": pool.warm, "size": pool.size}


async def _check_auth(kernel: "Kernel") -> dict[str, Any]:
    from gofannon.services.auth_config import auth_state

    state = auth_state(kernel)
    return {"ok": True, "loginProviders": sorted(state.backends)}


_READY_CHECKS = {"store": _check_store, "queue": _check_queue, "sandbox": _check_sandbox, "auth": _check_auth}


async def _run_check(kernel: "Kernel", name: str, check: Any) -> dict[str, Any]:
    """One check's result. The probe is public, so a failure names only the exception's type; its message
    (which may name internal hosts) goes to the log, with the probe's request id."""
    try:
        async with asyncio.timeout(READY_CHECK_TIMEOUT_S):
            return await check(kernel)  # type: ignore[no-any-return]
    except TimeoutError:
        log.warning("readiness: %s did not answer within %g s", name, READY_CHECK_TIMEOUT_S)
        return {"ok": False, "error": f"no answer within {READY_CHECK_TIMEOUT_S:g} s"}
    except Exception as exc:  # noqa: BLE001 - a failed dependency is the answer, not an error
        log.warning("readiness: %s failed: %s: %s", name, type(exc).__name__, exc)
        return {"ok": False, "error": f"{type(exc).__name__} (details in the service log)"}


@routes.get("/health/ready")
@public
@api_doc(summary="Readiness: the store, the job queue, the sandbox pool and the auth config answer (200 or 503)",
         tags=["meta"])
async def ready(request: web.Request) -> web.Response:
    kernel = kernel_of(request)
    results = await asyncio.gather(*(_run_check(kernel, name, check) for name, check in _READY_CHECKS.items()))
    checks = dict(zip(_READY_CHECKS, results))
    ok = all(result["ok"] for result in results)
    loop = type(asyncio.get_running_loop()).__module__.partition(".")[0]  # "uvloop" or "asyncio"
    body = {"status": "ready" if ok else "not ready", "checks": checks, "pid": os.getpid(), "loop": loop}
    return json_response(body, status=200 if ok else 503)
