"""/mcp in workspaces: a shared workspace's deployments are tools for its members (in that active workspace),
and neither listed nor callable for anyone else."""

from __future__ import annotations

from typing import Any

import pytest
from mcp.shared.exceptions import MCPError
from test_mcp_server import ECHO, deploy, mcp_session, new_token, site, ticker  # noqa: F401 - site is a fixture
from test_mcp_server_bad_input import INIT, Raw, stateless
from workspaces_helpers import call, make_workspace, people  # noqa: F401 - people is a fixture

H = "X-Gofannon-Workspace"


async def test_a_shared_workspace_agent_is_a_tool_for_its_members_only(people: Any) -> None:
    alice, bob = await people("alice", "bob")
    ws = await make_workspace(alice)  # alice is its admin; bob is not a member
    status, agent = await call(alice, "POST", "/agents", {"name": "Team echo", "description": "d", "code": ECHO,
                                                          "friendlyName": "team_echo"}, headers={H: ws})
    assert status == 201, agent
    status, _ = await call(alice, "POST", f"/agents/{agent['_id']}/deploy", headers={H: ws})
    assert status == 201
    alice_token, bob_token = await new_token(alice), await new_token(bob)
    async with mcp_session(alice.url("/mcp"), alice_token, headers={H: ws}) as session:
        await session.initialize()
        assert [t.name for t in (await session.list_tools()).tools] == ["team_echo"]
        result = await session.call_tool("team_echo", {"inputText": "us"})
    assert result.structured_content == {"outputText": "echo: us"}
    async with mcp_session(alice.url("/mcp"), alice_token) as session:  # personal workspace: public tools only
        await session.initialize()
        assert (await session.list_tools()).tools == []
    async with mcp_session(bob.url("/mcp"), bob_token) as session:
        await session.initialize()
        assert (await session.list_tools()).tools == []
        with pytest.raises(MCPError) as refused:
            await session.call_tool("team_echo", {"inputText": "me too"})
    assert refused.value.error.code == -32602 and "Unknown tool" in refused.value.error.message
    async with mcp_session(bob.url("/mcp"), bob_token, headers={H: ws}) as session:
        with pytest.raises(MCPError) as outside:
            await session.initialize()
    assert "Workspace not found" in outside.value.error.message


async def test_every_request_naming_a_workspace_the_caller_is_not_in_is_refused_and_nothing_runs(
        people: Any, site: tuple[str, list[float]]) -> None:  # noqa: F811 - the imported fixture
    url, hits = site
    alice, bob = await people("alice", "bob")
    ws = await make_workspace(alice)  # bob is not a member
    await deploy(bob, name="Echo", friendlyName="echo", code=ticker(url))  # bob's own public tool
    raw = Raw(bob, await new_token(bob))
    try:
        sid = await raw.initialize()  # no header: bob's personal workspace
        call_echo = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                     "params": {"name": "echo", "arguments": {"inputText": "x"}}}
        for named in (ws, "no-such-workspace"):
            status, body, _ = await raw.post(INIT, X_Gofannon_Workspace=named)
            assert status == 400 and "Workspace not found" in body["error"]["message"]
            for message in (call_echo, {"jsonrpc": "2.0", "id": 3, "method": "ping"},
                            {"jsonrpc": "2.0", "id": 4, "method": "tools/list"}):
                status, body, _ = await raw.post(message, Mcp_Session_Id=sid, X_Gofannon_Workspace=named)
                assert status == 400 and body["error"]["code"] == -32600, (message, body)
                assert "Workspace not found" in body["error"]["message"]
            stateless_call = stateless("tools/call", {"name": "echo", "arguments": {"inputText": "x"}})
            status, body, _ = await raw.post(stateless_call, Mcp_Method="tools/call", Mcp_Name="echo",
                                             MCP_Protocol_Version="2026-07-28", X_Gofannon_Workspace=named)
            assert status == 400 and "Workspace not found" in body["error"]["message"]
        assert hits == []  # the tool never ran
        status, body, _ = await raw.post(call_echo, Mcp_Session_Id=sid)  # without the header it runs
        assert status == 200 and body["result"]["structuredContent"] == {"outputText": "echo: x"}
        assert len(hits) == 1
    finally:
        await raw.session.close()
