"""A scoped personal token's ``models`` and ``maxSpend`` hold on every route that calls a model, not only on
``/v1``, ``/rest`` and ``/mcp``: run-code (its own ``call_llm`` and the agents it calls), chat tickets (in the API
process and in a worker process), code generation and demos (docs/gateway.md, "Scoped tokens")."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from fakes import FakeLLMServer, Reply
from test_chat_tickets import wait_ticket
from test_chat_workers import Workers, rq_env, workers  # noqa: F401 - fixtures
from test_codegen import BODY, answer, request_body
from workspaces_helpers import call, people  # noqa: F401 - people is a fixture

pytestmark = pytest.mark.timeout(120)

# The fake's default usage: 10 input and 5 output tokens (prices from config/catalog/prices.json).
GPT_4O_CALL = 10 * 2.5e-6 + 5 * 1e-5
GPT_4O_MINI_CALL = 10 * 1.5e-7 + 5 * 6e-7


def calls_model(model: str) -> str:
    return ("from services.llm_service import call_llm\n"
            "async def run(input_dict, tools):\n"
            f"    content, _ = await call_llm(provider='openai', model='{model}',\n"
            "                                messages=[{'role': 'user', 'content': 'hi'}])\n"
            "    return {'outputText': content}\n")


CALLS_ALICEPRIV = ("async def run(input_dict, tools):\n"
                   "    return await gofannon_client.call(agent_name='alicepriv', input_dict={'inputText': 'x'})\n")


async def new_token(owner: Any, **scope: Any) -> dict[str, Any]:
    status, made = await call(owner, "POST", "/users/me/tokens", {"name": "scoped", **scope})
    assert status == 201, made
    return made  # type: ignore[no-any-return]


async def spend_of(owner: Any, token: dict[str, Any]) -> float:
    status, listed = await call(owner, "GET", "/users/me/tokens")
    return float(next(t for t in listed["tokens"] if t["id"] == token["id"])["spend"])


class Script:
    """Requests with a bearer token alone (no session cookie), as a script would send them."""

    def __init__(self, owner: Any, session: aiohttp.ClientSession, token: dict[str, Any]) -> None:
        self.owner, self.session, self.headers = owner, session, {"Authorization": f"Bearer {token['token']}"}

    async def __call__(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, self.owner.url(path), json=body, headers=self.headers) as r:
            return r.status, await r.json()

    async def run_code(self, code: str, agents: list[str] | None = None) -> dict[str, Any]:
        status, ran = await self("POST", "/agents/run-code",
                                 {"code": code, "inputDict": {}, "tools": {}, "gofannonAgents": agents or []})
        assert status == 200, ran
        return ran  # type: ignore[no-any-return]


async def test_run_code_with_a_models_token_calls_only_its_models_and_agents_and_counts_its_spend(
        people: Any, fake_openai: FakeLLMServer) -> None:
    alice, = await people("alice", **fake_openai.env)
    agent = {"name": "alicepriv", "description": "d", "code": calls_model("gpt-4o-mini"),
             "friendlyName": "alicepriv", "inputSchema": {"inputText": "string"},
             "outputSchema": {"outputText": "string"}}
    status, priv = await call(alice, "POST", "/agents", agent)
    assert status == 201
    assert (await call(alice, "POST", f"/agents/{priv['_id']}/deploy"))[0] == 201
    only_4o = await new_token(alice, models=["openai/gpt-4o"], maxSpend=1.0)
    with_agent = await new_token(alice, models=["openai/gpt-4o", "agent/alicepriv"], maxSpend=1.0)
    async with aiohttp.ClientSession() as session:
        script = Script(alice, session, only_4o)
        ran = await script.run_code(calls_model("gpt-4o-mini"))
        assert ran["result"] is None and "403" in ran["error"] and "'openai/gpt-4o-mini'" in ran["error"], ran
        ran = await script.run_code(CALLS_ALICEPRIV, [priv["_id"]])
        assert ran["result"] is None and "'agent/alicepriv'" in ran["error"], ran
        assert (await script("POST", "/rest/alicepriv", {"inputText": "x"}))[0] == 403  # the same rule as /rest
        assert fake_openai.requests == []  # nothing refused reached the vendor
        ran = await script.run_code(calls_model("gpt-4o"))
        assert ran["result"] == {"outputText": "Hello from the fake model"}, ran
        assert await spend_of(alice, only_4o) == pytest.approx(GPT_4O_CALL)

        # A token that may call the agent: the agent's own model is its choice, in run-code as through /rest,
        # and what it spends counts in the token's spend.
        script = Script(alice, session, with_agent)
        ran = await script.run_code(CALLS_ALICEPRIV, [priv["_id"]])
        assert ran["result"] == {"outputText": "Hello from the fake model"}, ran
        assert (await script("POST", "/rest/alicepriv", {"inputText": "x"})) == (
            200, {"outputText": "Hello from the fake model"})
        assert await spend_of(alice, with_agent) == pytest.approx(2 * GPT_4O_MINI_CALL)


async def chat_with(script: Script, model: str, *, provider: str = "openai") -> tuple[int, Any]:
    return await script("POST", "/chat", {"messages": [{"role": "user", "content": "hi"}], "provider": provider,
                                          "model": model})


async def test_chat_tickets_keep_a_tokens_models_and_max_spend(people: Any, fake_openai: FakeLLMServer) -> None:
    alice, = await people("alice", **fake_openai.env)
    token = await new_token(alice, models=["openai/gpt-4o"], maxSpend=1.0)
    async with aiohttp.ClientSession() as session:
        script = Script(alice, session, token)
        status, refused = await chat_with(script, "gpt-3.5-turbo")
        assert status == 403 and "'openai/gpt-3.5-turbo'" in refused["detail"], refused
        status, refused = await chat_with(script, "alicepriv", provider="gofannon")
        assert status == 403 and "'agent/alicepriv'" in refused["detail"], refused
        fake_openai.script(Reply("pricey", input_tokens=400_000, output_tokens=0))  # $1.00: all of the budget
        status, posted = await chat_with(script, "gpt-4o")
        assert status == 200, posted
        assert (await wait_ticket(alice, posted["ticket_id"]))["status"] == "completed"
        assert await spend_of(alice, token) == pytest.approx(1.0)
        status, posted = await chat_with(script, "gpt-4o")
        done = await wait_ticket(alice, posted["ticket_id"])
        assert done["status"] == "failed" and done["error"].startswith("429: This API token's budget is used up")
    assert len(fake_openai.requests) == 1


async def test_a_chat_answered_by_a_worker_process_counts_in_the_tokens_spend(
        serve: Any, rq_env: dict[str, str], workers: Workers, fake_llm: FakeLLMServer) -> None:  # noqa: F811
    workers.start()
    alice = await serve(**rq_env)
    await alice.login("alice")
    token = await new_token(alice, maxSpend=1.0)
    async with aiohttp.ClientSession() as session:
        status, posted = await chat_with(Script(alice, session, token), "gpt-4o")
    assert status == 200, posted
    done = await wait_ticket(alice, posted["ticket_id"], attempts=1500)
    assert done["status"] == "completed", done
    assert await spend_of(alice, token) == pytest.approx(GPT_4O_CALL)


async def test_code_and_demo_generation_keep_a_tokens_models_and_max_spend(
        people: Any, fake_openai: FakeLLMServer) -> None:
    alice, = await people("alice", **fake_openai.env)
    other = await new_token(alice, models=["openai/gpt-4o"])
    composer = await new_token(alice, models=["openai/gpt-5-mini"], maxSpend=1.0)
    demo = {"userPrompt": "A page", "selectedApis": [], "modelConfig": request_body()["modelConfig"]}
    fake_openai.respond(lambda req: Reply(json.dumps({"html": "<p>", "css": "", "js": ""}))
                        if "response_format" in json.dumps(req.json) and "html" in json.dumps(req.json)
                        else answer(BODY)(req))
    async with aiohttp.ClientSession() as session:
        script = Script(alice, session, other)
        for path, body in (("/agents/generate-code", request_body()), ("/demos/generate-code", demo)):
            status, refused = await script("POST", path, body)
            assert status == 403 and "'openai/gpt-5-mini'" in refused["detail"], (path, refused)
        assert fake_openai.requests == []
        script = Script(alice, session, composer)
        for path, body in (("/agents/generate-code", request_body()), ("/demos/generate-code", demo)):
            status, answered = await script("POST", path, body)
            assert status == 200, (path, answered)
    status, usage = await call(alice, "GET", "/users/me/usage")
    costs = [entry["responseCost"] for entry in usage["usage"]]
    assert len(costs) == 3 and sum(costs) > 0  # two calls generate code, one the demo
    assert await spend_of(alice, composer) == pytest.approx(sum(costs))


async def test_a_models_token_cannot_change_the_agents_it_may_call_nor_anything_else(
        people: Any, fake_openai: FakeLLMServer) -> None:
    """A token limited to ``agent/alicepriv`` could otherwise rewrite that agent's code (or make another agent
    and deploy it under an allowed name) to call any model: with ``models`` a token only calls and reads."""
    alice, = await people("alice", **fake_openai.env)
    agent = {"name": "alicepriv", "description": "d", "code": calls_model("gpt-4o-mini"), "friendlyName": "alicepriv"}
    status, priv = await call(alice, "POST", "/agents", agent)
    assert (await call(alice, "POST", f"/agents/{priv['_id']}/deploy"))[0] == 201
    token = await new_token(alice, models=["agent/*"])
    async with aiohttp.ClientSession() as session:
        script = Script(alice, session, token)
        for method, path, body in (
                ("PUT", f"/agents/{priv['_id']}", {**agent, "code": calls_model("gpt-4o")}),
                ("POST", "/agents", {**agent, "name": "other", "friendlyName": "other"}),
                ("DELETE", f"/agents/{priv['_id']}/undeploy", None),
                ("DELETE", f"/agents/{priv['_id']}", None),
                ("PUT", "/users/me/api-keys", {"provider": "openai", "api_key": "sk-mine-0123456789"}),
                ("POST", "/workspaces", {"displayName": "Mine"})):
            status, answer = await script(method, path, body)
            assert status == 403 and "limited to models" in answer["detail"], (method, path, status, answer)
        # Reading and calling still work.
        assert (await script("GET", "/agents"))[0] == 200
        assert (await script("POST", "/rest/alicepriv", {"inputText": "x"}))[0] == 200
        # The code it runs itself reads the data store but does not write it.
        ran = await script.run_code("async def run(input_dict, tools):\n"
                                    "    data_store.set('k', 'v')\n"
                                    "    return {'outputText': 'wrote'}\n")
        assert ran["result"] is None and "limited to models" in ran["error"], ran
        ran = await script.run_code("async def run(input_dict, tools):\n"
                                    "    return {'outputText': str(data_store.get('k'))}\n")
        assert ran["result"] == {"outputText": "None"}, ran
    status, stored = await call(alice, "GET", f"/agents/{priv['_id']}")
    assert stored["code"] == agent["code"]  # unchanged
    assert (await call(alice, "GET", "/data-store/namespaces/default/records/k"))[0] == 404
