"""The kernel middleware: CORS, who the caller is, and every failure as ``{"detail": ...}``.

One middleware rather than three keeps the per-request cost low (``GET /health`` is benchmarked
against a bare aiohttp app).
"""

from __future__ import annotations

import logging
import traceback
from typing import Any, Awaitable, Callable

from aiohttp import web
from aiohttp.web_urldispatcher import SystemRoute

from gofannon.errors import GofannonError
from gofannon.web.common import IDENTITY_KEY, dumps, is_public
from gofannon.web.keys import KERNEL

log = logging.getLogger("gofannon.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_DETAILS = {404: "Not Found", 405: "Method Not Allowed"}


def _error(status: int, detail: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, text=dumps({"detail": detail}), content_type="application/json", headers=headers
    )


def build_middleware(app: web.Application) -> Any:
    kernel = app[KERNEL]
    settings = kernel.settings
    allowed_origin = settings.frontend_url.rstrip("/")
    from gofannon.services.identity import authenticate

    def cors_headers(origin: str) -> dict[str, str]:
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }

    def preflight(request: web.Request, origin: str) -> web.Response:
        if origin != allowed_origin:
            return web.Response(status=400, text="Disallowed CORS origin", content_type="text/plain")
        headers = cors_headers(origin)
        headers["Access-Control-Allow-Methods"] = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"
        requested = request.headers.get("Access-Control-Request-Headers")
        if requested:
            headers["Access-Control-Allow-Headers"] = requested
        headers["Access-Control-Max-Age"] = "600"
        return web.Response(status=200, text="OK", headers=headers)

    async def handle(request: web.Request, handler: Handler) -> web.StreamResponse:
        match = request.match_info
        route = match.route
        if isinstance(route, SystemRoute):
            exc = match.http_exception
            status = exc.status if exc is not None else 404
            if status == 404 and request.path != "/" and request.path.endswith("/"):
                trimmed = request.path.rstrip("/")
                resolved = await request.app.router.resolve(request.clone(rel_url=request.rel_url.with_path(trimmed)))
                if not isinstance(resolved.route, SystemRoute):
                    location = str(request.rel_url.with_path(trimmed))
                    raise web.HTTPTemporaryRedirect(location)
            return _error(status, _HTTP_DETAILS.get(status, exc.reason if exc else "Not Found"))
        headers = request.headers
        if ("Cookie" in headers or "Authorization" in headers) or not is_public(match.handler):
            ident = await authenticate(kernel, request, required=not is_public(match.handler))
            if ident is not None:
                request[IDENTITY_KEY] = ident
        return await handler(request)

    @web.middleware
    async def kernel_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return preflight(request, origin)
        try:
            length = request.content_length
            if length is not None and length > settings.max_body_bytes:
                # Refused from the header alone, before anything reads (or stores) the body; a chunked
                # body is cut off by aiohttp's client_max_size when the handler reads it.
                raise web.HTTPRequestEntityTooLarge(max_size=settings.max_body_bytes, actual_size=length)
            response = await handle(request, handler)
        except GofannonError as exc:
            response = _error(exc.status, exc.detail, exc.headers or None)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            if exc.status == 413:
                response = _error(413, f"Request body too large (limit {settings.max_body_bytes} bytes)")
            else:
                response = _error(exc.status, _HTTP_DETAILS.get(exc.status, exc.reason), None)
        except Exception as exc:  # noqa: BLE001 - the generic 500 is the contract
            log.error("uncaught exception on %s %s", request.method, request.path, exc_info=exc)
            kernel.record(
                "uncaught_api_exception", f"{type(exc).__name__} on {request.method} {request.path}",
                level="ERROR", metadata={"traceback": traceback.format_exc(limit=20)},
            )
            response = _error(500, "An internal server error occurred.")
        if origin is not None and origin == allowed_origin and not response.prepared:
            response.headers.update(cors_headers(origin))
        return response

    return kernel_middleware


