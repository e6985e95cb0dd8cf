"""Chatting with a deployed agent: provider ``gofannon``, model = the agent's public name (wire §3.1 A)."""

from __future__ import annotations

from typing import Any

from fakes import FakeLLMServer
from test_chat_tickets import wait_ticket

CODE = '''
async def run(input_dict, tools):
    return {"outputText": input_dict["inputText"].upper() + "!" + str(input_dict.get("tone", ""))}
'''


async def chat(client: Any, model: str, messages: list[dict[str, str]], **params: Any) -> dict[str, Any]:
    body = {"messages": messages, "provider": "gofannon", "model": model, "parameters": params}
    async with client.post("/chat", json=body) as r:
        assert r.status == 200, await r.text()
        ticket = (await r.json())["ticket_id"]
    return await wait_ticket(client, ticket, attempts=1500)


async def test_chat_with_a_deployed_agent_answers_its_output_text(serve: Any, fake_openai: FakeLLMServer) -> None:
    client = await serve(**fake_openai.env)
    await client.login("alice")
    agent = {"name": "shout", "description": "Shouts back", "code": CODE, "friendlyName": "shouter",
             "inputSchema": {"inputText": "string"}, "outputSchema": {"outputText": "string"}}
    async with client.post("/agents", json=agent) as r:
        assert r.status == 201, await r.text()
        agent_id = (await r.json())["_id"]
    async with client.post(f"/agents/{agent_id}/deploy") as r:
        assert r.status == 201, await r.text()
    async with client.get("/providers/gofannon/models/shouter") as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["id"] == agent_id
    msgs = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "hello"}]
    done = await chat(client, "shouter", msgs, tone="calm")
    assert done["status"] == "completed", done
    assert done["result"]["content"] == "HELLO!calm"
    assert done["result"]["model"] == "gofannon/shouter"
    assert done["result"]["thoughts"] == {"outputText": "HELLO!calm"}


async def test_chat_with_an_unknown_agent_fails_with_a_clear_error(serve: Any) -> None:
    client = await serve()
    await client.login("alice")
    done = await chat(client, "ghost", [{"role": "user", "content": "hi"}])
    assert done["status"] == "failed"
    assert done["error"] == "Could not find a deployed agent with name 'ghost'"
    done = await chat(client, "ghost", [{"role": "system", "content": "hi"}])
    assert done["error"] == "No user message found to run the agent with."


async def test_with_redis_a_worker_process_runs_the_deployed_agent_of_a_chat(serve: Any, rq_worker: Any) -> None:
    env = rq_worker()
    client = await serve(**env)
    await client.login("alice")
    agent = {"name": "shout", "description": "Shouts back", "code": CODE, "friendlyName": "shouter_rq"}
    async with client.post("/agents", json=agent) as r:
        agent_id = (await r.json())["_id"]
    async with client.post(f"/agents/{agent_id}/deploy") as r:
        assert r.status == 201, await r.text()
    done = await chat(client, "shouter_rq", [{"role": "user", "content": "hey"}])
    assert done["status"] == "completed", done
    assert done["result"]["content"] == "HEY!"
