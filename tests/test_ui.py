"""Serving a built single-page app from GOFANNON_UI_DIR next to the API, on the same origin."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable

import pytest

from gofannon.app import create_app

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
FETCH = {"Accept": "*/*"}
INDEX = "<!doctype html><html><body><div id=root></div><script src=/assets/app-3f9a.js></script></body></html>"
JS = "console.log('app');"


@pytest.fixture
def ui_dir(tmp_path: Path) -> Path:
    """A small built app, plus a secret next to it that must never be served."""
    ui = tmp_path / "dist"
    (ui / "assets").mkdir(parents=True)
    (ui / "index.html").write_text(INDEX)
    (ui / "assets" / "app-3f9a.js").write_text(JS)
    (ui / "favicon.ico").write_bytes(b"\x00\x00\x01\x00")
    (ui / ".env").write_text("SECRET=dotfile")
    (tmp_path / "secret.txt").write_text("SECRET=outside")
    (ui / "link.txt").symlink_to(tmp_path / "secret.txt")
    return ui


@pytest.fixture
async def ui_client(serve: Callable[..., Any], ui_dir: Path) -> Any:
    return await serve(GOFANNON_UI_DIR=str(ui_dir))


async def get(client: Any, path: str, headers: dict[str, str]) -> tuple[int, str, dict[str, str]]:
    async with client.get(path, headers=headers) as r:
        return r.status, await r.text(), dict(r.headers)


async def test_reloading_an_api_named_page_shows_the_app(ui_client: Any) -> None:
    for path in ["/agents", "/chat", "/demos/abc123", "/data-store/namespaces", "/"]:
        status, body, headers = await get(ui_client, path, BROWSER)
        assert (status, body) == (200, INDEX), path
        assert headers["Content-Type"].startswith("text/html")
        assert headers["Cache-Control"] == "no-cache" and "Accept" in headers.get("Vary", "")


async def test_scripts_fetching_api_paths_still_reach_the_api(ui_client: Any) -> None:
    status, body, headers = await get(ui_client, "/agents", FETCH)
    assert status == 401 and headers["Content-Type"].startswith("application/json") and body != INDEX
    assert headers["X-Auth-Reason"] == "not_authenticated"
    status, _, _ = await get(ui_client, "/data-store/namespaces", {"Accept": "application/json"})
    assert status == 401
    await ui_client.login("alice")
    async with ui_client.get("/agents", headers=FETCH) as r:
        assert r.status == 200 and r.content_type == "application/json"
        assert isinstance(await r.json(), list)
    async with ui_client.get("/data-store/namespaces", headers=FETCH) as r:
        assert r.status == 200 and (await r.json())["namespaces"] == []
    async with ui_client.get("/health", headers=BROWSER) as r:
        assert (await r.json())["status"] == "healthy"  # a server page, even in a browser


async def test_a_fetch_that_asks_for_html_but_is_not_a_navigation_reaches_the_api(ui_client: Any) -> None:
    status, body, _ = await get(ui_client, "/agents", {**BROWSER, "Sec-Fetch-Mode": "cors"})
    assert status == 401 and body != INDEX
    status, body, _ = await get(ui_client, "/agents", {**BROWSER, "Sec-Fetch-Mode": "navigate"})
    assert (status, body) == (200, INDEX)


async def test_app_pages_that_are_not_api_paths_get_the_app_for_any_accept(ui_client: Any) -> None:
    for path in ["/profile", "/data-stores/files%3Arepo", "/agent/123", "/create-agent/tools"]:
        for headers in (FETCH, BROWSER):
            assert (await get(ui_client, path, headers))[:2] == (200, INDEX), path


async def test_assets_are_served_with_long_caching_and_other_files_revalidate(ui_client: Any) -> None:
    status, body, headers = await get(ui_client, "/assets/app-3f9a.js", FETCH)
    assert (status, body) == (200, JS)
    assert "javascript" in headers["Content-Type"]
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert "ETag" in headers or "Last-Modified" in headers
    async with ui_client.get("/favicon.ico") as r:
        assert r.status == 200 and await r.read() == b"\x00\x00\x01\x00"
        assert r.headers["Cache-Control"] == "no-cache"
    async with ui_client.request("HEAD", "/assets/app-3f9a.js") as r:
        assert r.status == 200 and int(r.headers["Content-Length"]) == len(JS)


async def test_unknown_api_paths_and_missing_files_stay_json_404s(ui_client: Any) -> None:
    for path in ["/agents/x/y/z/unknown", "/data-store/nope/nope/nope/nope/nope", "/assets/missing-1234.js",
                 "/runs/a/b/c"]:
        status, body, headers = await get(ui_client, path, FETCH)
        assert status in (401, 404), path
        assert headers["Content-Type"].startswith("application/json") and body != INDEX, path


async def test_posts_never_get_the_app(ui_client: Any) -> None:
    for path in ["/profile", "/agents/x/y/z"]:
        async with ui_client.post(path, headers=BROWSER, json={}) as r:
            assert r.status in (401, 404, 405) and await r.text() != INDEX, path


async def test_the_login_flow_still_works_in_a_browser(ui_client: Any) -> None:
    async with ui_client.get("/auth/login/dev_stub?return_to=/agents", headers=BROWSER) as r:
        assert r.status == 302
    await ui_client.login("alice")
    async with ui_client.get("/auth/me", headers=BROWSER) as r:
        assert r.status == 200 and (await r.json())["uid"]


async def raw_get(client: Any, raw_path: str) -> tuple[int, bytes]:
    """Send the path bytes exactly as given (no client-side normalisation of dot segments)."""
    host, port = client.server.host, client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {raw_path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
                 .encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def test_nothing_outside_the_ui_directory_is_ever_served(ui_client: Any) -> None:
    for raw in ["/../secret.txt", "/%2e%2e/secret.txt", "/assets/..%2f..%2fsecret.txt", "/assets/../../secret.txt",
                "/..%5csecret.txt", "/link.txt", "/.env", "/assets/%2e%2e/%2e%2e/secret.txt"]:
        status, body = await raw_get(ui_client, raw)
        assert b"SECRET" not in body, raw
        assert status in (200, 400, 404), raw  # at worst the app's index page


async def test_without_a_ui_dir_unknown_paths_are_json_404s(serve: Callable[..., Any]) -> None:
    client = await serve()
    status, body, headers = await get(client, "/profile", BROWSER)
    assert status == 404 and headers["Content-Type"].startswith("application/json") and "detail" in body


def test_a_ui_dir_without_index_html_stops_start_up_with_a_clear_message(
        make_settings: Callable[..., Any], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match="no index.html"):
        create_app(make_settings(GOFANNON_UI_DIR=str(tmp_path / "empty")))


async def test_a_saved_demo_app_opens_as_its_own_page_while_demo_pages_reload_the_app(ui_client: Any) -> None:
    await ui_client.login("alice")
    api = {"friendlyName": "shouter", "agentId": "a1", "description": "Shouts",
           "inputSchema": {"inputText": "string"}, "outputSchema": {"outputText": "string"}}
    async with ui_client.post("/demos", json={
            "name": "Shout demo", "selectedApis": [api], "userPrompt": "A button",
            "modelConfig": {"provider": "openai", "model": "gpt-5-mini", "parameters": {}},
            "generatedCode": {"html": "<p id='demo-marker'>demo</p>", "css": "", "js": ""}}) as r:
        assert r.status == 201, await r.text()
        demo_id = (await r.json())["_id"]
    status, body, _ = await get(ui_client, f"/demos/{demo_id}", BROWSER)
    assert (status, body) == (200, INDEX)
    status, body, _ = await get(ui_client, f"/demos/{demo_id}/app", {**BROWSER, "Sec-Fetch-Mode": "navigate"})
    assert status == 200 and "demo-marker" in body and body != INDEX


async def test_a_wrong_method_is_a_405_naming_the_allowed_ones_with_the_ui_served(ui_client: Any) -> None:
    async with ui_client.request("PATCH", "/health") as r:
        assert r.status == 405 and (await r.json()) == {"detail": "Method Not Allowed"}
        assert r.headers["Allow"] == "GET, HEAD"
