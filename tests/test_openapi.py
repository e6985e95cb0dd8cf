"""``/openapi.json`` describes every route the app serves; ``/docs`` renders it without the internet."""

from __future__ import annotations

import re
from typing import Any

from gofannon.web.middleware import is_catch_all


async def _spec(client: Any) -> dict[str, Any]:
    async with client.get("/openapi.json") as r:
        assert r.status == 200
        assert r.content_type == "application/json"
        return await r.json()  # type: ignore[no-any-return]


async def test_openapi_lists_every_registered_route(client: Any) -> None:
    spec = await _spec(client)
    assert spec["openapi"].startswith("3.1")
    registered = {
        (re.sub(r"\{([^}:]+)(:[^}]*)?\}", r"{\1}", r.resource.canonical), r.method.lower())
        for r in client.server.app.router.routes()
        if r.resource is not None and r.method != "HEAD" and not is_catch_all(r.resource)  # not an API route
    }
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert registered - documented == set()
    assert {("/health", "get"), ("/openapi.json", "get"), ("/docs", "get")} <= documented


async def test_operations_have_unique_ids_and_path_parameters(client: Any) -> None:
    spec = await _spec(client)
    ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    for path, ops in spec["paths"].items():
        names = re.findall(r"\{([^}]+)\}", path)
        for op in ops.values():
            assert [p["name"] for p in op.get("parameters", []) if p["in"] == "path"] == names


async def test_request_bodies_reference_pydantic_schemas_in_components(client: Any) -> None:
    spec = await _spec(client)
    schemas = spec["components"]["schemas"]
    refs = []
    for path, ops in spec["paths"].items():
        for op in ops.values():
            if "requestBody" in op:
                ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                refs.append(ref)
                assert ("400" if path.startswith("/v1/") else "422") in op["responses"]  # /v1 answers as OpenAI
    assert refs, "no route documents a request body"
    for ref in refs:
        assert ref.split("/")[-1] in schemas
    text = str(spec)
    for ref in re.findall(r"#/components/schemas/([A-Za-z0-9_.-]+)", text):
        assert ref in schemas, f"dangling $ref {ref}"


async def test_public_routes_need_no_credentials_in_the_document(client: Any) -> None:
    spec = await _spec(client)
    assert spec["paths"]["/health"]["get"]["security"] == []
    assert spec["paths"]["/health"]["get"]["summary"]


async def test_openapi_and_docs_are_public(client: Any) -> None:
    async with client.get("/docs") as r:
        assert r.status == 200
        assert r.content_type == "text/html"
        html = await r.text()
    assert "openapi.json" in html
    assert "<script src" not in html and "http://" not in html and "https://" not in html  # nothing from a CDN


async def test_plugin_routes_appear_in_the_document(make_settings: Any) -> None:
    import aiohttp
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from gofannon import hookimpl
    from gofannon.app import create_app
    from gofannon.kernel import Kernel

    async def ping(request: web.Request) -> web.Response:
        """Answers pong."""
        return web.json_response({"pong": True})

    class RoutePlugin:
        @hookimpl
        def register_routes(self, register: Any, settings: Any) -> None:
            register("GET", "/plugin-ping/{who}", ping, public=True)

    kernel = Kernel(make_settings(GOFANNON_STORAGE="memory"))
    kernel.pm.register(RoutePlugin(), name="route-plugin")
    server = TestServer(create_app(kernel=kernel), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(server.make_url("/openapi.json")) as r:
                spec = await r.json()
        op = spec["paths"]["/plugin-ping/{who}"]["get"]
        assert op["description"] == "Answers pong." and op["security"] == []
        assert op["parameters"] == [{"name": "who", "in": "path", "required": True, "schema": {"type": "string"}}]
    finally:
        await server.close()


async def test_the_docs_page_renders_the_operations_in_a_real_browser(client: Any, tmp_path: Any) -> None:
    """Headless Chromium loads /docs from the server (no network beyond it) and lists the routes."""
    import asyncio
    import shutil

    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    assert exe, "chromium is needed (the test command installs it)"
    proc = await asyncio.create_subprocess_exec(
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=10000", "--dump-dom", client.url("/docs"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    dom, _ = await asyncio.wait_for(proc.communicate(), 120)
    html = dom.decode()
    assert '<span class="p">/health</span>' in html
    assert "Readiness probe" in html
    assert '<div id="ops">Could not load' not in html
