"""Two API processes on Redis behind a round-robin balancer: an MCP session begun on one continues on the other."""

from __future__ import annotations

import os
import time
from typing import Any

import httpx2
from test_mcp_server import ECHO, SLOW_TALKER, deploy, mcp_session, new_token


class RoundRobin(httpx2.AsyncHTTPTransport):
    """A load balancer in the client: each request goes to the next API process in turn."""

    def __init__(self, ports: list[int]) -> None:
        super().__init__()
        self.ports = ports
        self.served: list[tuple[int, str]] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        port = self.ports[len(self.served) % len(self.ports)]
        request.url = request.url.copy_with(port=port)
        self.served.append((port, request.method))
        return await super().handle_async_request(request)


async def test_a_session_started_on_one_process_continues_on_another(serve: Any, rq_worker: Any) -> None:
    env = rq_worker(GOFANNON_STORAGE="redis", GOFANNON_REDIS_PREFIX=f"mcp{os.getpid()}{time.monotonic_ns()}:",
                    GOFANNON_QUEUE=f"mcp-{os.getpid()}-{time.monotonic_ns()}")
    one = await serve(**env)
    two = await serve(**env)
    await one.login("alice")
    await deploy(one, name="Echo", friendlyName="echo", code=ECHO, outputSchema={"outputText": "string"})
    await deploy(one, name="Talker", friendlyName="talker", code=SLOW_TALKER)
    token = await new_token(one)
    balancer = RoundRobin([one.server.port, two.server.port])
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async with mcp_session(one.url("/mcp"), token, transport=balancer) as session:
        await session.initialize()
        tools = (await session.list_tools()).tools
        echoed = await session.call_tool("echo", {"inputText": "across"})
        talked = await session.call_tool("talker", {"inputText": "x"}, progress_callback=on_progress)
    assert sorted(t.name for t in tools) == ["echo", "talker"]
    assert echoed.structured_content == {"outputText": "echo: across"}
    assert talked.structured_content == {"outputText": "finished"} and progress
    posts = [port for port, method in balancer.served if method == "POST"]
    assert set(posts) == {one.server.port, two.server.port}  # both processes answered the one session


async def test_a_deployment_made_through_another_process_reaches_open_streams(serve: Any, rq_worker: Any) -> None:
    import asyncio

    from mcp import types

    env = rq_worker(GOFANNON_STORAGE="redis", GOFANNON_REDIS_PREFIX=f"mcp{os.getpid()}{time.monotonic_ns()}:",
                    GOFANNON_QUEUE=f"mcp-{os.getpid()}-{time.monotonic_ns()}")
    one = await serve(**env)
    two = await serve(**env)
    await two.login("alice")
    token = await new_token(two)
    changed = asyncio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with mcp_session(one.url("/mcp"), token, message_handler=on_message) as session:  # all on process one
        await session.initialize()
        assert (await session.list_tools()).tools == []
        await asyncio.sleep(0.3)  # let the client open its GET stream
        await deploy(two, name="Elsewhere", friendlyName="elsewhere", code=ECHO)  # deployed through process two
        await asyncio.wait_for(changed.wait(), 20)
        assert [t.name for t in (await session.list_tools()).tools] == ["elsewhere"]


async def test_a_cancel_sent_to_another_process_stops_the_run_on_the_worker(serve: Any, rq_worker: Any) -> None:
    import asyncio
    import json

    import aiohttp
    from aiohttp import web
    from aiohttp.test_utils import TestServer
    from conftest import free_port
    from test_mcp_server import LOOPER

    hits: list[int] = []

    async def tick(request: web.Request) -> web.Response:
        hits.append(1)
        return web.json_response({})

    site_app = web.Application()
    site_app.router.add_get("/tick", tick)
    site = TestServer(site_app, host="127.0.0.1", port=free_port())
    await site.start_server()
    env = rq_worker(GOFANNON_STORAGE="redis", GOFANNON_REDIS_PREFIX=f"mcp{os.getpid()}{time.monotonic_ns()}:",
                    GOFANNON_QUEUE=f"mcp-{os.getpid()}-{time.monotonic_ns()}")
    one = await serve(**env)
    two = await serve(**env)
    await one.login("alice")
    await deploy(one, name="Looper", friendlyName="looper", code=LOOPER, inputSchema={"url": "string"})
    token = await new_token(one)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
               "Accept": "application/json, text/event-stream"}
    try:
        async with aiohttp.ClientSession() as http:
            init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
            async with http.post(one.url("/mcp"), json=init, headers=headers) as r:
                headers["Mcp-Session-Id"] = r.headers["Mcp-Session-Id"]
            call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                    "params": {"name": "looper", "arguments": {"url": str(site.make_url("/tick"))}}}

            async def call_on_one() -> tuple[int, bytes]:
                async with http.post(one.url("/mcp"), data=json.dumps(call), headers=headers) as r:
                    return r.status, await r.read()

            pending = asyncio.ensure_future(call_on_one())
            while len(hits) < 3:  # running on the worker
                await asyncio.sleep(0.05)
            cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}}
            async with http.post(two.url("/mcp"), json=cancel, headers=headers) as r:  # to the other process
                assert r.status == 202
            status, body = await asyncio.wait_for(pending, 30)
        assert status == 200 and b'"result"' not in body  # cancelled: no answer
        await asyncio.sleep(0.5)
        count = len(hits)
        await asyncio.sleep(0.5)
        assert len(hits) == count  # the run on the worker stopped
        async with one.get("/runs") as r:
            (run,) = (await r.json())["runs"]
        assert run["status"] == "stopped" and run["agentName"] == "looper"
    finally:
        await site.close()
