"""POST /rest/{friendly_name}: deployed agents written for the reference, called by any signed-in user."""

from __future__ import annotations

import textwrap
from typing import Any, AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from conftest import Client, local_site
from fakes import FakeLLMServer, Reply
from test_agents_crud import create

MODEL = "gpt-5.1-codex-mini"

REFERENCE_STYLE = textwrap.dedent(f"""
    from agent_factory.remote_mcp_client import RemoteMCPClient
    from services.llm_service import call_llm
    import httpx

    async def run(input_dict, tools):
        mcpc = {{url: RemoteMCPClient(remote_url=url) for url in tools}}
        http_client = httpx.AsyncClient()
        try:
            content, thoughts = await call_llm(
                provider="openai", model="{MODEL}",
                messages=[{{"role": "user", "content": input_dict["inputText"]}}],
                parameters={{"temperature": 0.5}},
                user_service="ignored", user_id="someone-else",
            )
            fetched = await http_client.get(input_dict["url"])
            fetched.raise_for_status()
            helped = await gofannon_client.call(agent_name="helper", input_dict={{"n": 2}})
            return {{"outputText": content, "fetched": fetched.json(), "helped": helped}}
        finally:
            await http_client.aclose()
""")

HELPER = "async def run(input_dict, tools):\n    return {'n': input_dict['n'] * 10}\n"


async def deploy(client: Client, **agent: Any) -> dict[str, Any]:
    doc = await create(client, **agent)
    async with client.post(f"/agents/{doc['_id']}/deploy") as r:
        assert r.status == 201, await r.text()
    return doc


@pytest.fixture
async def site() -> AsyncIterator[str]:
    """A small web service on 127.0.0.1 that agents fetch through http_client."""
    app = web.Application()
    app.router.add_get("/data", lambda request: web.json_response({"from": "site", "q": request.query.get("q")}))
    async with local_site(app, "/data") as url:
        yield url


@pytest.fixture
async def two_users(serve: Any, fake_openai: FakeLLMServer) -> AsyncIterator[tuple[Client, Client]]:
    alice = await serve(**fake_openai.env)
    await alice.login("alice")
    bob = Client(alice.server, aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)))
    await bob.login("bob")
    try:
        yield alice, bob
    finally:
        await bob.session.close()


async def test_reference_agent_code_runs_unchanged_for_any_signed_in_caller(
        two_users: tuple[Client, Client], fake_openai: FakeLLMServer, site: str) -> None:
    alice, bob = two_users
    helper = await create(alice, name="helper", friendlyName="helper", code=HELPER)
    await deploy(alice, name="reference", friendlyName="reference", code=REFERENCE_STYLE,
                 gofannonAgents=[helper["_id"]])
    fake_openai.respond(lambda req: Reply(f"echo: {req.last_user_text}"))
    async with bob.post("/rest/reference", json={"inputText": "hello", "url": site}) as r:
        assert r.status == 200, await r.text()
        assert await r.json() == {"outputText": "echo: hello", "fetched": {"from": "site", "q": None},
                                  "helped": {"n": 20}}
    sent = fake_openai.requests[-1]
    assert sent.api_key == "sk-fake-test-key"
    async with bob.get("/users/me") as r:
        usage = (await r.json())["usageInfo"]
    async with alice.get("/users/me") as r:
        alice_usage = (await r.json())["usageInfo"]
    assert usage["spendRemaining"] <= alice_usage["spendRemaining"]  # the caller pays, not the owner


async def test_the_result_is_the_raw_return_value(two_users: tuple[Client, Client]) -> None:
    alice, _ = two_users
    await deploy(alice, friendlyName="raw", code="async def run(input_dict, tools):\n    return input_dict\n")
    for body in ([1, 2, 3], "text", 42, {"a": None}):
        async with alice.post("/rest/raw", json=body) as r:
            assert r.status == 200
            assert await r.json() == body


async def test_rest_errors_are_clear(two_users: tuple[Client, Client]) -> None:
    alice, bob = two_users
    await deploy(alice, friendlyName="picky",
                 code="async def run(input_dict, tools):\n    return {'outputText': input_dict['inputText']}\n")
    async with bob.post("/rest/picky", json={}) as r:
        assert r.status == 500
        assert await r.json() == {"detail": "Error executing agent: 'inputText'"}
    async with bob.post("/rest/picky", data="{not json", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 422
    async with bob.post("/rest/nobody") as r:
        assert r.status == 404
        assert (await r.json())["detail"] == "No deployed agent found with that name."
    anonymous = Client(alice.server, aiohttp.ClientSession())
    try:
        async with anonymous.post("/rest/picky", json={"inputText": "x"}) as r:
            assert r.status == 401
    finally:
        await anonymous.session.close()


async def test_an_exhausted_allowance_answers_402(two_users: tuple[Client, Client]) -> None:
    alice, bob = two_users
    await deploy(alice, friendlyName="asker", code=textwrap.dedent(f"""
        async def run(input_dict, tools):
            content, _ = await call_llm("openai", "{MODEL}", [{{"role": "user", "content": "hi"}}], {{}})
            return content
    """))
    async with bob.put("/users/me/spend-remaining", json={"spendRemaining": 0}) as r:
        assert r.status == 200, await r.text()
    async with bob.post("/rest/asker", json={}) as r:
        assert r.status == 402
        assert (await r.json())["detail"] == "Insufficient spend allowance to complete request"
    async with alice.post("/rest/asker", json={}) as r:
        assert r.status == 200
        assert await r.json() == "Hello from the fake model"


async def test_llm_settings_of_chat_apply_to_the_agents_calls(
        two_users: tuple[Client, Client], fake_openai: FakeLLMServer) -> None:
    from gofannon.services.deployments import run_deployed_agent
    from gofannon.web.keys import KERNEL

    alice, _ = two_users
    await deploy(alice, friendlyName="tuned", code=textwrap.dedent(f"""
        async def run(input_dict, tools):
            content, _ = await call_llm("openai", "{MODEL}", [{{"role": "user", "content": "hi"}}],
                                        {{"temperature": 0.9}})
            return {{"outputText": content}}
    """))
    kernel = alice.server.app[KERNEL]
    from gofannon.auth import Identity

    ident = Identity(uid="dev_stub:bob", provider_type="dev_stub")
    result = await run_deployed_agent(kernel, ident, "tuned", {"inputText": "x"},
                                      llm_settings={"temperature": 0.1})
    assert result == {"outputText": "Hello from the fake model"}
    assert fake_openai.requests[-1].json["temperature"] == 0.1
    await run_deployed_agent(kernel, ident, "tuned", {}, llm_settings={"perModel": {f"openai/{MODEL}": {
        "temperature": 0.3}}})
    assert fake_openai.requests[-1].json["temperature"] == 0.3
    await run_deployed_agent(kernel, ident, "tuned", {}, llm_settings={"perModel": {"openai/other": {
        "temperature": 0.3}}})
    assert fake_openai.requests[-1].json["temperature"] == 0.9


async def test_agents_can_opt_in_to_input_validation(two_users: tuple[Client, Client]) -> None:
    alice, bob = two_users
    await deploy(alice, friendlyName="strict", validateInput=True, inputSchema={"inputText": "string", "n": "integer"},
                 code="async def run(input_dict, tools):\n    return input_dict['n']\n")
    async with bob.post("/rest/strict", json={"inputText": "x"}) as r:
        assert r.status == 422
        assert (await r.json())["detail"][0]["loc"] == ["body", "n"]
    async with bob.post("/rest/strict", json={"inputText": "x", "n": "seven"}) as r:
        assert r.status == 422
    async with bob.post("/rest/strict", json={"inputText": "x", "n": 7}) as r:
        assert r.status == 200 and await r.json() == 7


async def test_a_run_over_its_time_limit_is_504_and_the_server_keeps_serving(serve: Any) -> None:
    client = await serve(GOFANNON_SANDBOX_TIMEOUT_S="1")
    await client.login("alice")
    await deploy(client, friendlyName="sleepy",
                 code="import asyncio\nasync def run(input_dict, tools):\n    await asyncio.sleep(30)\n")
    await deploy(client, name="quick", friendlyName="quick",
                 code="async def run(input_dict, tools):\n    return 'ok'\n")
    async with client.post("/rest/sleepy", json={}) as r:
        assert r.status == 504
        assert "timeout" in (await r.json())["detail"]
    async with client.post("/rest/quick", json={}) as r:
        assert r.status == 200 and await r.json() == "ok"


async def test_a_run_over_its_memory_limit_is_500_naming_the_limit(serve: Any) -> None:
    client = await serve(GOFANNON_SANDBOX_MEMORY_MB="256")
    await client.login("alice")
    await deploy(client, friendlyName="hog",
                 code="async def run(input_dict, tools):\n    x = bytearray(1024 * 1024 * 1024)\n    return len(x)\n")
    async with client.post("/rest/hog", json={}) as r:
        assert r.status == 500
        detail = (await r.json())["detail"]
        assert detail.startswith("Error executing agent:") and "memory" in detail.lower()


async def test_scripts_call_rest_with_a_personal_api_token(two_users: tuple[Client, Client]) -> None:
    alice, bob = two_users
    await deploy(alice, friendlyName="scripted",
                 code="async def run(input_dict, tools):\n    return input_dict['n'] + 1\n")
    async with bob.post("/users/me/tokens", json={"name": "script"}) as r:
        assert r.status == 201, await r.text()
        token = (await r.json())["token"]
    async with aiohttp.ClientSession() as plain:
        async with plain.post(alice.url("/rest/scripted"), json={"n": 41},
                              headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200 and await r.json() == 42


async def test_concurrent_callers_all_get_their_own_answer(two_users: tuple[Client, Client]) -> None:
    import asyncio

    alice, bob = two_users
    await deploy(alice, friendlyName="echo_n", code="async def run(input_dict, tools):\n    return input_dict['n']\n")

    async def call(client: Client, n: int) -> Any:
        async with client.post("/rest/echo_n", json={"n": n}) as r:
            assert r.status == 200
            return await r.json()

    answers = await asyncio.gather(*[call(alice if n % 2 else bob, n) for n in range(20)])
    assert answers == list(range(20))
