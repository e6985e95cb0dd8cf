"""/mcp refuses what breaks the transport's rules with a clear HTTP or JSON-RPC error, and runs nothing."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from conftest import Client
from test_mcp_server import deploy, new_token, site, ticker  # noqa: F401 - site is a fixture

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
ACCEPT = "application/json, text/event-stream"


class Raw:
    """Plain HTTP against /mcp with a bearer token (no cookie jar), as a script would."""

    def __init__(self, client: Client, token: str | None) -> None:
        self.client = client
        self.token = token
        self.session = aiohttp.ClientSession()
        self.hits: list[float] = []

    def headers(self, **extra: str) -> dict[str, str]:
        out = {"Accept": ACCEPT}
        if self.token:
            out["Authorization"] = f"Bearer {self.token}"
        out.update({k.replace("_", "-"): v for k, v in extra.items()})
        return out

    async def post(self, body: Any, *, raw: bytes | None = None, **headers: str) -> tuple[int, Any, Any]:
        data = raw if raw is not None else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json", **self.headers(**headers)}
        async with self.session.post(self.client.url("/mcp"), data=data, headers=hdrs) as r:
            text = await r.text()
            return r.status, (json.loads(text) if text else None), r.headers

    async def initialize(self) -> str:
        status, body, headers = await self.post(INIT)
        assert status == 200, body
        return headers["Mcp-Session-Id"]  # type: ignore[no-any-return]


@pytest.fixture
async def setup(serve: Any, site: tuple[str, list[float]]) -> Any:  # noqa: F811 - the imported fixture
    """alice's kernel with "echo" deployed; the site's hit log (``raw.hits``) shows whether echo ever ran."""
    client = await serve()
    await client.login("alice")
    url, hits = site
    await deploy(client, name="Echo", friendlyName="echo", code=ticker(url))
    raw = Raw(client, await new_token(client))
    raw.hits = hits
    try:
        yield client, raw
    finally:
        await raw.session.close()


async def test_malformed_json_and_batches_are_parse_and_invalid_request_errors(setup: Any) -> None:
    _client, raw = setup
    sid = await raw.initialize()
    status, body, _ = await raw.post(None, raw=b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call",',
                                     Mcp_Session_Id=sid)
    assert status == 400 and body["error"]["code"] == -32700 and body["id"] is None
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {}}}
    status, body, _ = await raw.post([call, call], Mcp_Session_Id=sid)
    assert status == 400 and body["error"]["code"] == -32600 and "batches" in body["error"]["message"]
    status, body, _ = await raw.post({"id": 3, "method": "tools/call"}, Mcp_Session_Id=sid)  # no "jsonrpc"
    assert status == 400 and body["error"]["code"] == -32600 and body["id"] == 3
    status, body, _ = await raw.post({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": [1]},
                                     Mcp_Session_Id=sid)
    assert status == 400 and body["error"]["code"] == -32600 and body["id"] == 4  # MCP params are an object
    status, body, _ = await raw.post({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"arguments": {}}},
                                     Mcp_Session_Id=sid)  # no tool name
    assert status == 200 and body["error"]["code"] == -32602 and "name" in body["error"]["message"]
    assert raw.hits == []  # nothing ran


async def test_an_unknown_method_is_method_not_found(setup: Any) -> None:
    _client, raw = setup
    sid = await raw.initialize()
    status, body, _ = await raw.post({"jsonrpc": "2.0", "id": 7, "method": "resources/list"}, Mcp_Session_Id=sid)
    assert status == 200
    assert body == {"jsonrpc": "2.0", "id": 7, "error": {"code": -32601, "message": "Method not found: resources/list"}}


async def test_an_unsupported_protocol_version_header_is_a_400_naming_the_supported_ones(setup: Any) -> None:
    _client, raw = setup
    sid = await raw.initialize()
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo",
                                                                          "arguments": {"inputText": "x"}}}
    status, body, _ = await raw.post(call, Mcp_Session_Id=sid, MCP_Protocol_Version="1999-01-01")
    assert status == 400 and body["error"]["code"] == -32022
    assert body["error"]["data"] == {"supported": ["2025-06-18", "2025-11-25", "2026-07-28"],
                                     "requested": "1999-01-01"}
    assert raw.hits == []  # nothing ran


async def test_initialize_with_an_older_or_newer_version_gets_one_the_server_speaks(setup: Any) -> None:
    _client, raw = setup
    for asked, answered in (("2025-06-18", "2025-06-18"), ("2024-11-05", "2025-11-25"), ("2099-01-01", "2025-11-25")):
        init = {**INIT, "params": {**INIT["params"], "protocolVersion": asked}}
        status, body, _ = await raw.post(init)
        assert status == 200 and body["result"]["protocolVersion"] == answered


async def test_a_foreign_origin_is_refused_and_local_ones_are_not(setup: Any) -> None:
    client, raw = setup
    status, body, _ = await raw.post(INIT, Origin="https://evil.example")
    assert status == 403 and "Origin" in body["error"]["message"]
    for origin in (client.url("/").rstrip("/"), "http://localhost:6274", "http://localhost:3000"):
        status, body, _ = await raw.post(INIT, Origin=origin)
        assert status == 200, (origin, body)


async def test_a_missing_or_unknown_session_id_is_refused(setup: Any) -> None:
    client, raw = setup
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo",
                                                                          "arguments": {"inputText": "x"}}}
    status, body, _ = await raw.post(call)
    assert status == 400 and "Mcp-Session-Id" in body["error"]["message"]
    status, body, _ = await raw.post(call, Mcp_Session_Id="0" * 32)
    assert status == 404 and body["error"]["code"] == -32600
    # bob cannot use alice's session
    sid = await raw.initialize()
    bob = Client(client.server, aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)))
    try:
        await bob.login("bob")
        other = Raw(client, await new_token(bob))
        try:
            status, body, _ = await other.post(call, Mcp_Session_Id=sid)
            assert status == 404
        finally:
            await other.session.close()
    finally:
        await bob.session.close()
    assert raw.hits == []  # nothing ran
    status, body, _ = await raw.post(call, Mcp_Session_Id=sid)  # the same call in alice's own session runs
    assert status == 200 and body["result"]["structuredContent"] == {"outputText": "echo: x"}
    assert len(raw.hits) == 1


async def test_no_credentials_is_a_401_pointing_at_the_resource_metadata(setup: Any) -> None:
    client, _raw = setup
    anonymous = Raw(client, None)
    try:
        status, body, headers = await anonymous.post(INIT)
        assert status == 401 and body["error"]["message"].startswith("Authentication required")
        base = client.url("/").rstrip("/")
        assert headers["WWW-Authenticate"] == (
            f'Bearer resource_metadata="{base}/.well-known/oauth-protected-resource"')
        async with anonymous.session.get(client.url("/mcp"), headers={"Accept": "text/event-stream"}) as r:
            assert r.status == 401 and "resource_metadata=" in r.headers["WWW-Authenticate"]
        wrong = Raw(client, "gft_" + "0" * 32 + "_" + "x" * 40)
        try:
            status, body, headers = await wrong.post(INIT)
            assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"]
        finally:
            await wrong.session.close()
    finally:
        await anonymous.session.close()


async def test_get_without_event_stream_accept_is_406_and_notifications_are_accepted(setup: Any) -> None:
    client, raw = setup
    sid = await raw.initialize()
    async with raw.session.get(client.url("/mcp"), headers={**raw.headers(Mcp_Session_Id=sid),
                                                              "Accept": "application/json"}) as r:
        assert r.status == 406
    status, body, _ = await raw.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, Mcp_Session_Id=sid)
    assert status == 202 and body is None
    status, body, _ = await raw.post({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                      "params": {"requestId": 99}}, Mcp_Session_Id=sid)
    assert status == 202


async def test_the_remote_tools_route_still_answers_beside_mcp(setup: Any) -> None:
    client, _raw = setup
    async with client.post("/mcp/tools", json={}) as r:  # the reference's route: its own 422, not JSON-RPC
        assert r.status == 422 and "detail" in await r.json()


def stateless(method: str, params: dict[str, Any] | None = None, *, meta: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 9, "method": method, "params": dict(params or {})}
    if meta:
        body["params"]["_meta"] = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                   "io.modelcontextprotocol/clientCapabilities": {}}
    return body


async def test_stateless_requests_whose_envelope_or_headers_disagree_are_refused(setup: Any) -> None:
    client, raw = setup
    v = {"MCP_Protocol_Version": "2026-07-28"}
    call = stateless("tools/call", {"name": "echo", "arguments": {"inputText": "x"}})
    status, body, _ = await raw.post(call, Mcp_Method="tools/call", Mcp_Name="other", **v)
    assert status == 400 and body["error"]["code"] == -32020 and "Mcp-Name" in body["error"]["message"]
    status, body, _ = await raw.post(call, Mcp_Method="tools/list", Mcp_Name="echo", **v)
    assert status == 400 and body["error"]["code"] == -32020
    status, body, _ = await raw.post(stateless("tools/list", meta=False), Mcp_Method="tools/list", **v)
    assert status == 400 and body["error"]["code"] == -32602 and "_meta" in body["error"]["message"]
    status, body, _ = await raw.post(stateless("ping"), Mcp_Method="ping", **v)  # removed in 2026-07-28
    assert status == 404 and body["error"]["code"] == -32601
    status, body, _ = await raw.post(stateless("tools/list"), Mcp_Method="tools/list", **v)
    assert status == 200 and [t["name"] for t in body["result"]["tools"]] == ["echo"]
    assert body["result"]["resultType"] == "complete" and body["result"]["cacheScope"] == "private"
    async with raw.session.get(client.url("/mcp"), headers={**raw.headers(), "MCP-Protocol-Version": "2026-07-28",
                                                              "Accept": "text/event-stream"}) as r:
        assert r.status == 405 and r.headers["Allow"] == "POST"
    assert raw.hits == []  # nothing ran


async def test_a_user_holds_a_bounded_number_of_sessions_the_oldest_ends_first(
        setup: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from gofannon.services import mcp_server

    monkeypatch.setattr(mcp_server, "MAX_SESSIONS_PER_USER", 2)
    _client, raw = setup
    first, second, third = [await raw.initialize() for _ in range(3)]
    ping = {"jsonrpc": "2.0", "id": 5, "method": "ping"}
    assert (await raw.post(ping, Mcp_Session_Id=first))[0] == 404
    assert (await raw.post(ping, Mcp_Session_Id=second))[0] == 200
    assert (await raw.post(ping, Mcp_Session_Id=third))[0] == 200


async def test_a_request_id_that_is_not_a_string_or_an_integer_is_an_invalid_request(setup: Any) -> None:
    _client, raw = setup
    sid = await raw.initialize()
    for bad in (None, {"a": 1}, True, 1.5, [1]):
        status, body, _ = await raw.post({"jsonrpc": "2.0", "id": bad, "method": "ping"}, Mcp_Session_Id=sid)
        assert status == 400 and body["error"]["code"] == -32600 and body["id"] is None, (bad, body)
        call = {"jsonrpc": "2.0", "id": bad, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"inputText": "x"}}}
        status, body, _ = await raw.post(call, Mcp_Session_Id=sid)
        assert status == 400 and body["error"]["code"] == -32600, (bad, body)
    status, body, _ = await raw.post({"jsonrpc": "2.0", "id": None, "method": "tools/list",
                                      "params": stateless("tools/list")["params"]},
                                     Mcp_Method="tools/list", MCP_Protocol_Version="2026-07-28")
    assert status == 400 and body["error"]["code"] == -32600 and body["id"] is None
    assert raw.hits == []  # nothing ran
    for good in ("abc", 0, 7):  # strings and integers are ids
        status, body, _ = await raw.post({"jsonrpc": "2.0", "id": good, "method": "ping"}, Mcp_Session_Id=sid)
        assert status == 200 and body == {"jsonrpc": "2.0", "id": good, "result": {}}


async def test_a_huge_client_info_is_not_kept_in_the_session(setup: Any) -> None:
    from gofannon.services.mcp_server import SESSIONS
    from gofannon.web.keys import KERNEL

    client, raw = setup
    huge = {"name": "n" * 1_000_000, "version": "1.0", "websiteUrl": "https://client.example",
            "icons": [{"src": "data:image/png;base64," + "A" * 100_000}] * 5}
    init = {**INIT, "params": {**INIT["params"], "clientInfo": huge, "capabilities": {"experimental": {
        "x": {"blob": "b" * 500_000}}}}}
    status, body, headers = await raw.post(init)
    assert status == 200 and body["result"]["serverInfo"]["name"] == "gofannon"
    sid = headers["Mcp-Session-Id"]
    doc = await client.server.app[KERNEL].store.get(SESSIONS, sid)
    assert doc["clientInfo"] == {"name": "n" * 256, "version": "1.0", "websiteUrl": "https://client.example"}
    assert len(json.dumps(doc)) < 2000  # what every later request of the session reads
    status, body, _ = await raw.post({"jsonrpc": "2.0", "id": 2, "method": "ping"}, Mcp_Session_Id=sid)
    assert status == 200 and body["result"] == {}
