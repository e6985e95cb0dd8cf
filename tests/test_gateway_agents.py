"""Deployed agents as ``/v1`` models (``agent/<friendlyName>``): run in the sandbox as the caller, the last
user message as input, the answer as the completion, errors and the time limit as server errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from conftest import Client
from fakes import FakeLLMServer, Reply
from test_gateway_openai import Gateway, make_token, start_gateway
from test_rest import deploy

ECHO = "async def run(input_dict, tools):\n    return {'outputText': 'echo: ' + input_dict['inputText']}\n"
STRUCTURED = "async def run(input_dict, tools):\n    return {'sum': input_dict['a'] + input_dict['b']}\n"
FAILING = "async def run(input_dict, tools):\n    raise ValueError('the agent broke')\n"
SLOW = "import asyncio\n\nasync def run(input_dict, tools):\n    await asyncio.sleep(30)\n    return {}\n"
CALLS_LLM = """
async def run(input_dict, tools):
    content, thoughts = await call_llm(provider="fake", model="chat-1",
                                       messages=[{"role": "user", "content": input_dict["inputText"]}])
    return {"outputText": content}
"""


@pytest.fixture
async def agw(serve: Any, fake_llm: FakeLLMServer, tmp_path: Path) -> Gateway:
    gw = await start_gateway(serve, fake_llm, tmp_path, GOFANNON_SANDBOX_TIMEOUT_S="2")
    await deploy(gw.client, name="echo", friendlyName="echo", code=ECHO)
    await deploy(gw.client, name="adder", friendlyName="adder", code=STRUCTURED)
    await deploy(gw.client, name="broken", friendlyName="broken", code=FAILING)
    await deploy(gw.client, name="slow", friendlyName="slow", code=SLOW)
    await deploy(gw.client, name="asker", friendlyName="asker", code=CALLS_LLM)
    return gw


async def test_deployed_agents_are_models(agw: Gateway) -> None:
    ids = [m.id async for m in agw.sdk().models.list()]
    assert {"agent/echo", "agent/adder", "agent/broken"} <= set(ids)
    assert (await agw.sdk().models.retrieve("agent/echo")).owned_by == "gofannon"


async def test_an_agent_answers_the_last_user_message(agw: Gateway) -> None:
    got = await agw.sdk().chat.completions.create(model="agent/echo", messages=[
        {"role": "system", "content": "ignored"}, {"role": "user", "content": "first"},
        {"role": "assistant", "content": "..."}, {"role": "user", "content": [{"type": "text", "text": "hello"}]}])
    assert got.choices[0].message.content == "echo: hello" and got.choices[0].finish_reason == "stop"
    assert got.model == "agent/echo" and got.usage.total_tokens == 0


async def test_a_json_object_message_is_the_whole_input_and_a_result_without_output_text_is_json(
        agw: Gateway) -> None:
    got = await agw.sdk().chat.completions.create(
        model="agent/adder", messages=[{"role": "user", "content": json.dumps({"a": 2, "b": 40})}])
    assert json.loads(got.choices[0].message.content) == {"sum": 42}


async def test_an_agent_streams_its_answer(agw: Gateway) -> None:
    stream = await agw.sdk().chat.completions.create(
        model="agent/echo", messages=[{"role": "user", "content": "x" * 600}], stream=True,
        stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(texts) == "echo: " + "x" * 600 and len(texts) > 1
    assert chunks[-1].usage is not None


async def test_an_agent_error_is_a_server_error_with_its_message(agw: Gateway) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        await agw.sdk().chat.completions.create(model="agent/broken", messages=[{"role": "user", "content": "go"}])
    assert err.value.status_code == 500 and "the agent broke" in err.value.message


async def test_an_agent_over_its_time_limit_is_504(agw: Gateway) -> None:
    with pytest.raises(openai.APIStatusError) as err:
        await agw.sdk().chat.completions.create(model="agent/slow", messages=[{"role": "user", "content": "go"}])
    assert err.value.status_code == 504 and "timeout" in err.value.message


async def test_an_agent_model_needs_a_user_message(agw: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await agw.sdk().chat.completions.create(model="agent/echo", messages=[{"role": "system", "content": "x"}])
    assert err.value.param == "messages"


async def test_an_agents_own_llm_calls_are_charged_to_the_caller(agw: Gateway) -> None:
    agw.fake.script(Reply("from the model", input_tokens=7, output_tokens=2))
    bob = Gateway(Client(agw.client.server, aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))), "",
                  agw.fake)
    try:
        await bob.client.login("bob")
        bob.token = await make_token(bob.client)
        got = await bob.sdk().chat.completions.create(model="agent/asker", messages=[{"role": "user", "content": "q"}])
        assert got.choices[0].message.content == "from the model"
        history = await bob.usage()
        assert history[-1]["metadata"]["model"] == "chat-1" and history[-1]["responseCost"] > 0
    finally:
        await bob.client.session.close()


async def test_a_shared_workspaces_agent_is_a_model_for_its_members_only(serve: Any, fake_llm: FakeLLMServer,
                                                                        tmp_path: Path) -> None:
    alice = await start_gateway(serve, fake_llm, tmp_path)
    bob = Gateway(Client(alice.client.server, aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))),
                  "", fake_llm)
    try:
        await bob.client.login("bob")
        bob.token = await make_token(bob.client)
        async with alice.client.post("/workspaces", json={"displayName": "Team", "description": "d"}) as r:
            ws = (await r.json())["workspaceId"]
        header = {"X-Gofannon-Workspace": ws}
        async with alice.client.post("/agents", headers=header, json={
                "name": "team_echo", "description": "d", "code": ECHO, "friendlyName": "team_echo"}) as r:
            assert r.status == 201, await r.text()
            agent_id = (await r.json())["_id"]
        async with alice.client.post(f"/agents/{agent_id}/deploy", headers=header) as r:
            assert r.status == 201, await r.text()
        hi = [{"role": "user", "content": "hi"}]
        # bob is not a member: not listed, and the 404 of an unknown model
        assert "agent/team_echo" not in [m.id async for m in bob.sdk().models.list()]
        with pytest.raises(openai.NotFoundError):
            await bob.sdk().chat.completions.create(model="agent/team_echo", messages=hi)
        async with alice.client.put(f"/workspaces/{ws}/members/dev_stub:bob", json={"role": "member"}) as r:
            assert r.status == 200, await r.text()
        in_ws = bob.sdk(default_headers=header)
        assert "agent/team_echo" in [m.id async for m in in_ws.models.list()]
        got = await in_ws.chat.completions.create(model="agent/team_echo", messages=hi)
        assert got.choices[0].message.content == "echo: hi"
    finally:
        await bob.client.session.close()


async def test_every_agent_model_call_leaves_a_run_record(agw: Gateway) -> None:
    """The caller finds each call in GET /runs: the input it got, and the result or the error."""
    await agw.sdk().chat.completions.create(model="agent/echo", messages=[{"role": "user", "content": "recorded"}])
    with pytest.raises(openai.InternalServerError):
        await agw.sdk().chat.completions.create(model="agent/broken", messages=[{"role": "user", "content": "go"}])
    async with agw.client.get("/runs") as r:
        assert r.status == 200
        listed = (await r.json())["runs"]
    by_agent = {run["agentName"]: run for run in listed}
    assert {"echo", "broken"} <= set(by_agent), listed
    async with agw.client.get(f"/runs/{by_agent['echo']['runId']}") as r:
        echo = await r.json()
    assert echo["status"] == "success" and echo["inputDict"] == {"inputText": "recorded"}
    assert echo["result"] == {"outputText": "echo: recorded"}
    async with agw.client.get(f"/runs/{by_agent['broken']['runId']}") as r:
        broken = await r.json()
    assert broken["status"] == "error" and "the agent broke" in broken["error"]


async def test_a_tokens_max_spend_counts_the_llm_calls_its_agent_runs_make(agw: Gateway) -> None:
    """An agent called with a scoped token spends that token's budget with its own LLM calls, on /v1 and
    /rest alike, and stops being able to call a model once the budget is gone."""
    from test_gateway_openai import PRICE_IN, PRICE_OUT

    async with agw.client.post("/users/me/tokens", json={"name": "agents", "maxSpend": 0.3}) as r:
        assert r.status == 201
        made = await r.json()
    one_call = 7 * PRICE_IN + 2 * PRICE_OUT
    agw.fake.respond(lambda req: Reply("from the model", input_tokens=7, output_tokens=2))

    async def spend() -> float:
        async with agw.client.get("/users/me/tokens") as r:
            return float(next(t for t in (await r.json())["tokens"] if t["id"] == made["id"])["spend"])

    got = await agw.sdk(made["token"]).chat.completions.create(
        model="agent/asker", messages=[{"role": "user", "content": "q"}], max_tokens=5)
    assert got.choices[0].message.content == "from the model"
    assert await spend() == pytest.approx(one_call)
    async with aiohttp.ClientSession() as plain:
        async with plain.post(agw.client.url("/rest/asker"), json={"inputText": "q"},
                              headers={"Authorization": f"Bearer {made['token']}"}) as r:
            assert r.status == 200, await r.text()
    assert await spend() == pytest.approx(2 * one_call)
    # An agent's own calls name no max_tokens, so each reserves the model's whole output (about $0.25 here): once
    # the rest of the budget cannot hold that, the agent's call is refused, the run fails, nothing is overspent.
    for _ in range(30):
        try:
            await agw.sdk(made["token"]).chat.completions.create(
                model="agent/asker", messages=[{"role": "user", "content": "q"}])
        except (openai.InternalServerError, openai.RateLimitError):
            break
    else:
        pytest.fail("the token's budget never stopped its agent")
    assert await spend() <= 0.3 + 1e-9
