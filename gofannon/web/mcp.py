"""Routes: MCP connectors (``POST /mcp/tools``, wire contract §1.10, through the SSRF guard)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from gofannon.tools import connector
from gofannon.web.common import api_doc, identity, json_response, kernel_of, parse_body

routes = web.RouteTableDef()


class McpToolsRequest(BaseModel):
    """Snake-case body, as the reference's (``mcp_url``, ``auth_token``)."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    mcp_url: str
    auth_token: str | None = None


class McpToolsResponse(BaseModel):
    model_config = ConfigDict(defer_build=True)

    mcp_url: str
    tools: list[dict[str, Any]]


@routes.post("/mcp/tools")
@api_doc(summary="List the tools of a remote MCP server (streamable HTTP, or SSE for URLs ending in /sse)",
         body=McpToolsRequest, response=McpToolsResponse, tags=["mcp"])
async def list_mcp_tools(request: web.Request) -> web.Response:
    identity(request)
    body = await parse_body(request, McpToolsRequest)
    kernel = kernel_of(request)
    mcp = connector(kernel, "mcp")
    tools = await mcp.list_tools(kernel, body.mcp_url, body.auth_token or None)
    return json_response({
        "mcp_url": body.mcp_url,
        "tools": [{"name": t["name"], "description": t.get("description"), "inputSchema": t.get("inputSchema")}
                  for t in tools],
    })
