"""What JSON's grammar allows but nothing after it can carry, all found by fuzzing (each made a bare 500).

Text that is not Unicode: a ``\\u`` escape may name half of a surrogate pair, which decodes to a string UTF-8
cannot encode. A request body holding one is a 4xx in each API's own error shape, a whole pair still reads as the
character it encodes, an answer that holds one (an agent's output) is written with U+FFFD in its place (strict
JSON parsers, the MCP SDK's among them, refuse the escape), and a store keeps it as its escape. Numbers too large
for a float (``1e400``) and Python's ``NaN``/``Infinity`` extensions are a 422 too (their echo in the 422 failed).
"""

from __future__ import annotations

import json
from typing import Any

from conftest import Client
from test_mcp_server import deploy, mcp_session, new_token

HALF = "\\ud800"  # JSON text: the escape of a lone high surrogate
PAIR = "\\ud83d\\ude00"  # JSON text: the escapes of one emoji


async def post_raw(client: Client, path: str, text: str, **headers: str) -> tuple[int, Any]:
    async with client.post(path, data=text.encode(), headers={"Content-Type": "application/json", **headers}) as r:
        return r.status, await r.json()


async def test_a_request_body_with_half_a_surrogate_pair_is_refused_in_each_apis_shape(client: Client) -> None:
    await client.login("alice")
    status, body = await post_raw(client, "/users/me/tokens", f'{{"name": "x{HALF}"}}')
    assert status == 422 and body["detail"][0]["type"] == "json_invalid"
    assert "not valid Unicode" in body["detail"][0]["ctx"]["error"]
    status, body = await post_raw(client, "/users/me/tokens", f'{{"name": "smile {PAIR}"}}')  # a whole pair is fine
    assert status == 201 and body["name"] == "smile \U0001F600"
    token = body["token"]

    bearer = {"Authorization": f"Bearer {token}"}
    status, body = await post_raw(client, "/v1/chat/completions",
                                  f'{{"model": "x{HALF}", "messages": [{{"role": "user", "content": "hi"}}]}}',
                                  **bearer)
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert "not valid Unicode" in body["error"]["message"]
    status, body = await post_raw(client, "/mcp", f'{{"jsonrpc": "2.0", "id": "{HALF}", "method": "ping"}}',
                                  Accept="application/json, text/event-stream", **bearer)
    assert status == 400 and body["error"]["code"] == -32700 and body["id"] is None


async def test_an_agent_answer_holding_half_a_surrogate_pair_answers_with_the_replacement_character(
        client: Client) -> None:
    await client.login("alice")
    code = "async def run(input_dict, tools):\n    return {'outputText': 'a' + chr(0xD800) + 'b'}\n"
    await deploy(client, name="Odd", friendlyName="odd", code=code)
    async with client.post("/rest/odd", json={"inputText": "x"}) as r:
        assert r.status == 200
        raw = await r.read()
    assert json.loads(raw)["outputText"] == "a\ufffdb"

    token = await new_token(client)
    async with client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {token}"},
                           json={"model": "agent/odd", "messages": [{"role": "user", "content": "x"}]}) as r:
        assert r.status == 200
        assert json.loads(await r.read())["choices"][0]["message"]["content"] == "a\ufffdb"
    async with mcp_session(client.url("/mcp"), token) as session:
        await session.initialize()
        result = await session.call_tool("odd", {"inputText": "x"})
    assert not result.is_error and result.structured_content == {"outputText": "a\ufffdb"}


async def test_numbers_json_cannot_answer_with_are_a_422_not_a_500(client: Client) -> None:
    await client.login("alice")
    for body in ('{"monthlyAllowance": 1e400}', '{"monthlyAllowance": -1E+999}', '{"monthlyAllowance": NaN}',
                 '{"monthlyAllowance": Infinity}', '{"x": [1e999]}'):
        async with client.put("/users/me/monthly-allowance", data=body,
                              headers={"Content-Type": "application/json"}) as r:
            assert r.status == 422, body
            error = (await r.json())["detail"][0]
            assert error["type"] == "json_invalid" and error["ctx"]["error"], body
    async with client.put("/users/me/monthly-allowance", json={"monthlyAllowance": 1e9}) as r:
        assert r.status == 200  # large, but an allowance
    for allowance in (1e300, -1):  # not an allowance: more than a billion, or less than nothing
        async with client.put("/users/me/monthly-allowance", json={"monthlyAllowance": allowance}) as r:
            assert r.status == 422 and (await r.json())["detail"][0]["loc"] == ["body", "monthlyAllowance"]
