"""Agents CRUD over HTTP: wire shape, ownership, revisions, partial merge, validation."""

from __future__ import annotations

import asyncio
from typing import Any

WIRE_ORDER = [
    "name", "description", "code", "docstring", "friendlyName", "tools", "swaggerSpecs", "inputSchema",
    "outputSchema", "invokableModels", "gofannonAgents", "composerThoughts", "composerModelConfig",
    "dataStoreConfig", "envVars", "_id", "_rev", "createdAt", "updatedAt",
]

CODE = "async def run(input_dict, tools):\n    return {'outputText': input_dict['inputText'].upper()}\n"


def agent_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "shout", "description": "Shouts", "code": CODE, "friendlyName": "shout",
                            "inputSchema": {"inputText": "string"}, "outputSchema": {"outputText": "string"}}
    body.update(over)
    return body


async def create(client: Any, **over: Any) -> dict[str, Any]:
    async with client.post("/agents", json=agent_body(**over)) as r:
        assert r.status == 201, await r.text()
        return await r.json()  # type: ignore[no-any-return]


async def test_created_agent_comes_back_with_the_reference_keys_in_order(serve: Any) -> None:
    client = await serve()
    await client.login("alice")
    doc = await create(client, snake_field_ignored=1, _id="mine")
    assert list(doc)[: len(WIRE_ORDER)] == WIRE_ORDER
    assert doc["_id"] != "mine" and doc["_rev"]
    assert doc["tools"] == {} and doc["swaggerSpecs"] == [] and doc["gofannonAgents"] == [] and doc["envVars"] == []
    assert doc["createdAt"] == doc["updatedAt"] and "+" not in doc["createdAt"]
    async with client.get(f"/agents/{doc['_id']}") as r:
        assert r.status == 200
        assert await r.json() == doc
    async with client.get("/agents") as r:
        listed = await r.json()
    assert [a["_id"] for a in listed] == [doc["_id"]]
    assert list(listed[0])[: len(WIRE_ORDER)] == WIRE_ORDER


async def test_snake_case_input_is_accepted(serve: Any) -> None:
    client = await serve()
    await client.login("alice")
    body = {"name": "n", "description": "d", "code": CODE, "friendly_name": "snake_name",
            "input_schema": {"a": "string"}}
    async with client.post("/agents", json=body) as r:
        assert r.status == 201
        doc = await r.json()
    assert doc["friendlyName"] == "snake_name" and doc["inputSchema"] == {"a": "string"}


async def test_missing_required_fields_and_bad_names_are_422(serve: Any) -> None:
    client = await serve()
    await client.login("alice")
    async with client.post("/agents", json={"name": "x", "description": "d"}) as r:
        assert r.status == 422
        detail = (await r.json())["detail"]
        assert detail[0]["loc"] == ["body", "code"] and detail[0]["type"] == "missing"
    for bad in ("9lives", "has space", "dash-name", "x" * 65):
        async with client.post("/agents", json=agent_body(friendlyName=bad)) as r:
            assert r.status == 422, bad
            assert (await r.json())["detail"][0]["loc"] == ["body", "friendlyName"]
    async with client.post("/agents", data="not json", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 422


async def test_another_users_agent_is_invisible_and_answers_like_an_unknown_id(serve: Any) -> None:
    alice = await serve()
    await alice.login("alice")
    doc = await create(alice)
    bob = type(alice)(alice.server, __import__("aiohttp").ClientSession(
        cookie_jar=__import__("aiohttp").CookieJar(unsafe=True)))
    try:
        await bob.login("bob")
        async with bob.get("/agents") as r:
            assert await r.json() == []
        for method in ("GET", "PUT", "DELETE"):
            kw = {"json": {"name": "stolen"}} if method == "PUT" else {}
            async with bob.request(method, f"/agents/{doc['_id']}", **kw) as r:
                theirs = (r.status, await r.json())
            async with bob.request(method, "/agents/no-such-id", **kw) as r:
                unknown = (r.status, await r.json())
            assert theirs[0] == unknown[0] == 404
            assert theirs[1]["detail"] == unknown[1]["detail"].replace("no-such-id", doc["_id"])
    finally:
        await bob.session.close()
    async with alice.get(f"/agents/{doc['_id']}") as r:
        assert (await r.json())["name"] == "shout"


async def test_put_merges_only_the_keys_sent_and_keeps_created_at(serve: Any) -> None:
    client = await serve()
    await client.login("alice")
    doc = await create(client, docstring="doc")
    await asyncio.sleep(0.01)
    async with client.put(f"/agents/{doc['_id']}", json={"description": "Louder", "docstring": None}) as r:
        assert r.status == 200, await r.text()
        new = await r.json()
    assert new["description"] == "Louder" and new["docstring"] is None
    assert new["code"] == CODE and new["name"] == "shout"
    assert new["createdAt"] == doc["createdAt"] and new["updatedAt"] > doc["updatedAt"]
    assert new["_rev"] != doc["_rev"]
    assert list(new)[: len(WIRE_ORDER)] == WIRE_ORDER


async def test_put_with_a_stale_rev_is_a_conflict_and_without_rev_merges_onto_the_latest(serve: Any) -> None:
    client = await serve()
    await client.login("alice")
    doc = await create(client)
    async with client.put(f"/agents/{doc['_id']}", json={"description": "v2", "_rev": doc["_rev"]}) as r:
        assert r.status == 200
        v2 = await r.json()
    async with client.put(f"/agents/{doc['_id']}", json={"description": "v3", "_rev": doc["_rev"]}) as r:
        assert r.status == 409
        assert "detail" in await r.json()
    # concurrent edits without _rev: none is lost
    bodies = [{"docstring": "d"}, {"name": "n2"}, {"tools": {"http://mcp.example/": ["t"]}}]
    answers = await asyncio.gather(*[
        _put(client, doc["_id"], body) for body in bodies
    ])
    assert all(status == 200 for status in answers)
    async with client.get(f"/agents/{doc['_id']}") as r:
        final = await r.json()
    assert final["docstring"] == "d" and final["name"] == "n2" and final["tools"] == {"http://mcp.example/": ["t"]}
    assert final["description"] == v2["description"] == "v2"


async def _put(client: Any, agent_id: str, body: dict[str, Any]) -> int:
    async with client.put(f"/agents/{agent_id}", json=body) as r:
        return r.status  # type: ignore[no-any-return]


async def test_explicit_null_on_a_required_field_is_422_not_500(serve: Any) -> None:
    client = await serve()
    await client.login("alice")
    doc = await create(client)
    for field in ("name", "description", "code", "tools", "envVars"):
        async with client.put(f"/agents/{doc['_id']}", json={field: None}) as r:
            assert r.status == 422, field
            assert (await r.json())["detail"][0]["loc"] == ["body", field]


async def test_delete_answers_204_then_404_and_removes_the_deployment(serve: Any) -> None:
    client = await serve()
    await client.login("alice")
    doc = await create(client)
    async with client.post(f"/agents/{doc['_id']}/deploy") as r:
        assert r.status == 201
    async with client.delete(f"/agents/{doc['_id']}") as r:
        assert r.status == 204 and await r.read() == b""
    async with client.delete(f"/agents/{doc['_id']}") as r:
        assert r.status == 404
        assert (await r.json())["detail"] == f"Document '{doc['_id']}' not found for deletion."
    async with client.get(f"/agents/{doc['_id']}") as r:
        assert (await r.json())["detail"] == f"Document '{doc['_id']}' not found in 'agents'"
    async with client.get("/deployments") as r:
        assert await r.json() == []


async def test_agents_require_login(serve: Any) -> None:
    client = await serve()
    async with client.get("/agents") as r:
        assert r.status == 401


async def test_a_second_api_process_on_the_same_store_sees_every_change_in_its_list(serve: Any) -> None:
    one = await serve()
    two = await serve()  # same data directory: a second API process on the same store
    await one.login("alice")
    await two.login("alice")
    first = await create(one)
    async with two.get("/agents") as r:
        assert [a["_id"] for a in await r.json()] == [first["_id"]]
    second = await create(one, name="another")
    async with one.put(f"/agents/{first['_id']}", json={"description": "changed elsewhere"}) as r:
        assert r.status == 200
    async with two.get("/agents") as r:
        listed = {a["_id"]: a for a in await r.json()}
    assert set(listed) == {first["_id"], second["_id"]}
    assert listed[first["_id"]]["description"] == "changed elsewhere"
    async with one.delete(f"/agents/{second['_id']}") as r:
        assert r.status == 204
    async with two.get("/agents") as r:
        assert [a["_id"] for a in await r.json()] == [first["_id"]]
