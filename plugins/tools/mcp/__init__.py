"""Bundled plugin ``mcp``: remote MCP servers (streamable HTTP and SSE) through the official MCP SDK.

Only network transports: a URL from a user never starts a local process (no stdio). Every connection
goes through the kernel's SSRF guard (``gofannon.net``): the URL is checked (with DNS) before connecting,
and the SDK's HTTP client is the guarded httpx2 client, so redirects and the SSE message endpoint are
checked too. A path ending in ``/sse`` selects the SSE transport, anything else streamable HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

import pluggy

from gofannon import net
from gofannon.errors import BadRequest, GatewayTimeout, GofannonError, UpstreamError

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel
    from gofannon.settings import Settings

hookimpl = pluggy.HookimplMarker("gofannon")

#: How long the SSE stream may stay silent while we wait for an answer (the SDK's read timeout).
SSE_READ_TIMEOUT_S = 300.0


def validate_url(url: str) -> str:
    """The contract's scheme check (400 with the reference's wording)."""
    text = (url or "").strip()
    if not text.startswith(("http://", "https://")):
        raise BadRequest(f"Invalid MCP server URL scheme: {url}. Must be http:// or https://")
    return text


def _leaves(exc: BaseException) -> list[BaseException]:
    """The individual exceptions inside (nested) exception groups raised by the SDK's task groups."""
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for inner in exc.exceptions:
            out.extend(_leaves(inner))
        return out
    return [exc]


def _status_hint(status: int) -> str:
    return " (the server wants a valid bearer token: check auth_token)" if status in (401, 403) else ""


def _translate(exc: BaseException, url: str, action: str, statuses: list[int]) -> GofannonError:
    """Map whatever the SDK raised to a clear 4xx/502/504 for the user."""
    import httpx2

    leaves = _leaves(exc)
    for leaf in leaves:  # our own errors (the guard refusing a hop, a 504) win
        if isinstance(leaf, GofannonError):
            return leaf
    leaf = leaves[0] if leaves else exc
    prefix = f"Failed to connect to MCP server or {action}"
    if statuses and not isinstance(leaf, httpx2.HTTPStatusError):
        # The streamable HTTP transport turns an HTTP error into a generic JSON-RPC error; say what happened.
        status = statuses[-1]
        return UpstreamError(f"{prefix}: the server at {url} answered HTTP {status}{_status_hint(status)}")
    if isinstance(leaf, httpx2.HTTPStatusError):
        resp = leaf.response
        text = ""
        with contextlib.suppress(Exception):
            text = resp.text[:500]
        status = resp.status_code
        detail = f"{prefix}: the server at {url} answered HTTP {status}{_status_hint(status)}"
        return UpstreamError(f"{detail}: {text}" if text else detail)
    if isinstance(leaf, (httpx2.TimeoutException, TimeoutError)):
        return GatewayTimeout(f"{prefix}: the server at {url} did not answer in time")
    if isinstance(leaf, httpx2.ConnectError):
        return UpstreamError(f"{prefix}: could not connect to {url}: {leaf}")
    message = str(leaf) or type(leaf).__name__
    return UpstreamError(f"{prefix}: {type(leaf).__name__}: {message}")


class McpConnector:
    """``kernel.tool_connectors["mcp"]``: list and call tools of remote MCP servers."""

    name = "mcp"

    def __init__(self, settings: "Settings") -> None:
        self.settings = settings

    @contextlib.asynccontextmanager
    async def session(self, kernel: "Kernel", url: str, auth_token: str | None = None,
                      statuses: list[int] | None = None) -> AsyncIterator[Any]:
        """An initialised ``mcp.ClientSession`` to ``url`` through the guard (closed on exit).

        HTTP error statuses the server answers are appended to ``statuses`` (for error messages).
        """
        import httpx2
        from mcp.client.session import ClientSession
        from mcp.client.sse import sse_client
        from mcp.client.streamable_http import streamable_http_client

        url = validate_url(url)
        await net.check_resolved(kernel, url)
        headers = {"Authorization": f"Bearer {auth_token}"} if auth_token else {}
        timeout = self.settings.outbound_timeout_s
        seen = statuses if statuses is not None else []

        async def note_status(response: Any) -> None:
            if response.status_code >= 400:
                seen.append(response.status_code)

        def client_factory(headers: dict[str, str] | None = None, timeout: Any = None, auth: Any = None) -> Any:
            kw: dict[str, Any] = {"headers": headers or {}, "follow_redirects": False,
                                  "event_hooks": {"response": [note_status]}}
            if timeout is not None:
                kw["timeout"] = timeout
            if auth is not None:
                kw["auth"] = auth
            return net.guarded_httpx_client(kernel, "httpx2", **kw)

        path = url.split("?", 1)[0].rstrip("/")
        async with contextlib.AsyncExitStack() as stack:
            if path.endswith("/sse"):
                streams = await stack.enter_async_context(sse_client(
                    url, headers=headers, timeout=timeout, sse_read_timeout=SSE_READ_TIMEOUT_S,
                    httpx_client_factory=client_factory,
                ))
            else:
                http = await stack.enter_async_context(
                    client_factory(headers=headers, timeout=httpx2.Timeout(timeout, read=SSE_READ_TIMEOUT_S))
                )
                streams = await stack.enter_async_context(streamable_http_client(url, http_client=http))
            read, write = streams[0], streams[1]
            session = await stack.enter_async_context(ClientSession(read, write, read_timeout_seconds=timeout))
            await session.initialize()
            yield session

    async def _run(self, kernel: "Kernel", url: str, auth_token: str | None, action: str,
                   fn: Callable[[Any], Any]) -> Any:
        statuses: list[int] = []
        try:
            async with asyncio.timeout(self.settings.outbound_timeout_s):
                async with self.session(kernel, url, auth_token, statuses) as session:
                    return await fn(session)
        except GofannonError:
            raise
        except TimeoutError:
            raise GatewayTimeout(f"Failed to connect to MCP server or {action}: the server at {url} "
                                 f"did not answer within {self.settings.outbound_timeout_s:g} s") from None
        except Exception as exc:  # noqa: BLE001 - every SDK/transport failure becomes a clear 4xx/5xx
            raise _translate(exc, url, action, statuses) from None

    async def list_tools(self, kernel: "Kernel", url: str, auth_token: str | None = None) -> list[dict[str, Any]]:
        async def run(session: Any) -> list[dict[str, Any]]:
            tools: list[Any] = []
            cursor: str | None = None
            for _page in range(100):
                if cursor is None:
                    result = await session.list_tools()
                else:
                    from mcp import types

                    result = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor))
                tools.extend(result.tools)
                cursor = getattr(result, "next_cursor", None)
                if not cursor:
                    break
            return [
                {"name": t.name, "description": t.description, "inputSchema": t.input_schema or {}}
                for t in tools
            ]

        return await self._run(kernel, url, auth_token, "list tools", run)

    async def call_tool(self, kernel: "Kernel", url: str, name: str, arguments: dict[str, Any] | None,
                        auth_token: str | None = None) -> dict[str, Any]:
        async def run(session: Any) -> dict[str, Any]:
            # Listing first lets the SDK validate structured output and report an unknown tool clearly.
            listing = await session.list_tools()
            if name not in {t.name for t in listing.tools}:
                raise BadRequest(f"Tool '{name}' not found on the server.")
            result = await session.call_tool(name, arguments or {})
            return {
                "content": [block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in result.content],
                "structuredContent": result.structured_content,
                "isError": bool(result.is_error),
            }

        return await self._run(kernel, url, auth_token, "call the tool", run)


@hookimpl
def register_tool_connectors(register: Callable[..., None], settings: "Settings") -> None:
    register(McpConnector(settings))
