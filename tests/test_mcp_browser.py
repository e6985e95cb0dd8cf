"""Browser-based MCP clients on another origin: a real headless Chromium page served from a second local site
discovers the OAuth metadata, initializes an MCP session with a bearer token, lists the deployed agents as tools
and calls one, all across origins; a site that is not allowed is refused before anything runs."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from conftest import Client, local_site
from test_demos_browser import Browser, browser  # noqa: F401 - browser is a fixture
from test_mcp_server import ECHO, deploy, new_token

pytestmark = pytest.mark.timeout(180)

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "page", "version": "1"}}}

# What a browser-based MCP client does (the Inspector's direct mode, a web IDE): plain fetch, a bearer token.
CLIENT_PAGE = """<!doctype html><title>mcp page</title><pre id="out">waiting</pre><script>
async function main(base, token) {
  const out = document.getElementById('out');
  try {
    const meta = await (await fetch(base + '/.well-known/oauth-protected-resource')).json();
    const headers = {'Content-Type': 'application/json', 'Accept': 'application/json, text/event-stream',
                     'Authorization': 'Bearer ' + token, 'MCP-Protocol-Version': '2025-06-18'};
    const init = await fetch(base + '/mcp', {method: 'POST', headers, body: JSON.stringify(INIT)});
    const session = init.headers.get('Mcp-Session-Id');
    headers['Mcp-Session-Id'] = session;
    await fetch(base + '/mcp', {method: 'POST', headers,
      body: JSON.stringify({jsonrpc: '2.0', method: 'notifications/initialized'})});
    const list = await (await fetch(base + '/mcp', {method: 'POST', headers,
      body: JSON.stringify({jsonrpc: '2.0', id: 2, method: 'tools/list'})})).json();
    const call = await (await fetch(base + '/mcp', {method: 'POST', headers, body: JSON.stringify(
      {jsonrpc: '2.0', id: 3, method: 'tools/call', params: {name: 'echo', arguments: {inputText: 'from a page'}}})
    })).json();
    out.textContent = JSON.stringify({resource: meta.resource, session: !!session,
      tools: list.result.tools.map(t => t.name), answer: call.result.structuredContent});
  } catch (e) { out.textContent = 'failed: ' + e; }
}
const INIT = %s;
</script>"""


@pytest.fixture
async def page_site() -> AsyncIterator[str]:
    """A second local web site (another origin than the kernel's) serving the client page."""
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=CLIENT_PAGE % json.dumps(INIT), content_type="text/html")

    app = web.Application()
    app.router.add_get("/client.html", page)
    async with local_site(app, "/client.html") as url:
        yield url


async def test_a_page_on_another_local_origin_uses_mcp_with_a_bearer_token(
        serve: Any, page_site: str, browser: Browser) -> None:  # noqa: F811 - the fixture
    client = await serve()  # APP_ENV=test: loopback origins are allowed
    await client.login("alice")
    await deploy(client, name="Echo", friendlyName="echo", description="Repeats what you say", code=ECHO,
                 inputSchema={"inputText": "string"}, outputSchema={"outputText": "string"})
    token = await new_token(client)
    await browser.send("Page.navigate", url=page_site.replace("127.0.0.1", "localhost"))
    await browser.wait_for("document.readyState === 'complete'")
    base = client.url("").rstrip("/")
    await browser.evaluate(f"main({json.dumps(base)}, {json.dumps(token)})")
    shown = json.loads(await browser.wait_for(
        "(t => t !== 'waiting' && t)(document.getElementById('out').textContent)"))
    assert shown == {"resource": base + "/mcp", "session": True, "tools": ["echo"],
                     "answer": {"outputText": "echo: from a page"}}


async def raw(client: Client, method: str, path: str, origin: str, **headers: str) -> aiohttp.ClientResponse:
    async with client.session.request(method, client.url(path), headers={"Origin": origin, **headers},
                                      data=json.dumps(INIT) if method == "POST" else None) as r:
        await r.read()
        return r


PREFLIGHT = {"Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization,content-type,mcp-protocol-version"}


async def test_only_listed_sites_may_call_mcp_across_origins(serve: Any) -> None:
    listed = "https://inspector.example.org"
    client = await serve(GOFANNON_MCP_ALLOWED_ORIGINS=f"{listed}, https://ide.example.com")
    await client.login("alice")
    token = await new_token(client)
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream"}

    ok = await raw(client, "OPTIONS", "/mcp", listed, **PREFLIGHT)
    assert ok.status == 204
    assert ok.headers["Access-Control-Allow-Origin"] == listed
    assert "POST" in ok.headers["Access-Control-Allow-Methods"]
    assert "mcp-protocol-version" in ok.headers["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Credentials" not in ok.headers  # a bearer token, never the session cookie
    answer = await raw(client, "POST", "/mcp", listed, **auth)
    assert answer.status == 200
    assert answer.headers["Access-Control-Allow-Origin"] == listed
    assert "Mcp-Session-Id" in answer.headers["Access-Control-Expose-Headers"]

    refused = await raw(client, "OPTIONS", "/mcp", "https://evil.example", **PREFLIGHT)
    assert refused.status == 400 and "Access-Control-Allow-Origin" not in refused.headers
    forbidden = await raw(client, "POST", "/mcp", "https://evil.example", **auth)
    assert forbidden.status == 403 and "Access-Control-Allow-Origin" not in forbidden.headers
    # other routes keep FRONTEND_URL as their only cross-origin caller
    other = await raw(client, "OPTIONS", "/agents", listed, **PREFLIGHT)
    assert other.status == 400


async def test_oauth_discovery_and_token_endpoints_answer_any_origin(serve: Any) -> None:
    client = await serve()
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-authorization-server"):
        async with client.session.get(client.url(path), headers={"Origin": "https://any.example"}) as r:
            assert r.status == 200
            assert r.headers["Access-Control-Allow-Origin"] == "*"
    pre = await raw(client, "OPTIONS", "/oauth/token", "https://any.example",
                    **{"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
    assert pre.status == 204 and pre.headers["Access-Control-Allow-Origin"] == "*"


async def test_an_origin_that_is_not_a_url_is_refused_not_a_crash(serve: Any) -> None:
    client = await serve(GOFANNON_MCP_ALLOWED_ORIGINS="http://[broken, https://ok.example")
    for origin in ("http://[", "http://[::1", "null", "\u00e9://x", "http://a:b:c"):
        pre = await raw(client, "OPTIONS", "/mcp", origin, **PREFLIGHT)
        assert pre.status == 400, (origin, pre.status)
        post = await raw(client, "POST", "/mcp", origin, **{"Content-Type": "application/json"})
        assert post.status in (401, 403), (origin, post.status)
    ok = await raw(client, "OPTIONS", "/mcp", "https://ok.example", **PREFLIGHT)
    assert ok.status == 204
