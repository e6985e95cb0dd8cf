"""Routes: ``GET /agents/{id}/chain`` — the graph of an agent, the agents it calls and the MCP servers it uses.

Shape (wire contract §11): ``{root, nodes: {id: node}, edges: [...]}``. The walk follows ``gofannonAgents``
depth-first from the root, keeping the path so that an edge back to an agent on it is marked ``cyclic`` and not
followed. An agent id that no longer exists, or that belongs to someone else, is a ``missing`` node (nothing of
another user's agent is shown). Agents at depth ``MAX_DEPTH`` are not expanded and are marked ``truncated`` when
they have dependencies; a node first met deep in the graph is expanded again if a shorter path reaches it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from gofannon.services.ownership import READ, load_for, may
from gofannon.web.common import api_doc, identity, json_response, kernel_of

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.auth import Identity
    from gofannon.kernel import Kernel

routes = web.RouteTableDef()

AGENTS = "agents"
MAX_DEPTH = 8
#: Agents one graph may hold; beyond it further agents are not loaded (their callers are marked truncated).
MAX_AGENTS = 500


def _agent_ids(doc: dict[str, Any]) -> list[str]:
    """``gofannonAgents`` as ids (plain ids; tolerates ``{"_id"|"id"|"agentId": ...}`` entries)."""
    out: list[str] = []
    raw = doc.get("gofannonAgents") or []
    if not isinstance(raw, list):
        return out
    for item in raw:
        if isinstance(item, dict):
            item = item.get("_id") or item.get("id") or item.get("agentId")
        if isinstance(item, str) and item and item not in out:
            out.append(item)
    return out


def _tools(doc: dict[str, Any]) -> dict[str, list[str]]:
    raw = doc.get("tools") or {}
    if not isinstance(raw, dict):
        return {}
    return {str(url): [str(t) for t in names] if isinstance(names, list) else [] for url, names in raw.items()}


def _agent_node(agent_id: str, doc: dict[str, Any] | None) -> dict[str, Any]:
    if doc is None:
        return {"id": agent_id, "type": "agent", "name": None, "description": None, "input_schema": None,
                "output_schema": None, "missing": True, "truncated": False}
    return {"id": agent_id, "type": "agent", "name": doc.get("name"), "description": doc.get("description"),
            "input_schema": doc.get("inputSchema"), "output_schema": doc.get("outputSchema"),
            "missing": False, "truncated": False}


class _Walk:
    def __init__(self, kernel: "Kernel", ident: "Identity") -> None:
        self.kernel, self.ident = kernel, ident
        self.docs: dict[str, dict[str, Any] | None] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.edges: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.expanded_at: dict[str, int] = {}

    async def load(self, agent_id: str) -> dict[str, Any] | None:
        if agent_id not in self.docs:
            doc = await self.kernel.store.get(AGENTS, agent_id)
            self.docs[agent_id] = doc if doc is not None and await may(self.kernel, self.ident, doc, READ) else None
        return self.docs[agent_id]

    def agent_count(self) -> int:
        return sum(1 for n in self.nodes.values() if n["type"] == "agent")

    async def visit(self, agent_id: str, depth: int, path: tuple[str, ...]) -> None:
        doc = await self.load(agent_id)
        node = self.nodes.setdefault(agent_id, _agent_node(agent_id, doc))
        if doc is None:
            return
        if self.expanded_at.get(agent_id, MAX_DEPTH + 1) <= depth:
            return
        self.expanded_at[agent_id] = depth
        tools, calls = _tools(doc), _agent_ids(doc)
        if depth >= MAX_DEPTH:
            node["truncated"] = bool(tools or calls)
            return
        node["truncated"] = False
        for url, names in tools.items():
            mcp_id = f"mcp:{url}"
            mcp = self.nodes.setdefault(mcp_id, {"id": mcp_id, "type": "mcp_server", "url": url,
                                                 "tool_count": 0, "tools": []})
            mcp["tools"] = sorted(set(mcp["tools"]) | set(names))
            mcp["tool_count"] = len(mcp["tools"])
            self.edges[(agent_id, mcp_id, "uses_tools")] = {"from": agent_id, "to": mcp_id, "type": "uses_tools",
                                                            "tools": names}
        for child in calls:
            cyclic = child in path
            key = (agent_id, child, "calls")
            edge = self.edges.setdefault(key, {"from": agent_id, "to": child, "type": "calls", "cyclic": cyclic})
            edge["cyclic"] = edge["cyclic"] or cyclic
            if cyclic:
                continue
            if child not in self.nodes and self.agent_count() >= MAX_AGENTS:
                node["truncated"] = True
                del self.edges[key]
                continue
            await self.visit(child, depth + 1, (*path, child))


async def build_chain(kernel: "Kernel", ident: "Identity", agent_id: str) -> dict[str, Any]:
    """The chain graph of an agent the caller may read (404 like ``GET /agents/{id}`` otherwise); the agents it
    calls that the caller may not read show as missing."""
    await load_for(kernel, ident, AGENTS, agent_id, READ)
    walk = _Walk(kernel, ident)
    await walk.visit(agent_id, 0, (agent_id,))
    return {"root": agent_id, "nodes": walk.nodes, "edges": list(walk.edges.values())}


@routes.get("/agents/{agent_id}/chain")
@api_doc(summary="The graph of an agent, the agents it calls (depth cap 8, cycles marked) and its MCP servers",
         tags=["agents"])
async def agent_chain(request: web.Request) -> web.Response:
    ident = identity(request)
    return json_response(await build_chain(kernel_of(request), ident, request.match_info["agent_id"]))
