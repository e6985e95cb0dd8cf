"""MCP connectors over HTTP against a real MCP server (official SDK) on 127.0.0.1: streamable HTTP and SSE."""

from __future__ import annotations

from typing import Any, Callable

import pytest
from conftest import free_port
from fakes.mcp_server import McpServerProcess

from gofannon.kernel import Kernel

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("path", ["/mcp", "/sse"])
async def test_user_lists_tools_of_an_mcp_server(path: str, serve: Callable[..., Any],
                                                 mcp_server: McpServerProcess) -> None:
    client = await serve()
    await client.login("alice")
    url = mcp_server.url(path)
    async with client.post("/mcp/tools", json={"mcp_url": url}) as r:
        assert r.status == 200, await r.text()
        body = await r.json()
    assert body["mcp_url"] == url
    tools = {t["name"]: t for t in body["tools"]}
    assert set(tools) == {"add", "echo", "shout", "fail"}
    assert tools["add"]["description"] == "Add two integers and return the sum."
    assert tools["add"]["inputSchema"]["required"] == ["a", "b"]


@pytest.mark.parametrize("path", ["/secure/mcp", "/secure/sse"])
async def test_bearer_token_opens_a_protected_server(path: str, serve: Callable[..., Any],
                                                    mcp_server: McpServerProcess) -> None:
    client = await serve()
    await client.login("alice")
    url = mcp_server.url(path)
    async with client.post("/mcp/tools", json={"mcp_url": url, "auth_token": mcp_server.token}) as r:
        assert r.status == 200, await r.text()
        assert {t["name"] for t in (await r.json())["tools"]} >= {"add"}
    async with client.post("/mcp/tools", json={"mcp_url": url}) as r:
        assert r.status == 502
        detail = (await r.json())["detail"]
    assert "401" in detail and "auth_token" in detail
    async with client.post("/mcp/tools", json={"mcp_url": url, "auth_token": "wrong"}) as r:
        assert r.status == 502


async def test_bad_scheme_is_a_400_with_the_contract_wording(serve: Callable[..., Any]) -> None:
    client = await serve()
    await client.login("alice")
    async with client.post("/mcp/tools", json={"mcp_url": "ftp://example.com/mcp"}) as r:
        assert r.status == 400
        assert (await r.json())["detail"] == (
            "Invalid MCP server URL scheme: ftp://example.com/mcp. Must be http:// or https://")


async def test_missing_url_is_a_422(serve: Callable[..., Any]) -> None:
    client = await serve()
    await client.login("alice")
    async with client.post("/mcp/tools", json={"auth_token": "x"}) as r:
        assert r.status == 422
        assert (await r.json())["detail"][0]["loc"] == ["body", "mcp_url"]


async def test_internal_address_is_refused_by_the_guard(serve: Callable[..., Any],
                                                       mcp_server: McpServerProcess) -> None:
    client = await serve(GOFANNON_OUTBOUND_ALLOW="none")
    await client.login("alice")
    for url in (mcp_server.url("/mcp"), "http://169.254.169.254/mcp", "http://2130706433/sse"):
        async with client.post("/mcp/tools", json={"mcp_url": url}) as r:
            assert r.status == 400, url
            assert "refused" in (await r.json())["detail"]


async def test_unreachable_server_is_a_502_not_a_500(serve: Callable[..., Any]) -> None:
    client = await serve()
    await client.login("alice")
    async with client.post("/mcp/tools", json={"mcp_url": f"http://127.0.0.1:{free_port()}/mcp"}) as r:
        assert r.status == 502
        assert "Failed to connect to MCP server or list tools" in (await r.json())["detail"]


async def test_listing_needs_a_signed_in_user(serve: Callable[..., Any], mcp_server: McpServerProcess) -> None:
    client = await serve()
    async with client.post("/mcp/tools", json={"mcp_url": mcp_server.url()}) as r:
        assert r.status == 401


@pytest.mark.parametrize("path", ["/mcp", "/secure/sse"])
async def test_connector_calls_a_tool(path: str, make_settings: Callable[..., Any],
                                      mcp_server: McpServerProcess) -> None:
    kernel = Kernel(make_settings())
    try:
        mcp = kernel.tool_connectors["mcp"]
        token = mcp_server.token if path.startswith("/secure") else None
        added = await mcp.call_tool(kernel, mcp_server.url(path), "add", {"a": 2, "b": 40}, token)
        assert added["isError"] is False and added["content"][0]["text"] == "42"
        shouted = await mcp.call_tool(kernel, mcp_server.url(path), "shout", {"text": "hey"}, token)
        assert shouted["structuredContent"] == {"loud": "HEY", "length": 3}
        failed = await mcp.call_tool(kernel, mcp_server.url(path), "fail", {"reason": "no"}, token)
        assert failed["isError"] is True
        from gofannon.errors import BadRequest

        with pytest.raises(BadRequest, match="Tool 'nope' not found"):
            await mcp.call_tool(kernel, mcp_server.url(path), "nope", {}, token)
    finally:
        await kernel.close()
