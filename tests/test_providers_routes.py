"""GET /providers...: what the caller can use, never the server's internal configuration."""

from __future__ import annotations

from typing import Any

from fakes import FakeLLMServer


async def test_providers_list_only_those_with_a_key_or_needing_none(serve: Any) -> None:
    client = await serve(OPENAI_API_KEY="sk-server-key-000000000000")
    await client.login("alice")
    async with client.get("/providers") as r:
        assert r.status == 200
        providers = await r.json()
    assert "openai" in providers and "ollama" in providers
    assert "anthropic" not in providers and "gemini" not in providers
    assert "gpt-5.2" in providers["openai"]["models"]


async def test_providers_never_show_key_variables_or_base_urls(serve: Any) -> None:
    client = await serve(OPENAI_API_KEY="sk-server-key-000000000000", AWS_BEARER_TOKEN_BEDROCK="x")
    await client.login("alice")
    async with client.get("/providers") as r:
        text = await r.text()
    for leaked in ("api_key_env_var", "OPENAI_API_KEY", "base_url", "localhost:11434", "plugin", "sk-server"):
        assert leaked not in text


async def test_a_users_own_key_makes_its_provider_available(serve: Any) -> None:
    client = await serve()
    await client.login("alice")
    async with client.get("/providers/anthropic") as r:
        assert r.status == 404
        assert (await r.json())["detail"] == "Provider not found or not configured"
    async with client.put("/users/me/api-keys", json={"provider": "anthropic", "api_key": "sk-ant-user-key-123456"}) as r:
        assert r.status == 200, await r.text()
    async with client.get("/providers/anthropic/models") as r:
        assert r.status == 200
        models = await r.json()
    assert models[0] == "claude-opus-4-6"


async def test_model_config_and_unknown_model(serve: Any) -> None:
    client = await serve(OPENROUTER_API_KEY="or-key")
    await client.login("alice")
    async with client.get("/providers/ollama/models/llama2") as r:
        assert r.status == 200
        model = await r.json()
    assert model["parameters"]["temperature"]["max"] == 1.0
    async with client.get("/providers/openrouter/models/anthropic/claude-sonnet-4.5") as r:
        assert r.status == 200, await r.text()
    async with client.get("/providers/ollama/models/nope") as r:
        assert r.status == 404
        assert (await r.json())["detail"] == "Model not found"


async def test_providers_need_a_login(serve: Any) -> None:
    client = await serve()
    async with client.get("/providers") as r:
        assert r.status == 401


async def test_an_operator_adds_an_openai_compatible_provider_with_one_file(
        serve: Any, fake_llm: FakeLLMServer, tmp_path: Any) -> None:
    import json

    catalog = tmp_path / "conf" / "catalog"
    catalog.mkdir(parents=True)
    (catalog / "vllm.json").write_text(json.dumps({
        "slug": "vllm", "plugin": "openai_compat", "base_url": fake_llm.openai_base_url,
        "models": {"qwen3-8b": {"parameters": {"temperature": {"type": "float", "default": 0.7, "min": 0, "max": 2}}}},
    }))
    (catalog / "prices.json").write_text(json.dumps({"vllm/qwen3-8b": {
        "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}}))
    client = await serve(GOFANNON_CONFIG_DIR=str(tmp_path / "conf"))
    await client.login("alice")
    async with client.get("/providers/vllm/models") as r:
        assert await r.json() == ["qwen3-8b"]
    async with client.get("/providers") as r:
        assert "ollama" in await r.json()  # the bundled catalog stays
    from test_chat_tickets import wait_ticket

    body = {"messages": [{"role": "user", "content": "hi"}], "provider": "vllm", "model": "qwen3-8b",
            "parameters": {"temperature": 0.1}}
    async with client.post("/chat", json=body) as r:
        ticket = (await r.json())["ticket_id"]
    done = await wait_ticket(client, ticket)
    assert done["status"] == "completed", done
    assert fake_llm.requests[-1].json["model"] == "qwen3-8b"
    assert fake_llm.requests[-1].json["temperature"] == 0.1
