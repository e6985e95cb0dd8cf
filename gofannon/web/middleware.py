"""The kernel's request pipeline: request ids, CORS, who the caller is, and every failure as ``{"detail": ...}``.

One pipeline rather than three middlewares keeps the per-request cost low (``GET /health`` is benchmarked
against a bare aiohttp app). It wraps every route's handler when the app is built (``Pipeline.wrap``), and a
catch-all route answers what no route matches (404, 405, the trailing-slash redirect, CORS preflights), so
aiohttp's own middleware machinery, about a tenth of a trivial request's cost, is not run at all. With the web
UI served (its middleware must see requests first) the same pipeline runs as an aiohttp middleware instead
(``Pipeline.middleware``). Request timing is handed to *request observers* (the metrics plugin is one), so a
kernel without them pays nothing for it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import traceback
from time import perf_counter
from typing import Any, Awaitable, Callable, Protocol

from aiohttp import web
from aiohttp.web_urldispatcher import SystemRoute

from gofannon.errors import Forbidden, GofannonError
from gofannon.observability import CURRENT, RequestContext, malformed_reason, request_id_from
from gofannon.services.identity import SESSION_COOKIE
from gofannon.services.scopes import models_only
from gofannon.web.common import IDENTITY_KEY, dumps_bytes, is_model_call, is_public, public_origin
from gofannon.web.cors import cross_origin_headers, origin_of
from gofannon.web.keys import KERNEL

log = logging.getLogger("gofannon.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_DETAILS = {404: "Not Found", 405: "Method Not Allowed"}
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


class RequestObserver(Protocol):
    """Told about every request: ``started(request)`` when it arrives (what it returns comes back to
    ``finished``; both run in the request's context, so a tracer can make its span current in between),
    and ``finished(state, ...)`` with the route template (``"other"`` when no route matched), method,
    status (499: the client went away) and duration."""

    def started(self, request: web.Request) -> Any: ...

    def finished(self, state: Any, route: str, method: str, status: int, seconds: float) -> None: ...


def answer_malformed_requests() -> None:
    """Make aiohttp's answer to a request its parser refuses (a NUL in a header, a broken chunk, a request line
    over the limit) the kernel's: ``{"detail": ...}`` naming the problem, with an ``X-Request-Id``, instead of a
    text body that echoes the bytes. Those answers are made before any application code runs (below routing and
    the pipeline), so this wraps aiohttp's ``RequestHandler.handle_error``, once per process; its logging and
    its checks are kept (the log line is made safe by ``observability.MalformedRequestFilter``)."""
    from aiohttp import web_protocol
    from aiohttp.http_exceptions import HttpProcessingError

    from gofannon.ids import random_hex

    handler_class = web_protocol.RequestHandler
    original = handler_class.handle_error
    if getattr(original, "_gofannon", False):
        return

    def handle_error(self: Any, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        answer = original(self, request, status, exc, message)
        if not (400 <= status < 500 and isinstance(exc, HttpProcessingError)):
            return answer
        reason = malformed_reason(exc)
        response = web.Response(status=status, body=dumps_bytes({"detail": f"Bad Request: {reason}"}),
                                content_type="application/json", charset="utf-8",
                                headers={"X-Request-Id": random_hex(12)})
        response.force_close()
        return response

    handle_error._gofannon = True  # type: ignore[attr-defined]
    handler_class.handle_error = handle_error  # type: ignore[method-assign]


#: Observers of every request; plugins append theirs at start-up (``gofannon_startup``).
REQUEST_OBSERVERS = web.AppKey("request_observers", list)


#: The request's cross-origin headers (``gofannon.web.cors``), added as its answer's headers are sent.
try:
    CROSS_ORIGIN: Any = web.RequestKey("gofannon_cross_origin", dict)
except AttributeError:  # pragma: no cover - aiohttp < 3.14
    CROSS_ORIGIN = "gofannon_cross_origin"


async def _stamp_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``X-Request-Id`` on every answer, streamed ones included (this runs as headers are sent), and the
    cross-origin headers a browser-based MCP client needs."""
    ctx = CURRENT.get()
    if ctx is not None:
        response.headers["X-Request-Id"] = ctx.request_id
    cross = request.get(CROSS_ORIGIN)
    if cross is not None:
        response.headers.update(cross)


def _error(status: int, detail: Any, headers: dict[str, str] | None = None, path: str = "",
           exc: BaseException | None = None) -> web.Response:
    if path.startswith("/v1/") or path == "/v1":  # the OpenAI-compatible API answers errors in OpenAI's shape
        from gofannon.web.v1 import openai_error

        return openai_error(status, detail, headers, exc)
    return web.Response(
        status=status, body=dumps_bytes({"detail": detail}), content_type="application/json", charset="utf-8",
        headers=headers
    )


def _allow_header(methods: Any) -> dict[str, str]:
    """``Allow`` of a 405: the methods the path's routes take."""
    return {"Allow": ", ".join(sorted({str(m).upper() for m in methods if m != "*"}))}


async def fallback(request: web.Request) -> web.StreamResponse:  # pragma: no cover - never called: a marker
    """The catch-all route's handler; the pipeline answers for it (``unrouted``)."""
    raise web.HTTPNotFound()


fallback._gofannon_public = True  # type: ignore[attr-defined]


class Pipeline:
    """``wrap(handler)`` for each route, ``fallback`` for the catch-all route, or ``middleware`` (web UI mode)."""

    def __init__(self, wrap: Callable[..., Handler], fallback: Handler, middleware: Any) -> None:
        self.wrap, self.fallback, self.middleware = wrap, fallback, middleware


#: The catch-all route's path (registered last, so every real route is tried first).
CATCH_ALL = "/{gofannon_unrouted:[\\s\\S]*}"  # any path, a decoded line break in it included (``.`` stops there)


def is_catch_all(resource: Any) -> bool:
    """Whether a router resource is the catch-all (not an API route: OpenAPI and 405 checks skip it)."""
    return resource is not None and resource.canonical == "/{gofannon_unrouted}"


def build_pipeline(app: web.Application) -> Pipeline:
    kernel = app[KERNEL]
    settings = kernel.settings
    allowed_origin = settings.frontend_url.rstrip("/")
    from gofannon.services.identity import authenticate

    observers: list[RequestObserver] = []
    app[REQUEST_OBSERVERS] = observers
    app.on_response_prepare.append(_stamp_request_id)

    def cors_headers(origin: str) -> dict[str, str]:
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }

    def preflight(request: web.Request, origin: str, cross: dict[str, str] | None) -> web.Response:
        if origin != allowed_origin:
            if cross is None:
                return web.Response(status=400, text="Disallowed CORS origin", content_type="text/plain")
            headers = {k: v for k, v in cross.items() if k != "Access-Control-Expose-Headers"}
            headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
            requested = request.headers.get("Access-Control-Request-Headers")
            if requested:
                headers["Access-Control-Allow-Headers"] = requested
            headers["Access-Control-Max-Age"] = "600"
            return web.Response(status=204, headers=headers)
        headers = cors_headers(origin)
        headers["Access-Control-Allow-Methods"] = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"
        requested = request.headers.get("Access-Control-Request-Headers")
        if requested:
            headers["Access-Control-Allow-Headers"] = requested
        headers["Access-Control-Max-Age"] = "600"
        return web.Response(status=200, text="OK", headers=headers)

    async def resolves_elsewhere(request: web.Request) -> tuple[bool, set[str]]:
        """(a route other than the catch-all takes this request, the methods such routes take at its path)."""
        allowed: set[str] = set()
        for resource in app.router.resources():
            if is_catch_all(resource):
                continue
            found, methods = await resource.resolve(request)
            if found is not None:
                return True, allowed
            allowed |= methods
        return False, allowed

    async def unrouted(request: web.Request) -> web.StreamResponse:
        """What aiohttp's router would have refused: 405 when the path has routes for other methods, the
        trailing-slash redirect, else 404."""
        _found, allowed = await resolves_elsewhere(request)
        if allowed:  # RFC 9110: a 405 says which methods the resource takes
            return _error(405, _HTTP_DETAILS[405], _allow_header(allowed), path=request.path)
        path = request.path
        if path != "/" and path.endswith("/"):
            trimmed = request.rel_url.with_path(path.rstrip("/"))
            if (await resolves_elsewhere(request.clone(rel_url=trimmed)))[0]:
                raise web.HTTPTemporaryRedirect(str(trimmed))
        return _error(404, _HTTP_DETAILS[404], path=path)

    async def handle(request: web.Request, handler: Handler, ctx: RequestContext,
                     public_route: bool | None) -> web.StreamResponse:
        if handler is fallback:  # the catch-all route: nothing else took it (answered before any auth)
            return await unrouted(request)
        match = request.match_info
        route = match.route
        if public_route is None and isinstance(route, SystemRoute):  # middleware mode: aiohttp's router refused it
            exc = match.http_exception
            status = exc.status if exc is not None else 404
            if status == 404 and request.path != "/" and request.path.endswith("/"):
                trimmed = request.path.rstrip("/")
                resolved = await request.app.router.resolve(request.clone(rel_url=request.rel_url.with_path(trimmed)))
                if not isinstance(resolved.route, SystemRoute):
                    location = str(request.rel_url.with_path(trimmed))
                    raise web.HTTPTemporaryRedirect(location)
            allowed = getattr(exc, "allowed_methods", None) if status == 405 else None
            return _error(status, _HTTP_DETAILS.get(status, exc.reason if exc else "Not Found"),
                          _allow_header(allowed) if allowed else None, path=request.path)
        if public_route is None:
            public_route = is_public(match.handler)
        resource = route.resource
        ctx.route = resource.canonical if resource is not None else None
        headers = request.headers
        if ("Cookie" in headers or "Authorization" in headers) or not public_route:
            ident = await authenticate(kernel, request, required=not public_route)
            if ident is not None:
                if not public_route and request.method not in _READS and models_only(ident) \
                        and not is_model_call(match.handler):
                    raise Forbidden("This API token is limited to models: it may call them (/v1, /rest, /mcp, "
                                    "chat, run-code, generation) and read, not change anything else.")
                request[IDENTITY_KEY] = ident
                ctx.user_id = ident.uid
        return await handler(request)

    async def entry(request: web.Request, handler: Handler, public_route: bool | None) -> web.StreamResponse:
        ctx = RequestContext(request_id_from(request.headers.get("X-Request-Id")))
        CURRENT.set(ctx)
        if not observers:
            return await serve(request, handler, ctx, public_route)
        states = [observer.started(request) for observer in observers]
        started, status = perf_counter(), 500
        try:
            response = await serve(request, handler, ctx, public_route)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = 499
            raise
        finally:
            elapsed = perf_counter() - started
            route, method = ctx.route or "other", request.method
            for observer, state in zip(observers, states):
                observer.finished(state, route, method, status, elapsed)

    async def serve(request: web.Request, handler: Handler, ctx: RequestContext,
                    public_route: bool | None) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        cross = None
        if origin is not None and origin != allowed_origin:
            cross = cross_origin_headers(request, origin)
            if cross is not None:
                request[CROSS_ORIGIN] = cross
        if origin is not None and request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return preflight(request, origin, cross)
        if origin is not None and origin != allowed_origin and request.method not in _READS \
                and SESSION_COOKIE in request.cookies and "Authorization" not in request.headers \
                and origin_of(origin) != origin_of(public_origin(request)):
            # A page of another origin making the browser send the user's cookie (a form, a beacon): whatever
            # route it aims at, no change is made for it. The web UI's origin and the kernel's own pass, and so
            # does a request with an Authorization header (a page can set one only after a CORS preflight).
            return _error(403, "Cross-origin request refused: the session cookie is honoured only from the web UI's "
                               "origin", path=request.path)
        try:
            length = request.content_length
            if length is not None and length > settings.max_body_bytes:
                # Refused from the header alone, before anything reads (or stores) the body; a chunked
                # body is cut off by aiohttp's client_max_size when the handler reads it.
                raise web.HTTPRequestEntityTooLarge(max_size=settings.max_body_bytes, actual_size=length)
            response = await handle(request, handler, ctx, public_route)
        except GofannonError as exc:
            response = _error(exc.status, exc.detail, exc.headers or None, request.path, exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            if exc.status == 413:
                response = _error(413, f"Request body too large (limit {settings.max_body_bytes} bytes)",
                                  path=request.path)
            else:
                response = _error(exc.status, _HTTP_DETAILS.get(exc.status, exc.reason), None, request.path)
        except Exception as exc:  # noqa: BLE001 - the generic 500 is the contract
            log.error("uncaught exception on %s %s", request.method, request.path, exc_info=exc)
            kernel.record(
                "uncaught_api_exception", f"{type(exc).__name__} on {request.method} {request.path}",
                level="ERROR", metadata={"traceback": traceback.format_exc(limit=20)},
            )
            response = _error(500, f"An internal server error occurred. (request id: {ctx.request_id})",
                              path=request.path)
        if origin is not None and origin == allowed_origin and not response.prepared:
            response.headers.update(cors_headers(origin))
        return response

    @web.middleware
    async def kernel_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await entry(request, handler, None)

    def wrap(handler: Handler) -> Handler:
        """``handler`` behind the pipeline; its attributes (``@public``, ``@api_doc``) stay readable."""
        public_route = is_public(handler)

        async def routed(request: web.Request) -> web.StreamResponse:
            return await entry(request, handler, public_route)

        functools.update_wrapper(routed, handler)
        return routed

    return Pipeline(wrap, wrap(fallback), kernel_middleware)


