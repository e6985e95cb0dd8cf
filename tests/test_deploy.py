"""Deployments over HTTP: publish, status, list, undeploy, name rules, renames."""

from __future__ import annotations

from typing import Any, AsyncIterator

import aiohttp
import pytest

from conftest import Client
from test_agents_crud import agent_body, create


@pytest.fixture
async def alice_bob(serve: Any) -> AsyncIterator[tuple[Client, Client]]:
    alice = await serve()
    await alice.login("alice")
    bob = Client(alice.server, aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)))
    await bob.login("bob")
    try:
        yield alice, bob
    finally:
        await bob.session.close()


async def test_deploying_publishes_the_agent_under_its_friendly_name(alice_bob: tuple[Client, Client]) -> None:
    alice, bob = alice_bob
    doc = await create(alice, friendlyName="echo_agent", inputSchema=None)
    async with alice.get(f"/agents/{doc['_id']}/deployment") as r:
        assert await r.json() == {"is_deployed": False}
    async with alice.post(f"/agents/{doc['_id']}/deploy") as r:
        assert r.status == 201
        assert await r.json() == {"message": "Agent deployed successfully", "endpoint": "/rest/echo_agent"}
    async with alice.post(f"/agents/{doc['_id']}/deploy") as r:
        assert r.status == 201
        assert await r.json() == {"message": "Agent is already deployed", "endpoint": "/rest/echo_agent"}
    async with alice.get(f"/agents/{doc['_id']}/deployment") as r:
        assert await r.json() == {"is_deployed": True, "friendly_name": "echo_agent"}
    # the list is public to every signed-in user, and a null schema does not break it
    async with bob.get("/deployments") as r:
        assert r.status == 200
        assert await r.json() == [{"friendlyName": "echo_agent", "agentId": doc["_id"], "description": "Shouts",
                                   "inputSchema": {}, "outputSchema": {"outputText": "string"}}]


async def test_deploy_errors_name_the_problem(alice_bob: tuple[Client, Client]) -> None:
    alice, bob = alice_bob
    nameless = await create(alice, friendlyName=None)
    async with alice.post(f"/agents/{nameless['_id']}/deploy") as r:
        assert r.status == 400
        assert (await r.json())["detail"] == "Agent must have a friendly_name to be deployed."
    mine = await create(alice, friendlyName="taken")
    async with alice.post(f"/agents/{mine['_id']}/deploy") as r:
        assert r.status == 201
    theirs = await create(bob, friendlyName="taken")
    async with bob.post(f"/agents/{theirs['_id']}/deploy") as r:
        assert r.status == 409
        assert (await r.json())["detail"] == "A deployment with the name 'taken' already exists for a different agent."
    # bob can neither deploy nor undeploy alice's agent: same 404 as an unknown id
    for path in (f"/agents/{mine['_id']}/deploy", "/agents/nope/deploy"):
        async with bob.post(path) as r:
            assert r.status == 404
    for path in (f"/agents/{mine['_id']}/undeploy", "/agents/nope/undeploy"):
        async with bob.delete(path) as r:
            assert r.status == 404
    async with alice.get(f"/agents/{mine['_id']}/deployment") as r:
        assert (await r.json())["is_deployed"] is True


async def test_undeploy_answers_204_and_the_name_is_free_again(alice_bob: tuple[Client, Client]) -> None:
    alice, bob = alice_bob
    doc = await create(alice, friendlyName="short_lived")
    async with alice.post(f"/agents/{doc['_id']}/deploy") as r:
        assert r.status == 201
    async with alice.delete(f"/agents/{doc['_id']}/undeploy") as r:
        assert r.status == 204
    async with alice.delete(f"/agents/{doc['_id']}/undeploy") as r:
        assert r.status == 204
    async with alice.get("/deployments") as r:
        assert await r.json() == []
    other = await create(bob, friendlyName="short_lived")
    async with bob.post(f"/agents/{other['_id']}/deploy") as r:
        assert r.status == 201


async def test_renaming_a_deployed_agent_moves_its_public_name(alice_bob: tuple[Client, Client]) -> None:
    alice, bob = alice_bob
    doc = await create(alice, friendlyName="old_name")
    async with alice.post(f"/agents/{doc['_id']}/deploy") as r:
        assert r.status == 201
    async with alice.put(f"/agents/{doc['_id']}", json={"friendlyName": "new_name"}) as r:
        assert r.status == 200
    async with alice.get(f"/agents/{doc['_id']}/deployment") as r:
        assert await r.json() == {"is_deployed": True, "friendly_name": "new_name"}
    async with alice.get("/deployments") as r:
        assert [d["friendlyName"] for d in await r.json()] == ["new_name"]
    # the old name is free: somebody else can take it
    other = await create(bob, friendlyName="old_name")
    async with bob.post(f"/agents/{other['_id']}/deploy") as r:
        assert r.status == 201
    # renaming onto a name another agent holds is refused, and nothing changes
    async with alice.put(f"/agents/{doc['_id']}", json={"friendlyName": "old_name"}) as r:
        assert r.status == 409
    async with alice.get(f"/agents/{doc['_id']}") as r:
        assert (await r.json())["friendlyName"] == "new_name"
    # clearing the name unpublishes
    async with alice.put(f"/agents/{doc['_id']}", json={"friendlyName": None}) as r:
        assert r.status == 200
    async with alice.get("/deployments") as r:
        assert [d["friendlyName"] for d in await r.json()] == ["old_name"]


async def test_rest_of_an_unknown_name_is_404(alice_bob: tuple[Client, Client]) -> None:
    alice, _ = alice_bob
    async with alice.post("/rest/nobody_here", json={"inputText": "x"}) as r:
        assert r.status == 404
        assert await r.json() == {"detail": "No deployed agent found with that name."}
    doc = await create(alice, friendlyName="not_deployed_yet")
    assert doc["_id"]
    async with alice.post("/rest/not_deployed_yet", json={"inputText": "x"}) as r:
        assert r.status == 404


async def test_deploy_requires_a_name_matching_the_rule(alice_bob: tuple[Client, Client]) -> None:
    alice, _ = alice_bob
    body = agent_body(friendlyName="ok")
    async with alice.post("/agents", json=body) as r:
        doc = await r.json()
    async with alice.put(f"/agents/{doc['_id']}", json={"friendlyName": "bad name"}) as r:
        assert r.status == 422


async def test_the_catalog_provider_lists_deployed_agents_and_drops_orphans(alice_bob: tuple[Client, Client]) -> None:
    from gofannon.services.deployments import gofannon_provider_models
    from gofannon.web.keys import KERNEL

    alice, _ = alice_bob
    kernel = alice.server.app[KERNEL]
    assert await gofannon_provider_models(kernel) == {"models": {}}
    doc = await create(alice, friendlyName="echo_agent")
    gone = await create(alice, name="gone", friendlyName="gone_agent")
    for agent in (doc, gone):
        async with alice.post(f"/agents/{agent['_id']}/deploy") as r:
            assert r.status == 201
    await kernel.store.delete("agents", gone["_id"])  # an agent vanished behind the API's back
    assert await gofannon_provider_models(kernel) == {"models": {"echo_agent": {
        "id": doc["_id"], "description": "Shouts",
        "parameters": {"inputText": {"type": "string", "description": "inputText", "default": ""}}}}}
    assert await kernel.store.get("deployments", "gone_agent") is None


async def test_a_site_admin_sees_every_agent(serve: Any) -> None:
    alice = await serve()
    await alice.login("alice")
    doc = await create(alice)
    admin = Client(alice.server, aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)))
    try:
        await admin.login("admin")
        async with admin.get("/agents") as r:
            assert [a["_id"] for a in await r.json()] == [doc["_id"]]
        async with admin.get(f"/agents/{doc['_id']}") as r:
            assert r.status == 200
    finally:
        await admin.session.close()
