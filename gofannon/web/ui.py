"""Serving a built web UI (single-page app) from ``GOFANNON_UI_DIR`` on the API's own origin.

The reference deploys its UI behind nginx, which sends a fixed list of top-level prefixes to the API and
everything else to the app; reloading a UI page whose path is also an API prefix (``/agents``, ``/chat``,
``/demos/<id>``) then hits the API and shows JSON. Here the choice is made per request:

- a browser *navigation* (``Sec-Fetch-Mode: navigate``, or without that header an ``Accept`` that prefers
  ``text/html``) gets the app's ``index.html`` — except for the server's own pages (``/auth/...`` login flow,
  ``/health``, ``/openapi.json``, ``/docs``, ``/rest/...``, ``/log/...``, a saved demo's ``/demos/<id>/app``);
- any other GET/HEAD that matches an API route goes to the API unchanged (scripts, ``fetch``, ``EventSource``);
- a GET/HEAD that matches no API route gets the file of that name from the UI directory, or ``index.html``
  (the app's own router draws the page) — unless its first path segment is an API prefix (then the API's
  JSON 404 stands, so scripts are not handed HTML) or it names a file (``.js``, ``.png``) that does not exist.

The middleware sits outside the kernel middleware, so UI files are public and cost no session lookup.
Hashed build assets (``assets/``) are cached for a year; ``index.html`` and other files are revalidated.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Awaitable, Callable

from aiohttp import web

from gofannon.web.keys import SETTINGS

log = logging.getLogger("gofannon.ui")

routes = web.RouteTableDef()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The prefixes the reference's nginx front sends to the API (wire contract, header).
NGINX_API_PREFIXES = frozenset({
    "auth", "admin", "agents", "chat", "data-store", "demos", "deployments", "echo", "health", "log", "mcp",
    "providers", "rest", "runs", "sessions", "specs", "users",
})
#: Paths a browser navigates to that the server itself answers (login flow, probes, API docs).
SERVER_PAGES = ("/auth/", "/health", "/openapi.json", "/docs", "/rest/", "/log/")
#: API routes (by canonical path) that answer a page of their own: a saved demo app runs at its own URL.
SERVER_PAGE_ROUTES = frozenset({"/demos/{demo_id}/app"})
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


def _accept_q(accept: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        if not media:
            continue
        q = 1.0
        for param in fields[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        out[media] = max(q, out.get(media, 0.0))
    return out


def is_navigation(request: web.Request) -> bool:
    """A browser loading a page (not a script's fetch)."""
    if request.method not in ("GET", "HEAD"):
        return False
    mode = request.headers.get("Sec-Fetch-Mode")
    if mode is not None:
        return mode.lower() == "navigate"
    q = _accept_q(request.headers.get("Accept", ""))
    html = max(q.get("text/html", 0.0), q.get("application/xhtml+xml", 0.0))
    return html > 0 and html >= q.get("application/json", 0.0) and html >= q.get("*/*", 0.0)


class UiFiles:
    """The built app on disk, resolved safely (nothing outside the directory is ever served)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.index = self.root / "index.html"
        if not self.index.is_file():
            raise RuntimeError(f"GOFANNON_UI_DIR={root}: no index.html there (point it at the built app, e.g. dist/)")

    def find(self, url_path: str) -> Path | None:
        """The regular file under the root that ``url_path`` names, or None (also for escapes and dotfiles)."""
        parts = [p for p in url_path.split("/") if p]
        if not parts or any(p in (".", "..") or p.startswith(".") or "\\" in p or "\x00" in p for p in parts):
            return None
        try:
            target = self.root.joinpath(*parts).resolve()
        except (OSError, ValueError):
            return None
        if not target.is_relative_to(self.root) or not target.is_file():
            return None
        return target

    def respond(self, path: Path, *, vary: bool = False) -> web.FileResponse:
        rel = path.relative_to(self.root)
        cache = IMMUTABLE if rel.parts[0] == "assets" and len(rel.parts) > 1 else REVALIDATE
        headers = {"Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
        if vary:
            headers["Vary"] = "Accept"
        return web.FileResponse(path, headers=headers)


def _api_prefixes(app: web.Application) -> frozenset[str]:
    """First path segments of every registered route, plus the reference front's list."""
    found = set(NGINX_API_PREFIXES)
    for resource in app.router.resources():
        canonical = resource.canonical
        segment = canonical.lstrip("/").split("/", 1)[0]
        if segment and "{" not in segment:
            found.add(segment)
    return frozenset(found)


def _first_segment(path: str) -> str:
    return path.lstrip("/").split("/", 1)[0]


def setup(app: web.Application) -> None:
    settings = app[SETTINGS]
    if not settings.ui_dir:
        return
    files = UiFiles(Path(settings.ui_dir))
    prefixes = _api_prefixes(app)
    log.info("serving the web UI from %s", files.root)

    @web.middleware
    async def ui_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return await handler(request)
        path = request.path
        api_path = _first_segment(path) in prefixes or path == "/"
        route = request.match_info.route
        if is_navigation(request) and not path.startswith(SERVER_PAGES) and not (
                route.resource is not None and route.resource.canonical in SERVER_PAGE_ROUTES):
            found = None if api_path else files.find(path)
            return files.respond(found or files.index, vary=api_path)
        if route.resource is not None or api_path:
            response = await handler(request)
            if not response.prepared:
                response.headers.setdefault("Vary", "Accept")
            return response
        found = files.find(path)
        if found is not None:
            return files.respond(found)
        last = path.rstrip("/").rsplit("/", 1)[-1]
        if "." in last:
            return await handler(request)  # a missing file: the kernel's JSON 404, not the app's HTML
        return files.respond(files.index)

    app.middlewares.insert(0, ui_middleware)

