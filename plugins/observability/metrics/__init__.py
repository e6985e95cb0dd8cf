"""Plugin ``metrics``: Prometheus metrics of the kernel, served at ``GET /metrics``.

Counting happens in plain Python (dicts under a lock) from two sources: the kernel middleware's request
observer (requests by route template, method and status; latency; in flight) and ``record_event``
events (LLM calls, jobs, agent runs, budget refusals, login failures). ``prometheus_client`` is
imported only to render a scrape, so a kernel that is never scraped pays neither its import time nor
its memory. With several processes (``PROMETHEUS_MULTIPROC_DIR`` set, as ``gofannon serve --workers N``
does) the counts go to prometheus_client's multiprocess files instead, and any process's scrape adds
up all of them. ``GOFANNON_METRICS=off`` turns all of it off.
"""

from __future__ import annotations

import hmac
import logging
import os
from typing import TYPE_CHECKING, Any, Callable

from gofannon import hookimpl
from gofannon_plugins.observability.metrics.stats import STATS, StoreTimer

if TYPE_CHECKING:  # pragma: no cover
    from aiohttp import web

    from gofannon.kernel import Kernel
    from gofannon.settings import Settings

log = logging.getLogger("gofannon.metrics")

#: The kernels of this process (the API's, or a worker's), for the values read at scrape time.
_KERNELS: list["Kernel"] = []


def _enabled(settings: "Settings") -> bool:
    return bool(getattr(settings, "metrics", True))


@hookimpl
def gofannon_startup(app: "web.Application") -> None:
    from gofannon.web.keys import KERNEL
    from gofannon.web.middleware import REQUEST_OBSERVERS

    kernel = app.get(KERNEL) if app is not None else None
    if kernel is None or not _enabled(kernel.settings):
        return
    # The sink is the observer: its started/finished count requests with no indirection in between.
    app[REQUEST_OBSERVERS].append(STATS.activate())
    watch_kernel(kernel)


@hookimpl
def gofannon_shutdown(app: "web.Application") -> None:
    from gofannon.web.keys import KERNEL

    kernel = app.get(KERNEL) if app is not None else None
    if kernel in _KERNELS:
        _KERNELS.remove(kernel)


def watch_kernel(kernel: "Kernel") -> None:
    """Time the kernel's store operations and read its queue and sandbox pool at scrape time. Before the
    kernel opens, the store's factory is wrapped (so a worker's store is timed too); after, the store."""
    name = kernel.settings.storage
    if kernel.store is None:
        factory = kernel.storage_backends.get(name)
        if factory is not None and not getattr(factory, "_gofannon_timed", False):
            def timed_factory(settings: Any, _factory: Any = factory) -> StoreTimer:
                return StoreTimer(_factory(settings), name)

            timed_factory._gofannon_timed = True  # type: ignore[attr-defined]
            kernel.storage_backends[name] = timed_factory
    elif not isinstance(kernel.store, StoreTimer):
        kernel.store = StoreTimer(kernel.store, name)
    if kernel not in _KERNELS:
        _KERNELS.append(kernel)


@hookimpl
def record_event(event: dict[str, Any]) -> None:
    STATS.event(event)


@hookimpl
def register_routes(register: Callable[..., None], settings: "Settings") -> None:
    if _enabled(settings):
        # Public to the middleware, which then authenticates only callers that bring credentials: the
        # handler decides (site admin, an admin's token, or GOFANNON_METRICS_TOKEN).
        register("GET", "/metrics", metrics_route, public=True)


def allowed(kernel: "Kernel", request: "web.Request") -> None:
    """Raise 401/403 unless the caller is a site admin (session or token) or brings the metrics token."""
    from gofannon.errors import Forbidden, Unauthorized
    from gofannon.web.common import IDENTITY_KEY

    expected = kernel.settings.metrics_token
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if expected and scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), expected.encode()):
        return
    ident = request.get(IDENTITY_KEY)
    if ident is None:
        raise Unauthorized("Reading /metrics needs a site admin's session or token, or GOFANNON_METRICS_TOKEN")
    if not ident.is_site_admin:
        raise Forbidden("Only site admins may read /metrics")


async def metrics_route(request: "web.Request") -> "web.Response":
    import asyncio

    from aiohttp import web

    from gofannon.web.keys import KERNEL

    kernel = request.app[KERNEL]
    allowed(kernel, request)
    from gofannon_plugins.observability.metrics.expose import CONTENT_TYPE, render

    # Rendering reads Redis (queue depth) with a blocking client and walks every series: off the loop.
    body = await asyncio.to_thread(render, kernel.settings, list(_KERNELS))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def start_metrics_server(port: int, host: str, settings: "Settings", kernel: "Kernel | None" = None) -> Any:
    """Serve the metrics of this process (or, in multiprocess mode, of all) without auth on their own
    port: ``gofannon serve --metrics-port`` and ``gofannon worker --metrics-port``."""
    from gofannon_plugins.observability.metrics.expose import serve_port

    STATS.activate()
    if kernel is not None:
        watch_kernel(kernel)
    return serve_port(port, host, settings, _KERNELS)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
