"""Gofannon as an MCP server: the official MCP SDK client over Streamable HTTP against the real app at /mcp."""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import aiohttp
import anyio
import httpx2
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import Client, free_port
from fakes import FakeLLMServer, Reply
from mcp import types
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ToolsListChanged
from test_agents_crud import create
from test_rest import MODEL

ECHO = "async def run(input_dict, tools):\n    return {'outputText': 'echo: ' + input_dict['inputText']}\n"
FAILING = "async def run(input_dict, tools):\n    raise ValueError('the agent gave up')\n"
WRONG_SHAPE = "async def run(input_dict, tools):\n    return {'outputText': 42}\n"
SLOW_TALKER = """
import asyncio
async def run(input_dict, tools):
    for i in range(3):
        print(f'step {i}')
        await asyncio.sleep(0.6)
    return {'outputText': 'finished'}
"""


def ticker(url: str) -> str:
    """An echo agent that first calls ``url``: the site's hit log shows whether it ran."""
    return ("import httpx\nasync def run(input_dict, tools):\n    async with httpx.AsyncClient() as http:\n"
            f"        await http.get({url!r})\n"
            "    return {'outputText': 'echo: ' + str(input_dict.get('inputText'))}\n")


async def deploy(client: Client, **agent: Any) -> dict[str, Any]:
    doc = await create(client, **agent)
    async with client.post(f"/agents/{doc['_id']}/deploy") as r:
        assert r.status == 201, await r.text()
    return doc


async def new_token(client: Client, **scope: Any) -> str:
    async with client.post("/users/me/tokens", json={"name": "mcp", **scope}) as r:
        assert r.status == 201, await r.text()
        return (await r.json())["token"]  # type: ignore[no-any-return]


@asynccontextmanager
async def mcp_session(url: str, token: str | None, *, message_handler: Any = None,
                      transport: Any = None, headers: dict[str, str] | None = None) -> AsyncIterator[ClientSession]:
    headers = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}
    kw: dict[str, Any] = {"headers": headers, "timeout": httpx2.Timeout(30, read=120)}
    if transport is not None:
        kw["transport"] = transport
    async with httpx2.AsyncClient(**kw) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write, message_handler=message_handler) as session:
                yield session


@pytest.fixture
async def alice(serve: Any) -> Client:
    client = await serve()
    await client.login("alice")
    return client


async def test_a_client_initializes_and_lists_deployed_agents_as_tools(alice: Client) -> None:
    await deploy(alice, name="Echo", friendlyName="echo", description="Repeats what you say", code=ECHO,
                 inputSchema={"inputText": "string"}, outputSchema={"outputText": "string"})
    await create(alice, name="Draft", friendlyName="draft", code=ECHO)  # not deployed: not a tool
    token = await new_token(alice)
    async with mcp_session(alice.url("/mcp"), token) as session:
        init = session.initialize_result or await session.initialize()
        assert init.server_info.name == "gofannon"
        assert init.capabilities.tools is not None and init.capabilities.tools.list_changed is True
        assert init.protocol_version in ("2025-06-18", "2025-11-25")
        tools = (await session.list_tools()).tools
    assert [t.name for t in tools] == ["echo"]
    echo = tools[0]
    assert echo.description == "Repeats what you say"
    assert echo.input_schema == {"type": "object", "properties": {"inputText": {"type": "string",
                                 "description": "inputText"}}, "required": ["inputText"]}
    assert echo.output_schema == {"type": "object", "properties": {"outputText": {"type": "string",
                                  "description": "outputText"}}, "required": ["outputText"]}


async def test_calling_a_tool_runs_the_agent_and_answers_text_and_structured_content(alice: Client) -> None:
    await deploy(alice, name="Echo", friendlyName="echo", code=ECHO, inputSchema={"inputText": "string"},
                 outputSchema={"outputText": "string"})
    token = await new_token(alice)
    async with mcp_session(alice.url("/mcp"), token) as session:
        await session.initialize()
        await session.list_tools()
        result = await session.call_tool("echo", {"inputText": "hello"})
    assert not result.is_error
    assert result.structured_content == {"outputText": "echo: hello"}
    assert json.loads(result.content[0].text) == {"outputText": "echo: hello"}
    async with alice.get("/runs") as r:  # like /rest: a call that ends normally leaves no run record
        assert (await r.json())["runs"] == []


LLM_AGENT = f"""
from services.llm_service import call_llm

async def run(input_dict, tools):
    content, thoughts = await call_llm(provider="openai", model="{MODEL}",
                                       messages=[{{"role": "user", "content": input_dict["inputText"]}}],
                                       parameters={{}}, user_service=None, user_id=None)
    return {{"outputText": content}}
"""


async def test_a_tool_call_is_charged_to_the_caller_and_in_their_usage_history(serve: Any,
                                                                                 fake_openai: FakeLLMServer) -> None:
    alice = await serve(**fake_openai.env)
    await alice.login("alice")
    await deploy(alice, name="Asker", friendlyName="asker", code=LLM_AGENT)
    fake_openai.respond(lambda req: Reply(f"model says: {req.last_user_text}", input_tokens=1000, output_tokens=500))
    bob = Client(alice.server, aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)))
    try:
        await bob.login("bob")
        async with bob.get("/users/me") as r:
            before = (await r.json())["usageInfo"]["spendRemaining"]
        token = await new_token(bob)
        async with mcp_session(alice.url("/mcp"), token) as session:
            await session.initialize()
            result = await session.call_tool("asker", {"inputText": "hi"})
        assert result.structured_content == {"outputText": "model says: hi"}
        async with bob.get("/users/me") as r:
            after = (await r.json())["usageInfo"]["spendRemaining"]
        async with bob.get("/users/me/usage") as r:
            history = await r.json()
        assert after < before  # bob called, bob paid (not alice, who owns the agent)
        entries = history["usage"] if isinstance(history, dict) else history
        assert len(entries) == 1 and entries[0]["responseCost"] > 0 and MODEL in json.dumps(entries[0]["metadata"])
    finally:
        await bob.session.close()


async def test_an_agent_error_is_a_tool_result_with_is_error(alice: Client) -> None:
    await deploy(alice, name="Failing", friendlyName="failing", code=FAILING)
    await deploy(alice, name="Shape", friendlyName="shape", code=WRONG_SHAPE, outputSchema={"outputText": "string"})
    token = await new_token(alice)
    async with mcp_session(alice.url("/mcp"), token) as session:
        await session.initialize()
        failed = await session.call_tool("failing", {"inputText": "x"})
        misshapen = await session.call_tool("shape", {"inputText": "x"})
    assert failed.is_error and "the agent gave up" in failed.content[0].text
    assert failed.structured_content is None
    assert misshapen.is_error and "does not match its outputSchema" in misshapen.content[0].text


async def test_an_unknown_tool_is_a_json_rpc_error_and_bad_arguments_an_error_result_and_nothing_runs(
        alice: Client, site: tuple[str, list[float]]) -> None:
    url, hits = site
    # validateInput or not: MCP checks every call against the inputSchema it advertised
    await deploy(alice, name="Strict", friendlyName="strict", code=ticker(url), inputSchema={"inputText": "string"},
                 validateInput=True)
    await deploy(alice, name="Plain", friendlyName="plain", code=ticker(url),
                 inputSchema={"inputText": "string", "count": "integer"})
    token = await new_token(alice)
    async with mcp_session(alice.url("/mcp"), token) as session:
        await session.initialize()
        with pytest.raises(MCPError) as unknown:
            await session.call_tool("nope", {})
        bad = await session.call_tool("strict", {"inputText": 3})
        wrong_type = await session.call_tool("plain", {"inputText": "x", "count": "three"})
        missing = await session.call_tool("plain", {"count": 3})
        assert hits == []  # none of these ran
        fine = await session.call_tool("plain", {"inputText": "x", "count": 3})
    assert unknown.value.error.code == -32602 and "Unknown tool: nope" in unknown.value.error.message
    assert bad.is_error and "inputText: 3 is not of type 'string'" in bad.content[0].text
    assert wrong_type.is_error and "count: 'three' is not of type 'integer'" in wrong_type.content[0].text
    assert missing.is_error and "'inputText' is a required property" in missing.content[0].text
    assert not fine.is_error and fine.structured_content == {"outputText": "echo: x"} and len(hits) == 1


async def test_a_stateless_call_with_bad_arguments_is_an_error_result_and_nothing_runs(
        alice: Client, site: tuple[str, list[float]]) -> None:
    url, hits = site
    await deploy(alice, name="Plain", friendlyName="plain", code=ticker(url), inputSchema={"inputText": "string"})
    await deploy(alice, name="Open", friendlyName="open", code=ECHO, inputSchema={})  # any arguments
    async with stateless_client(alice.url("/mcp"), await new_token(alice)) as client:
        bad = await client.call_tool("plain", {"inputText": ["a"]})
        assert hits == []
        anything = await client.call_tool("open", {"inputText": "x", "extra": {"deep": [1, 2]}})
    assert bad.is_error and "inputText: ['a'] is not of type 'string'" in bad.content[0].text
    assert not anything.is_error and anything.structured_content == {"outputText": "echo: x"}


SHOW_INPUT = ("async def run(input_dict, tools):\n"
              "    return {'kind': type(input_dict).__name__, 'input': input_dict}\n")


async def test_input_schemas_become_valid_json_schema_objects_and_calls_follow_them(alice: Client) -> None:
    from jsonschema import Draft202012Validator

    items = {"type": "array", "items": {"type": "string"}, "minItems": 1}
    await deploy(alice, name="Nested", friendlyName="nested", code=SHOW_INPUT, outputSchema={},
                 inputSchema={"opts": {"a": "string"}, "q": {"type": "integer"}})
    await deploy(alice, name="Lister", friendlyName="lister", code=SHOW_INPUT, inputSchema=items, outputSchema={})
    # What zod-to-json-schema makes: the root a reference into its definitions (and a nullable object)
    zod = {"$schema": "http://json-schema.org/draft-07/schema#", "$ref": "#/definitions/Args", "definitions": {
        "Args": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    await deploy(alice, name="Zod", friendlyName="zod", code=SHOW_INPUT, inputSchema=zod, outputSchema={})
    await deploy(alice, name="Maybe", friendlyName="maybe", code=SHOW_INPUT, outputSchema={},
                 inputSchema={"type": ["object", "null"], "properties": {"n": {"type": "integer"}}})
    token = await new_token(alice)
    async with mcp_session(alice.url("/mcp"), token) as session:
        await session.initialize()
        tools = {t.name: t.input_schema for t in (await session.list_tools()).tools}
        zod_ok = await session.call_tool("zod", {"city": "Oslo"})
        zod_bad = await session.call_tool("zod", {})
        maybe = await session.call_tool("maybe", {"n": 2})
        nested_ok = await session.call_tool("nested", {"opts": {"a": "x"}, "q": 1})
        nested_bad = await session.call_tool("nested", {"opts": {"a": 1}, "q": 1})
        listed = await session.call_tool("lister", {"input": ["a", "b"]})
        empty = await session.call_tool("lister", {"input": []})
    for schema in tools.values():
        Draft202012Validator.check_schema(schema)
        assert schema["type"] == "object"  # MCP's rule for a tool's inputSchema
    assert tools["nested"] == {"type": "object", "properties": {
        "opts": {"type": "object", "properties": {"a": {"type": "string", "description": "a"}}, "required": ["a"]},
        "q": {"type": "integer"}}, "required": ["opts", "q"]}
    # an agent taking an array is one tool argument, "input", which the agent receives as its input
    assert tools["lister"] == {"type": "object", "properties": {"input": items}, "required": ["input"]}
    assert nested_ok.structured_content == {"kind": "dict", "input": {"opts": {"a": "x"}, "q": 1}}
    assert nested_bad.is_error and "opts/a: 1 is not of type 'string'" in nested_bad.content[0].text
    assert listed.structured_content == {"kind": "list", "input": ["a", "b"]}
    assert empty.is_error and "input: [] should be non-empty" in empty.content[0].text
    # the referenced object is the tool's arguments, as through /rest; not wrapped in "input"
    assert tools["zod"]["properties"] == {"city": {"type": "string"}} and tools["zod"]["required"] == ["city"]
    assert zod_ok.structured_content == {"kind": "dict", "input": {"city": "Oslo"}}
    assert zod_bad.is_error and "'city' is a required property" in zod_bad.content[0].text
    assert tools["maybe"]["properties"] == {"n": {"type": "integer"}}
    assert maybe.structured_content == {"kind": "dict", "input": {"n": 2}}


async def test_a_progress_token_brings_progress_notifications_while_the_run_lasts(alice: Client) -> None:
    await deploy(alice, name="Talker", friendlyName="talker", code=SLOW_TALKER)
    token = await new_token(alice)
    seen: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message))

    async with mcp_session(alice.url("/mcp"), token) as session:
        await session.initialize()
        result = await session.call_tool("talker", {"inputText": "x"}, progress_callback=on_progress)
    assert not result.is_error and result.structured_content == {"outputText": "finished"}
    assert len(seen) >= 1
    assert [p for p, _ in seen] == sorted(p for p, _ in seen)
    assert any(m and m.startswith("step") for _, m in seen)


async def test_a_session_from_a_cookie_login_works_and_delete_ends_it(alice: Client) -> None:
    async with alice.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "curl", "version": "1"}}},
            headers={"Accept": "application/json, text/event-stream"}) as r:
        assert r.status == 200
        body = await r.json()
        session_id = r.headers["Mcp-Session-Id"]
    assert body["result"]["protocolVersion"] == "2025-06-18"
    headers = {"Mcp-Session-Id": session_id, "MCP-Protocol-Version": "2025-06-18"}
    async with alice.post("/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "ping"}, headers=headers) as r:
        assert await r.json() == {"jsonrpc": "2.0", "id": 2, "result": {}}
    async with alice.delete("/mcp", headers=headers) as r:
        assert r.status == 204
    async with alice.post("/mcp", json={"jsonrpc": "2.0", "id": 3, "method": "ping"}, headers=headers) as r:
        assert r.status == 404
        assert (await r.json())["error"]["code"] == -32600


@pytest.fixture
async def site() -> AsyncIterator[tuple[str, list[float]]]:
    """A small web service the looping agent calls; its hit log shows whether the agent still runs."""
    hits: list[float] = []

    async def tick(request: web.Request) -> web.Response:
        hits.append(asyncio.get_running_loop().time())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/tick", tick)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    try:
        yield str(server.make_url("/tick")), hits
    finally:
        await server.close()


LOOPER = """
import asyncio
import httpx
async def run(input_dict, tools):
    async with httpx.AsyncClient() as http:
        while True:
            await http.get(input_dict['url'])
            await asyncio.sleep(0.05)
"""


async def test_cancelling_a_call_stops_the_run_and_its_sandbox_child(alice: Client,
                                                                     site: tuple[str, list[float]]) -> None:
    url, hits = site
    await deploy(alice, name="Looper", friendlyName="looper", code=LOOPER, inputSchema={"url": "string"})
    token = await new_token(alice)
    async with mcp_session(alice.url("/mcp"), token) as session:
        await session.initialize()
        async with anyio.create_task_group() as tg:
            async def call() -> None:
                await session.call_tool("looper", {"url": url})

            tg.start_soon(call)
            while len(hits) < 3:  # the agent is running
                await asyncio.sleep(0.05)
            tg.cancel_scope.cancel()  # the client gives up: notifications/cancelled
        run: dict[str, Any] = {}
        for _ in range(100):  # the cancel leaves a run record
            async with alice.get("/runs") as r:
                found = (await r.json())["runs"]
            if found and found[0]["status"] != "running":
                run = found[0]
                break
            await asyncio.sleep(0.1)
        await session.send_ping()  # the session itself carries on
    assert run["agentName"] == "looper" and run["status"] == "stopped" and run["inputDict"] == {"url": url}
    await asyncio.sleep(0.3)
    count = len(hits)
    await asyncio.sleep(0.5)
    assert len(hits) == count  # no more calls: the sandbox child is gone


async def test_connected_sessions_hear_when_a_deployment_appears_or_goes(alice: Client) -> None:
    token = await new_token(alice)
    changed = asyncio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with mcp_session(alice.url("/mcp"), token, message_handler=on_message) as session:
        await session.initialize()
        assert (await session.list_tools()).tools == []
        await asyncio.sleep(0.3)  # let the client open its GET stream
        doc = await deploy(alice, name="Late", friendlyName="late", code=ECHO)
        await asyncio.wait_for(changed.wait(), 20)
        assert [t.name for t in (await session.list_tools()).tools] == ["late"]
        changed.clear()
        async with alice.delete(f"/agents/{doc['_id']}/undeploy") as r:
            assert r.status == 204
        await asyncio.wait_for(changed.wait(), 20)
        assert (await session.list_tools()).tools == []


async def test_a_scoped_token_sees_and_calls_only_the_agents_it_names(alice: Client,
                                                                     site: tuple[str, list[float]]) -> None:
    url, hits = site
    await deploy(alice, name="Echo", friendlyName="echo", code=ECHO)
    await deploy(alice, name="Other", friendlyName="other", code=ticker(url))
    token = await new_token(alice, models=["agent/echo"])
    async with mcp_session(alice.url("/mcp"), token) as session:
        await session.initialize()
        assert [t.name for t in (await session.list_tools()).tools] == ["echo"]
        with pytest.raises(MCPError) as refused:
            await session.call_tool("other", {"inputText": "x"})
        ok = await session.call_tool("echo", {"inputText": "x"})
    assert refused.value.error.code == -32602 and not ok.is_error
    assert hits == []  # "other" never ran


@asynccontextmanager
async def stateless_client(url: str, token: str) -> AsyncIterator[Any]:
    """The SDK's high-level client in its default ``auto`` mode (probes ``server/discover`` first)."""
    from mcp.client.client import Client as McpClient

    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"},
                                  timeout=httpx2.Timeout(30, read=120)) as http:
        async with McpClient(streamable_http_client(url, http_client=http), mode="auto") as client:
            yield client


async def test_an_auto_mode_client_speaks_the_stateless_2026_revision(alice: Client) -> None:
    await deploy(alice, name="Echo", friendlyName="echo", code=ECHO, outputSchema={"outputText": "string"})
    await deploy(alice, name="Talker", friendlyName="talker", code=SLOW_TALKER)
    token = await new_token(alice)
    seen: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(message)

    async with stateless_client(alice.url("/mcp"), token) as client:
        assert client.protocol_version == "2026-07-28"
        assert client.server_capabilities.tools is not None and client.server_capabilities.tools.list_changed
        assert sorted(t.name for t in (await client.list_tools()).tools) == ["echo", "talker"]
        echoed = await client.call_tool("echo", {"inputText": "now"})
        talked = await client.call_tool("talker", {"inputText": "x"}, progress_callback=on_progress)
        with pytest.raises(MCPError) as unknown:
            await client.call_tool("nope", {})
    assert echoed.structured_content == {"outputText": "echo: now"} and not echoed.is_error
    assert talked.structured_content == {"outputText": "finished"}
    assert any(m and m.startswith("step") for m in seen)
    assert unknown.value.error.code == -32602


async def test_a_stateless_call_whose_stream_is_closed_stops_its_run(alice: Client,
                                                                     site: tuple[str, list[float]]) -> None:
    url, hits = site
    await deploy(alice, name="Looper", friendlyName="looper", code=LOOPER, inputSchema={"url": "string"})
    token = await new_token(alice)
    async with stateless_client(alice.url("/mcp"), token) as client:
        async with anyio.create_task_group() as tg:
            async def call() -> None:
                await client.call_tool("looper", {"url": url})

            tg.start_soon(call)
            while len(hits) < 3:
                await asyncio.sleep(0.05)
            tg.cancel_scope.cancel()  # at 2026-07-28 the client cancels by closing the response stream
    run = await stopped_run(alice)  # the server notices the closed stream within a second and records it
    assert run["agentName"] == "looper" and run["inputDict"] == {"url": url}
    assert "closed the connection" in run["error"]
    await asyncio.sleep(0.3)
    count = len(hits)
    await asyncio.sleep(0.5)
    assert len(hits) == count


async def stopped_run(client: Client, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The caller's new run record (not in ``seen``) once it has ended: an MCP call leaves one only when it was
    stopped."""
    for _ in range(100):
        async with client.get("/runs") as r:
            found = [run for run in (await r.json())["runs"] if run["runId"] not in seen]
        if found and found[0]["status"] != "running":
            assert len(found) == 1 and found[0]["status"] == "stopped", found
            return found[0]  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)
    raise AssertionError("no run record was written")


async def test_a_session_call_whose_connection_drops_stops_its_run_and_records_it(
        alice: Client, site: tuple[str, list[float]]) -> None:
    url, hits = site
    await deploy(alice, name="Looper", friendlyName="looper", code=LOOPER, inputSchema={"url": "string"})
    token = await new_token(alice)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    async with aiohttp.ClientSession() as http:
        async with http.post(alice.url("/mcp"), headers=headers, json={
                "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
                ) as r:
            headers["Mcp-Session-Id"] = r.headers["Mcp-Session-Id"]
        seen: tuple[str, ...] = ()
        for progress in (False, True):  # a JSON answer, and an event stream of progress
            hits.clear()
            meta = {"_meta": {"progressToken": "p"}} if progress else {}
            body = {"jsonrpc": "2.0", "id": 2 + progress, "method": "tools/call",
                    "params": {"name": "looper", "arguments": {"url": url}, **meta}}

            async def call(body: dict[str, Any] = body) -> None:
                async with http.post(alice.url("/mcp"), headers=headers, json=body) as r:
                    await r.read()

            task = asyncio.ensure_future(call())
            while len(hits) < 3:  # the agent is running
                await asyncio.sleep(0.05)
            task.cancel()  # the client goes away without notifications/cancelled: the connection closes
            with pytest.raises(asyncio.CancelledError):
                await task
            run = await stopped_run(alice, seen)
            seen += (run["runId"],)
            assert run["agentName"] == "looper" and run["inputDict"] == {"url": url}
            assert "closed the connection" in run["error"]
            await asyncio.sleep(0.3)
            count = len(hits)
            await asyncio.sleep(0.5)
            assert len(hits) == count  # the run and its sandbox child are gone


async def test_a_stateless_listen_stream_hears_a_new_deployment(alice: Client) -> None:
    token = await new_token(alice)
    async with stateless_client(alice.url("/mcp"), token) as client:
        async with client.listen(tools_list_changed=True) as subscription:
            await deploy(alice, name="Late", friendlyName="late", code=ECHO)
            event = await asyncio.wait_for(subscription.__aiter__().__anext__(), 20)
            assert isinstance(event, ToolsListChanged)
            assert [t.name for t in (await client.list_tools()).tools] == ["late"]


async def test_a_token_over_its_rate_or_budget_is_refused_before_anything_runs(
        alice: Client, site: tuple[str, list[float]]) -> None:
    url, hits = site
    await deploy(alice, name="Echo", friendlyName="echo", code=ticker(url))
    spent = await new_token(alice, maxSpend=0)
    async with mcp_session(alice.url("/mcp"), spent) as session:
        await session.initialize()
        assert [t.name for t in (await session.list_tools()).tools] == ["echo"]
        with pytest.raises(MCPError) as broke:
            await session.call_tool("echo", {"inputText": "x"})
    assert broke.value.error.code == -32005 and "budget" in broke.value.error.message
    limited = await new_token(alice, rpm=1)
    async with mcp_session(alice.url("/mcp"), limited) as session:
        await session.initialize()
        first = await session.call_tool("echo", {"inputText": "x"})
        with pytest.raises(MCPError) as slowed:
            await session.call_tool("echo", {"inputText": "y"})
    assert not first.is_error
    assert slowed.value.error.code == -32005 and "per minute" in slowed.value.error.message
    assert len(hits) == 1  # only the one admitted call ran


async def test_a_run_past_the_wall_clock_limit_is_an_error_result_saying_timeout(serve: Any) -> None:
    client = await serve(GOFANNON_SANDBOX_TIMEOUT_S="1")
    await client.login("alice")
    sleeper = "import asyncio\nasync def run(input_dict, tools):\n    await asyncio.sleep(30)\n"
    await deploy(client, name="Sleeper", friendlyName="sleeper", code=sleeper)
    token = await new_token(client)
    async with mcp_session(client.url("/mcp"), token) as session:
        await session.initialize()
        result = await session.call_tool("sleeper", {"inputText": "x"})
    assert result.is_error and "timeout" in result.content[0].text


async def test_an_expired_session_must_initialize_again(alice: Client) -> None:
    from gofannon.services.mcp_server import SESSIONS
    from gofannon.web.keys import KERNEL

    token = await new_token(alice)
    kernel = alice.server.app[KERNEL]
    async with mcp_session(alice.url("/mcp"), token) as session:
        await session.initialize()
        await session.send_ping()
        (doc,) = await kernel.store.list(SESSIONS)
        await kernel.store.update(SESSIONS, doc["_id"], lambda d: {**d, "expiresAt": "2020-01-01T00:00:00.000000"})
        with pytest.raises(MCPError) as expired:
            await session.send_ping()
    assert "initialize again" in expired.value.error.message
    assert await kernel.store.get(SESSIONS, doc["_id"]) is None
