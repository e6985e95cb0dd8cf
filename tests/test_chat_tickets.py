"""Chat over HTTP: POST /chat answers a persisted pending ticket, the job completes it against a fake
vendor server, and GET /chat/{id} shows the answer only to its owner."""

from __future__ import annotations

import asyncio
from typing import Any

from fakes import FakeLLMServer, Reply


async def wait_ticket(client: Any, ticket_id: str, attempts: int = 400) -> dict[str, Any]:
    for _ in range(attempts):
        async with client.get(f"/chat/{ticket_id}") as r:
            assert r.status == 200, await r.text()
            body = await r.json()
        if body["status"] in ("completed", "failed"):
            return body  # type: ignore[no-any-return]
        await asyncio.sleep(0.02)
    raise AssertionError(f"ticket {ticket_id} still {body['status']}")


async def post_chat(client: Any, text: str = "Hi there", **extra: Any) -> dict[str, Any]:
    body = {"messages": [{"role": "user", "content": text}], "provider": "openai", "model": "gpt-4o", **extra}
    async with client.post("/chat", json=body) as r:
        assert r.status == 200, await r.text()
        return await r.json()  # type: ignore[no-any-return]


async def test_chat_answers_pending_ticket_then_completes_with_the_models_answer(serve: Any, fake_openai: FakeLLMServer) -> None:
    client = await serve(**fake_openai.env)
    await client.login("alice")
    fake_openai.script(Reply("Hello Alice!", input_tokens=100, output_tokens=20))
    posted = await post_chat(client)
    assert posted["status"] == "pending"
    assert set(posted) == {"ticket_id", "status", "result", "error", "created_at", "updated_at", "completed_at"}
    assert posted["created_at"] is not None
    done = await wait_ticket(client, posted["ticket_id"])
    assert done["status"] == "completed", done
    assert done["result"] == {"content": "Hello Alice!", "thoughts": None, "model": "openai/gpt-4o"}
    assert done["completed_at"] is not None
    sent = fake_openai.requests[-1]
    assert sent.json["messages"] == [{"role": "user", "content": "Hi there"}]
    assert sent.api_key == "sk-fake-test-key"


async def test_chat_is_billed_from_token_usage_with_provider_and_tokens_in_the_usage_entry(
        serve: Any, fake_openai: FakeLLMServer) -> None:
    client = await serve(**fake_openai.env)
    await client.login("alice")
    fake_openai.script(Reply("priced", input_tokens=1_000_000, output_tokens=100_000))
    await wait_ticket(client, (await post_chat(client))["ticket_id"])
    async with client.get("/users/me") as r:
        user = await r.json()
    entry = user["usageInfo"]["usage"][-1]
    # gpt-4o: $2.50 per million input tokens, $10 per million output tokens (config/catalog/prices.json)
    assert abs(entry["responseCost"] - 3.5) < 1e-9
    assert entry["metadata"]["provider"] == "openai" and entry["metadata"]["model"] == "gpt-4o"
    assert entry["metadata"]["inputTokens"] == 1_000_000 and entry["metadata"]["outputTokens"] == 100_000
    assert abs(user["usageInfo"]["spendRemaining"] - 96.5) < 1e-9


async def test_another_users_ticket_is_not_found(serve: Any, fake_openai: FakeLLMServer) -> None:
    alice = await serve(**fake_openai.env)
    await alice.login("alice")
    ticket = (await post_chat(alice))["ticket_id"]
    bob = await serve(**fake_openai.env)
    await bob.login("bob")
    async with bob.get(f"/chat/{ticket}") as r:
        assert r.status == 404
        assert (await r.json())["detail"] == f"Document '{ticket}' not found in 'tickets'"


async def test_chat_with_exhausted_allowance_fails_with_402_text(serve: Any, fake_openai: FakeLLMServer) -> None:
    client = await serve(**fake_openai.env)
    await client.login("alice")
    async with client.put("/users/me/spend-remaining", json={"spendRemaining": 0.5}) as r:
        assert r.status == 200, await r.text()
    done = await wait_ticket(client, (await post_chat(client))["ticket_id"])
    assert done["status"] == "failed"
    assert done["error"] == "402: Insufficient spend allowance to complete request"
    assert fake_openai.requests == []


async def test_mutually_exclusive_parameters_are_a_422(serve: Any, fake_openai: FakeLLMServer) -> None:
    client = await serve(**fake_openai.env)
    await client.login("alice")
    body = {"messages": [{"role": "user", "content": "x"}], "provider": "anthropic",
            "model": "claude-opus-4-6", "parameters": {"temperature": 0.5, "top_p": 0.9}}
    async with client.post("/chat", json=body) as r:
        assert r.status == 422
        detail = (await r.json())["detail"]
    assert detail[0]["type"] == "value_error"
    assert "mutually exclusive" in detail[0]["msg"]


async def test_chat_rejects_list_content_and_unknown_roles(serve: Any) -> None:
    client = await serve()
    await client.login("alice")
    for msg in ({"role": "user", "content": ["a"]}, {"role": "robot", "content": "a"}):
        async with client.post("/chat", json={"messages": [msg]}) as r:
            assert r.status == 422, await r.text()


async def test_invalid_key_fails_the_ticket_with_the_clear_message(serve: Any, fake_openai: FakeLLMServer) -> None:
    client = await serve(**fake_openai.env)
    await client.login("alice")
    fake_openai.script(Reply(status=401, error="Incorrect API key provided: sk-fake***", error_code="invalid_api_key"))
    done = await wait_ticket(client, (await post_chat(client))["ticket_id"])
    assert done["status"] == "failed"
    assert done["error"] == ("400: Invalid API key for openai. Please check your environment variable API key "
                             "in your profile settings.")


async def test_built_in_tools_are_sent_as_the_catalogs_tool_config(serve: Any, fake_openai: FakeLLMServer) -> None:
    client = await serve(**fake_openai.env)
    await client.login("alice")
    fake_openai.script(Reply("searched", thoughts="I looked it up"))
    posted = await post_chat(client, model="gpt-5.2", builtInTools=["web_search", "nonexistent"])
    done = await wait_ticket(client, posted["ticket_id"])
    assert done["status"] == "completed", done
    assert done["result"]["content"] == "searched"
    assert done["result"]["thoughts"] == {"summary": ["I looked it up"]}
    sent = fake_openai.requests[0]
    assert sent.path == "/v1/responses"
    assert sent.json["tools"] == [{"type": "web_search", "search_context_size": "medium"}]
