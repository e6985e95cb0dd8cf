"""Workspace budgets: a call made in a workspace is charged to the caller and to the workspace, either
allowance exhausted stops it (402, a failed chat ticket), usage shows the month's spend per member and per
model, a new month starts the count again, and concurrent charges from many members lose nothing."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import pytest
from fakes import FakeLLMServer, Reply
from test_chat_tickets import wait_ticket

from gofannon.auth import Identity
from gofannon.kernel import Kernel
from gofannon.services import users, workspaces
from gofannon.web.keys import KERNEL
from workspaces_helpers import call, make_workspace, people  # noqa: F401 - people is a fixture

H = "X-Gofannon-Workspace"
# gpt-4o: $2.50 per million input tokens, $10 per million output tokens (config/catalog/prices.json)
ONE_MILLION_IN = Reply("ok", input_tokens=1_000_000, output_tokens=0)  # $2.50


async def chat(client: Any, workspace: str | None = None) -> dict[str, Any]:
    body = {"messages": [{"role": "user", "content": "hi"}], "provider": "openai", "model": "gpt-4o"}
    async with client.post("/chat", json=body, headers={H: workspace} if workspace else {}) as r:
        assert r.status == 200, await r.text()
        posted = await r.json()
    return await wait_ticket(client, posted["ticket_id"])


async def test_a_chat_in_a_workspace_is_charged_to_the_caller_and_the_workspace(
        people: Any, fake_openai: FakeLLMServer) -> None:
    alice, bob = await people("alice", "bob", **fake_openai.env)
    ws = await make_workspace(alice)
    await call(alice, "PUT", f"/workspaces/{ws}/members/dev_stub:bob", {"role": "member"})
    status, budget = await call(alice, "PUT", f"/workspaces/{ws}/budget", {"monthlyAllowance": 10})
    assert status == 200 and budget["monthlyAllowance"] == 10 and budget["spendRemaining"] == 10
    fake_openai.script(ONE_MILLION_IN, ONE_MILLION_IN, ONE_MILLION_IN)
    assert (await chat(alice, ws))["status"] == "completed"
    assert (await chat(bob, ws))["status"] == "completed"
    assert (await chat(bob))["status"] == "completed"  # personal: the workspace is not charged
    status, usage = await call(bob, "GET", f"/workspaces/{ws}/usage")
    assert status == 200
    assert usage["monthlyAllowance"] == 10 and usage["spendRemaining"] == pytest.approx(5.0)
    assert usage["usage"] == pytest.approx(5.0)
    assert usage["spendByMember"] == {"dev_stub:alice": pytest.approx(2.5), "dev_stub:bob": pytest.approx(2.5)}
    assert usage["spendByModel"] == {"openai/gpt-4o": pytest.approx(5.0)}
    status, me = await call(bob, "GET", "/users/me")
    assert me["usageInfo"]["spendRemaining"] == pytest.approx(95.0)  # both of bob's calls
    assert [e["metadata"].get("workspaceId") for e in me["usageInfo"]["usage"]] == [ws, None]


async def test_an_exhausted_workspace_allowance_stops_calls_in_it_but_not_elsewhere(
        people: Any, fake_openai: FakeLLMServer) -> None:
    alice, = await people("alice", **fake_openai.env)
    ws = await make_workspace(alice)
    await call(alice, "PUT", f"/workspaces/{ws}/budget", {"monthlyAllowance": 2})
    fake_openai.script(ONE_MILLION_IN, ONE_MILLION_IN)
    assert (await chat(alice, ws))["status"] == "completed"  # allowed while some is left; floors at 0
    refused = await chat(alice, ws)
    assert refused["status"] == "failed"
    assert refused["error"] == "402: Insufficient workspace allowance to complete request"
    assert len(fake_openai.requests) == 1  # the refused call never reached the vendor
    assert (await chat(alice))["status"] == "completed"  # the personal allowance still has room
    status, usage = await call(alice, "GET", f"/workspaces/{ws}/usage")
    assert usage["spendRemaining"] == 0 and usage["usage"] == pytest.approx(2.5)
    # Raising the allowance lets calls through again; the month's spend still counts.
    status, budget = await call(alice, "PUT", f"/workspaces/{ws}/budget", {"monthlyAllowance": 5})
    assert budget["spendRemaining"] == pytest.approx(2.5)
    # Removing the limit: spend is still counted.
    status, budget = await call(alice, "PUT", f"/workspaces/{ws}/budget", {"monthlyAllowance": None})
    assert budget["monthlyAllowance"] is None and budget["spendRemaining"] is None
    assert (await chat(alice, ws))["status"] == "completed"


async def test_an_exhausted_personal_allowance_stops_calls_in_a_workspace_too(
        people: Any, fake_openai: FakeLLMServer) -> None:
    alice, admin = await people("alice", "admin", **fake_openai.env)
    ws = await make_workspace(alice)
    await call(alice, "PUT", f"/workspaces/{ws}/budget", {"monthlyAllowance": 50})
    await call(alice, "GET", "/users/me")
    async with admin.put("/admin/users/dev_stub:alice", json={"spendRemaining": 0}) as r:
        assert r.status == 200, await r.text()
    refused = await chat(alice, ws)
    assert refused["status"] == "failed" and refused["error"].startswith("402: Insufficient spend allowance")
    status, usage = await call(alice, "GET", f"/workspaces/{ws}/usage")
    assert usage["spendRemaining"] == 50 and usage["usage"] == 0


async def test_who_may_set_a_budget(people: Any) -> None:
    alice, bob, admin = await people("alice", "bob", "admin")
    ws = await make_workspace(alice)
    await call(alice, "PUT", f"/workspaces/{ws}/members/dev_stub:bob", {"role": "member"})
    assert (await call(bob, "PUT", f"/workspaces/{ws}/budget", {"monthlyAllowance": 1}))[0] == 403
    assert (await call(admin, "PUT", f"/workspaces/{ws}/budget", {"monthlyAllowance": 7}))[1]["monthlyAllowance"] == 7
    assert (await call(alice, "PUT", "/workspaces/project:demo/budget", {"monthlyAllowance": 3}))[0] == 200
    assert (await call(bob, "PUT", "/workspaces/project:demo/budget", {"monthlyAllowance": 3}))[0] == 403
    status, answer = await call(alice, "PUT", "/workspaces/personal:dev_stub:alice/budget", {"monthlyAllowance": 3})
    assert status == 409 and "personal" in answer["detail"]
    status, usage = await call(bob, "GET", "/workspaces/project:demo/usage")
    assert usage["monthlyAllowance"] == 3 and usage["spendByMember"] == {}


async def test_a_new_month_starts_the_count_again(people: Any) -> None:
    alice, = await people("alice")
    ws = await make_workspace(alice)
    await call(alice, "PUT", f"/workspaces/{ws}/budget", {"monthlyAllowance": 4})
    kernel = alice.server.app[KERNEL]
    await workspaces.charge(kernel, ws, "dev_stub:alice", 4.0, "openai/gpt-4o")
    with pytest.raises(Exception, match="Insufficient workspace allowance"):
        await workspaces.require_allowance(kernel, ws)
    doc = await kernel.store.get(workspaces.BUDGETS, ws)
    doc["allowanceResetDate"] = 1.0  # as if the month had ended
    await kernel.store.put(workspaces.BUDGETS, ws, doc)
    status, usage = await call(alice, "GET", f"/workspaces/{ws}/usage")
    assert usage["spendRemaining"] == 4 and usage["usage"] == 0 and usage["spendByMember"] == {}
    assert usage["allowanceResetDate"] > usage["periodStart"]
    await workspaces.require_allowance(kernel, ws)


@pytest.fixture(params=["sqlite", "redis"])
async def kernel(request: Any, make_settings: Callable[..., Any]) -> Any:
    env = {"GOFANNON_STORAGE": request.param}
    if request.param == "redis":
        env["REDIS_URL"] = request.getfixturevalue("redis_url")
    opened = Kernel(make_settings(**env))
    await opened.open()
    yield opened
    await opened.close()


async def test_200_concurrent_charges_from_many_members_lose_nothing(kernel: Kernel) -> None:
    owner = Identity(uid="dev_stub:alice", provider_type="dev_stub", display_name="Alice")
    created = await workspaces.create(kernel, owner, "Team", None)
    ws = created["workspaceId"]
    await workspaces.set_budget(kernel, owner, ws, 100.0)
    members = [f"dev_stub:m{i}" for i in range(20)]
    await asyncio.gather(*[workspaces.charge(kernel, ws, members[i % 20], 0.25, f"p/m{i % 3}") for i in range(200)])
    usage = await workspaces.usage(kernel, owner, ws)
    assert usage["spendRemaining"] == pytest.approx(50.0) and usage["usage"] == pytest.approx(50.0)
    assert usage["spendByMember"] == {m: pytest.approx(2.5) for m in members}
    assert sum(usage["spendByModel"].values()) == pytest.approx(50.0)
    # Users are charged alongside: each of their documents loses nothing either.
    await asyncio.gather(*[users.charge(kernel, members[i % 20], 0.25, {"workspaceId": ws}) for i in range(200)])
    assert (await users.get_or_create_user(kernel, members[0]))["usageInfo"]["spendRemaining"] == pytest.approx(97.5)


LLM_AGENT = (
    "from services.llm_service import call_llm\n"
    "async def run(input_dict, tools):\n"
    "    content, _ = await call_llm(provider='openai', model='gpt-4o',\n"
    "                                messages=[{'role': 'user', 'content': 'hi'}],\n"
    "                                workspace_id=input_dict.get('pay'))\n"
    "    return {'outputText': content}\n"
)


async def team_with_llm_agent(people: Any, fake: FakeLLMServer, name: str) -> tuple[Any, Any, str, dict[str, Any],
                                                                                   dict[str, Any]]:
    """alice's workspace with bob as a member and an agent of it (``name``) that calls gpt-4o:
    (alice, bob, workspace id, the agent's body, the stored agent)."""
    alice, bob = await people("alice", "bob", **fake.env)
    ws = await make_workspace(alice)
    await call(alice, "PUT", f"/workspaces/{ws}/members/dev_stub:bob", {"role": "member"})
    agent = {"name": name, "description": "d", "code": LLM_AGENT, "friendlyName": name,
             "inputSchema": {"inputText": "string"}, "outputSchema": {"outputText": "string"}}
    status, doc = await call(alice, "POST", "/agents", agent, headers={H: ws})
    assert status == 201
    return alice, bob, ws, agent, doc


async def test_runs_of_a_workspace_agent_charge_the_workspace_and_agent_code_cannot_pick_who_pays(
        people: Any, fake_openai: FakeLLMServer) -> None:
    alice, bob, ws, _agent, doc = await team_with_llm_agent(people, fake_openai, "asker")
    victim = await make_workspace(bob, "Victim")
    assert (await call(alice, "POST", f"/agents/{doc['_id']}/deploy", headers={H: ws}))[0] == 201
    fake_openai.script(ONE_MILLION_IN, ONE_MILLION_IN, ONE_MILLION_IN)
    status, answer = await call(bob, "POST", "/rest/asker", {"inputText": "x", "pay": victim})
    assert (status, answer) == (200, {"outputText": "ok"})
    # run-code in the active workspace is charged to it as well
    status, ran = await call(bob, "POST", "/agents/run-code", {"code": LLM_AGENT, "inputDict": {}, "tools": {}},
                            headers={H: ws})
    assert status == 200 and ran["error"] is None, ran
    status, usage = await call(alice, "GET", f"/workspaces/{ws}/usage")
    assert usage["spendByMember"] == {"dev_stub:bob": pytest.approx(5.0)}
    status, untouched = await call(bob, "GET", f"/workspaces/{victim}/usage")
    assert untouched["usage"] == 0  # the code named it; the platform did not charge it
    status, me = await call(bob, "GET", "/users/me")
    assert me["usageInfo"]["spendRemaining"] == pytest.approx(95.0)


CALLS_TEAM = (
    "async def run(input_dict, tools):\n"
    "    r = await gofannon_client.call(agent_name='llmteam', input_dict={'inputText': 'x'})\n"
    "    return r\n"
)


async def test_a_workspace_agent_called_from_a_personal_run_needs_and_charges_the_workspace(
        people: Any, fake_openai: FakeLLMServer) -> None:
    alice, bob, ws, agent, team = await team_with_llm_agent(people, fake_openai, "llmteam")
    await call(alice, "PUT", f"/workspaces/{ws}/budget", {"monthlyAllowance": 2})
    run_team = {"code": CALLS_TEAM, "inputDict": {}, "tools": {}, "gofannonAgents": [team["_id"]]}
    fake_openai.script(ONE_MILLION_IN, ONE_MILLION_IN, ONE_MILLION_IN)
    # With room left, bob's personal run of the workspace's agent is charged to the workspace as well.
    status, ran = await call(bob, "POST", "/agents/run-code", run_team)
    assert status == 200 and ran["result"] == {"outputText": "ok"}, ran
    status, usage = await call(alice, "GET", f"/workspaces/{ws}/usage")
    assert usage["spendByMember"] == {"dev_stub:bob": pytest.approx(2.5)} and usage["spendRemaining"] == 0
    status, me = await call(bob, "GET", "/users/me")
    assert [e["metadata"].get("workspaceId") for e in me["usageInfo"]["usage"]] == [ws]
    # Exhausted: refused before the vendor, from a personal run exactly as through /rest.
    status, ran = await call(bob, "POST", "/agents/run-code", run_team)
    assert status == 200 and ran["result"] is None
    assert "Insufficient workspace allowance" in ran["error"], ran
    assert len(fake_openai.requests) == 1
    status, me = await call(bob, "GET", "/users/me")
    assert me["usageInfo"]["spendRemaining"] == pytest.approx(97.5)
    # The reverse: a personal agent called from a run in the workspace is charged to the workspace (and refused
    # now that it is exhausted), not to the caller alone.
    status, mine = await call(bob, "POST", "/agents", {**agent, "name": "mine", "friendlyName": "mine"})
    assert status == 201
    status, ran = await call(bob, "POST", "/agents/run-code",
                             {**run_team, "code": CALLS_TEAM.replace("llmteam", "mine"),
                              "gofannonAgents": [mine["_id"]]}, headers={H: ws})
    assert status == 200 and "Insufficient workspace allowance" in (ran["error"] or ""), ran
    await call(alice, "PUT", f"/workspaces/{ws}/budget", {"monthlyAllowance": 5})
    status, ran = await call(bob, "POST", "/agents/run-code",
                             {**run_team, "code": CALLS_TEAM.replace("llmteam", "mine"),
                              "gofannonAgents": [mine["_id"]]}, headers={H: ws})
    assert status == 200 and ran["result"] == {"outputText": "ok"}, ran
    status, usage = await call(alice, "GET", f"/workspaces/{ws}/usage")
    assert usage["spendByMember"] == {"dev_stub:bob": pytest.approx(5.0)}
    assert len(fake_openai.requests) == 2
