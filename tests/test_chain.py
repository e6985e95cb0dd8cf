"""``GET /agents/{id}/chain``: the graph the agent page's Chain view draws."""

from __future__ import annotations

from typing import Any, Callable

from gofannon.web.keys import KERNEL

MCP = "http://127.0.0.1:9/mcp"


async def uid_of(client: Any) -> str:
    async with client.get("/auth/me") as r:
        assert r.status == 200
        return str((await r.json())["uid"])


async def put_agent(client: Any, owner: str, agent_id: str, *, calls: list[str] | None = None,
                    tools: dict[str, list[str]] | None = None) -> None:
    """An agent document as the agent routes store it (owner, schemas, tools, gofannonAgents)."""
    kernel = client.server.app[KERNEL]
    await kernel.store.put("agents", agent_id, {
        "name": f"agent {agent_id}", "description": f"does {agent_id}", "code": "async def run(i, t): return {}",
        "ownerId": owner, "inputSchema": {"inputText": "string"}, "outputSchema": {"outputText": "string"},
        "tools": tools or {}, "gofannonAgents": calls or [],
    })


async def chain(client: Any, agent_id: str) -> dict[str, Any]:
    async with client.get(f"/agents/{agent_id}/chain") as r:
        assert r.status == 200, await r.text()
        return await r.json()  # type: ignore[no-any-return]


async def test_chain_shows_called_agents_and_mcp_servers(serve: Callable[..., Any]) -> None:
    client = await serve()
    await client.login("alice")
    me = await uid_of(client)
    await put_agent(client, me, "root", calls=["a", "b"], tools={MCP: ["search", "fetch"]})
    await put_agent(client, me, "a", calls=["c"])
    await put_agent(client, me, "b", calls=["c"])  # c is shared by a and b
    await put_agent(client, me, "c", tools={MCP: ["summarize"]})
    graph = await chain(client, "root")
    assert graph["root"] == "root"
    assert set(graph["nodes"]) == {"root", "a", "b", "c", f"mcp:{MCP}"}
    assert graph["nodes"]["root"] == {
        "id": "root", "type": "agent", "name": "agent root", "description": "does root",
        "input_schema": {"inputText": "string"}, "output_schema": {"outputText": "string"},
        "missing": False, "truncated": False,
    }
    assert graph["nodes"][f"mcp:{MCP}"] == {"id": f"mcp:{MCP}", "type": "mcp_server", "url": MCP,
                                           "tool_count": 3, "tools": ["fetch", "search", "summarize"]}
    edges = {(e["from"], e["to"]): e for e in graph["edges"]}
    assert edges[("root", f"mcp:{MCP}")] == {"from": "root", "to": f"mcp:{MCP}", "type": "uses_tools",
                                             "tools": ["search", "fetch"]}
    assert edges[("c", f"mcp:{MCP}")]["tools"] == ["summarize"]
    for pair in [("root", "a"), ("root", "b"), ("a", "c"), ("b", "c")]:
        assert edges[pair] == {"from": pair[0], "to": pair[1], "type": "calls", "cyclic": False}
    assert len(graph["edges"]) == 6


async def test_cycles_are_marked_and_not_followed(serve: Callable[..., Any]) -> None:
    client = await serve()
    await client.login("alice")
    me = await uid_of(client)
    await put_agent(client, me, "x", calls=["y", "x"])
    await put_agent(client, me, "y", calls=["x"])
    graph = await chain(client, "x")
    edges = {(e["from"], e["to"]): e["cyclic"] for e in graph["edges"]}
    assert edges == {("x", "y"): False, ("y", "x"): True, ("x", "x"): True}
    assert set(graph["nodes"]) == {"x", "y"}


async def test_deleted_and_foreign_agents_show_as_missing(serve: Callable[..., Any]) -> None:
    client = await serve()
    await client.login("alice")
    me = await uid_of(client)
    await put_agent(client, "someone-else", "theirs", calls=["secret-child"])
    await put_agent(client, me, "mine", calls=["gone", "theirs"])
    graph = await chain(client, "mine")
    for missing in ("gone", "theirs"):
        assert graph["nodes"][missing] == {"id": missing, "type": "agent", "name": None, "description": None,
                                           "input_schema": None, "output_schema": None, "missing": True,
                                           "truncated": False}
    assert "secret-child" not in graph["nodes"]
    assert {(e["from"], e["to"]) for e in graph["edges"]} == {("mine", "gone"), ("mine", "theirs")}


async def test_long_chains_stop_at_depth_eight_and_say_so(serve: Callable[..., Any]) -> None:
    client = await serve()
    await client.login("alice")
    me = await uid_of(client)
    for i in range(12):
        await put_agent(client, me, f"a{i}", calls=[f"a{i + 1}"] if i < 11 else [])
    graph = await chain(client, "a0")
    assert set(graph["nodes"]) == {f"a{i}" for i in range(9)}
    assert graph["nodes"]["a8"]["truncated"] is True
    assert all(not graph["nodes"][f"a{i}"]["truncated"] for i in range(8))
    # a shorter path to a deep agent expands it fully
    await put_agent(client, me, "a0", calls=["a1", "a3"])  # a3 now at depth 1, a10 at 8
    graph = await chain(client, "a0")
    assert "a11" not in graph["nodes"] and "a10" in graph["nodes"]
    assert graph["nodes"]["a10"]["truncated"] is True and graph["nodes"]["a8"]["truncated"] is False


async def test_another_users_agent_is_not_found_like_an_unknown_one(serve: Callable[..., Any]) -> None:
    client = await serve()
    await client.login("alice")
    await put_agent(client, "someone-else", "theirs")
    async with client.get("/agents/theirs/chain") as r:
        assert r.status == 404
        theirs = (await r.json())["detail"]
    async with client.get("/agents/nope/chain") as r:
        assert r.status == 404
        nope = (await r.json())["detail"]
    assert theirs == nope.replace("nope", "theirs")


async def test_chain_needs_a_signed_in_user(serve: Callable[..., Any]) -> None:
    client = await serve()
    async with client.get("/agents/any/chain") as r:
        assert r.status == 401
