"""A real MCP server built with the official SDK, run in a subprocess on 127.0.0.1.

Endpoints: ``/mcp`` (streamable HTTP) and ``/sse`` (SSE), open; ``/secure/mcp`` and ``/secure/sse`` require
``Authorization: Bearer <token>`` (401 otherwise). Tools: ``add(a, b)``, ``echo(text)``, ``shout(text)``
(structured output) and ``fail(reason)`` (raises, so the call answers ``isError``).

    python tests/fakes/mcp_server.py --port 8123 --token s3cret

Tests use the session fixture ``mcp_server``: ``mcp_server.url("/mcp")``, ``mcp_server.url("/secure/sse")``,
``mcp_server.token``. The tools are stateless, so one server serves the whole session.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from pydantic import BaseModel

TOKEN = "mcp-test-token"


class Shout(BaseModel):
    loud: str
    length: int


def build_app(token: str) -> Any:
    from mcp.server.mcpserver import MCPServer
    from mcp.server.transport_security import TransportSecuritySettings
    server = MCPServer("fake-tools", instructions="Arithmetic and text tools for tests.")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers and return the sum."""
        return a + b

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text back unchanged."""
        return text

    @server.tool()
    def shout(text: str) -> Shout:
        """Upper-case the text and report its length."""
        return Shout(loud=text.upper(), length=len(text))

    @server.tool()
    def fail(reason: str) -> str:
        """Always fails with the given reason."""
        raise ValueError(reason)

    open_security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    http_app = server.streamable_http_app(streamable_http_path="/mcp", transport_security=open_security,
                                          stateless_http=False)
    sse_app = server.sse_app(sse_path="/sse", message_path="/messages/", transport_security=open_security)

    async def reject(send: Any) -> None:
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": b'{"error":"invalid_token"}'})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await http_app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if path.startswith("/secure/"):
            headers = dict(scope.get("headers") or [])
            if headers.get(b"authorization", b"").decode() != f"Bearer {token}":
                await reject(send)
                return
            path = path[len("/secure"):]
            scope = dict(scope, path=path, raw_path=path.encode())
        if path == "/sse" or path.startswith("/messages"):
            await sse_app(scope, receive, send)
        else:
            await http_app(scope, receive, send)

    return app


class McpServerProcess:
    """The fake MCP server in a child process (the SDK's server brings its own event loop and threads)."""

    def __init__(self, token: str = TOKEN) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.token = token
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: Any = None

    def url(self, path: str = "/mcp") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> "McpServerProcess":
        env = dict(os.environ)
        env.pop("http_proxy", None)
        env.pop("HTTP_PROXY", None)
        # The server logs every session: a file, not a pipe nobody reads (a full pipe would block it).
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--port", str(self.port), "--token", self.token],
            stdout=self.log, stderr=self.log, env=env,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"fake MCP server exited: {self.log.read().decode(errors='replace')[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("fake MCP server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.log is not None:
            self.log.close()


@pytest.fixture(scope="session")
def mcp_server() -> Iterator[McpServerProcess]:
    """A real MCP server (official SDK) on 127.0.0.1: streamable HTTP at /mcp, SSE at /sse, bearer-protected
    copies under /secure/ (token ``mcp_server.token``)."""
    server = McpServerProcess().start()
    try:
        yield server
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", default=TOKEN)
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(build_app(args.token), host="127.0.0.1", port=args.port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
