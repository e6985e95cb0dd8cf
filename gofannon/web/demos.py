"""Routes: demo apps (wire contract §1.12, §5.2 with DECISIONS.md) and the page that runs a saved demo.

``GET /demos/{id}/app`` serves the demo's html/css/js as one page on this origin with ``API_BASE_URL`` set to
this server, so its ``fetch`` calls to ``/rest/...`` carry the viewer's session. Only the demo's owner may open
it (its script runs with the viewer's credentials), and its Content-Security-Policy lets it talk to this
origin only.
"""

from __future__ import annotations

import html
import json
from typing import Any

from aiohttp import web

from gofannon.models.demo import CreateDemoAppRequest, GenerateDemoCodeRequest
from gofannon.services import demos
from gofannon.web.workspace import active_workspace
from gofannon.web.common import (
    api_doc,
    identity,
    json_response,
    kernel_of,
    model_call,
    no_content,
    parse_body,
    read_json,
    validate,
)

routes = web.RouteTableDef()


@routes.post("/demos/generate-code")
@api_doc(summary="Generate a demo web app ({html, css, js, thoughts}) for deployed agents (one charged LLM call)",
         body=GenerateDemoCodeRequest, tags=["demos"])
@model_call
async def generate_demo_code(request: web.Request) -> web.Response:
    ident = identity(request)
    body = await parse_body(request, GenerateDemoCodeRequest)
    workspace_id, _role = await active_workspace(request)
    return json_response(await demos.generate_demo_code(kernel_of(request), ident, body, workspace_id=workspace_id))


@routes.post("/demos")
@api_doc(summary="Save a demo app (owned by the caller)", body=CreateDemoAppRequest, status=201, tags=["demos"])
async def create_demo(request: web.Request) -> web.Response:
    ident = identity(request)
    body = await parse_body(request, CreateDemoAppRequest)
    workspace_id, _role = await active_workspace(request)
    return json_response(await demos.create_demo(kernel_of(request), ident, body, workspace_id=workspace_id),
                         status=201)


@routes.get("/demos")
@api_doc(summary="The caller's demo apps (all of them for a site admin)", tags=["demos"])
async def list_demos(request: web.Request) -> web.Response:
    workspace_id, _role = await active_workspace(request)
    return json_response(await demos.list_demos(kernel_of(request), identity(request), workspace_id))


@routes.get("/demos/{demo_id}")
@api_doc(summary="One demo app", tags=["demos"])
async def get_demo(request: web.Request) -> web.Response:
    return json_response(await demos.get_demo(kernel_of(request), identity(request), request.match_info["demo_id"]))


@routes.put("/demos/{demo_id}")
@api_doc(summary="Replace a demo app's content (created_at kept; a stale `_rev` or If-Match answers 409)",
         body=CreateDemoAppRequest, tags=["demos"])
async def replace_demo(request: web.Request) -> web.Response:
    ident = identity(request)
    data: Any = await read_json(request)
    body = validate(CreateDemoAppRequest, data)
    rev = data.get("_rev") if isinstance(data, dict) else None
    rev = rev or request.headers.get("If-Match", "").strip('"') or None
    doc = await demos.replace_demo(kernel_of(request), ident, request.match_info["demo_id"], body,
                                   str(rev) if rev else None)
    return json_response(doc)


@routes.delete("/demos/{demo_id}")
@api_doc(summary="Delete a demo app", status=204, tags=["demos"])
async def delete_demo(request: web.Request) -> web.Response:
    await demos.delete_demo(kernel_of(request), identity(request), request.match_info["demo_id"])
    return no_content()


def _script_literal(value: str) -> str:
    """A JS string literal that cannot close the surrounding <script> element."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _inline(text: str, tag: str) -> str:
    """Model-written CSS/JS placed inside <style>/<script>: a literal closing tag would end the element early."""
    return (text or "").replace(f"</{tag}", f"<\\/{tag}")


def render_page(doc: dict[str, Any], api_base_url: str) -> str:
    code = doc.get("generatedCode") or {}
    title = html.escape(str(doc.get("name") or "Demo"))
    return (
        "<!doctype html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{title}</title>\n<style>\n{_inline(str(code.get('css') or ''), 'style')}\n</style>\n</head>\n<body>\n"
        f"{code.get('html') or ''}\n"
        f"<script>const API_BASE_URL = {_script_literal(api_base_url)};</script>\n"
        f"<script>\n{_inline(str(code.get('js') or ''), 'script')}\n</script>\n</body>\n</html>\n"
    )


@routes.get("/demos/{demo_id}/app")
@api_doc(summary="Run a saved demo: its page on this origin with API_BASE_URL set to this server (owner only)",
         tags=["demos"])
async def demo_app(request: web.Request) -> web.Response:
    ident = identity(request)
    kernel = kernel_of(request)
    doc = await demos.app_demo(kernel, ident, request.match_info["demo_id"])
    base = str(request.url.origin())
    frontend = kernel.settings.frontend_url.rstrip("/")
    csp = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
           "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; form-action 'self'; "
           f"base-uri 'none'; frame-ancestors 'self' {frontend}")
    return web.Response(text=render_page(doc, base), content_type="text/html", headers={
        "Content-Security-Policy": csp, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    })
