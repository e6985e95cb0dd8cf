"""/mcp in workspaces: a shared workspace's deployments are tools for its members (in that active workspace),
and neither listed nor callable for anyone else."""

from __future__ import annotations

from typing import Any

import pytest
from mcp.shared.exceptions import MCPError
from test_mcp_server import ECHO, mcp_session, new_token
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
        await session.initialize()
        with pytest.raises(MCPError) as outside:
            await session.list_tools()
    assert "Workspace not found" in outside.value.error.message
