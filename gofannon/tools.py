"""Tool connectors: how agents and the composer reach external tools (MCP servers, OpenAPI specs).

A connector is registered through the ``register_tool_connectors`` hook and found by name in
``kernel.tool_connectors``. Connectors make every network connection through ``gofannon.net`` so the SSRF
guard applies to tools exactly as to any other outbound fetch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from gofannon.errors import ServiceUnavailable

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel


@runtime_checkable
class ToolConnector(Protocol):
    """A kind of remote tool source. ``name`` is its registry key (``"mcp"``, ``"openapi"``)."""

    name: str


@runtime_checkable
class RemoteToolConnector(ToolConnector, Protocol):
    """A connector whose tools live on a server addressed by URL (MCP)."""

    async def list_tools(self, kernel: "Kernel", url: str, auth_token: str | None = None) -> list[dict[str, Any]]:
        """``[{name, description, inputSchema}]`` of the server's tools."""
        ...

    async def call_tool(self, kernel: "Kernel", url: str, name: str, arguments: dict[str, Any],
                        auth_token: str | None = None) -> dict[str, Any]:
        """``{content, structuredContent, isError}`` of one call."""
        ...


def connector(kernel: "Kernel", name: str) -> Any:
    """The registered connector ``name``; 503 when its plugin is not loaded (disabled or failed)."""
    found = kernel.tool_connectors.get(name)
    if found is None:
        raise ServiceUnavailable(f"The '{name}' tool connector is not available (its plugin is not loaded)")
    return found
