"""``/v1``: the OpenAI-compatible API, driven by the official ``openai`` SDK (sync and async) against the
real kernel, whose providers talk to the fake vendor server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import Client
from fakes import FakeLLMServer, Reply

MODEL = "fake/chat-1"  # an openai_compat provider of the test's catalog, priced
PRICE_IN, PRICE_OUT = 0.001, 0.002
USER_HI = [{"role": "user", "content": "hi"}]


def fake_catalog(tmp_path: Path, fake: FakeLLMServer) -> str:
    """A config dir whose catalog adds the provider ``fake`` (OpenAI-compatible, at the fake server)."""
    conf = tmp_path / "conf"
    (conf / "catalog").mkdir(parents=True, exist_ok=True)
    (conf / "catalog" / "fake.json").write_text(json.dumps({
        "slug": "fake", "plugin": "openai_compat", "base_url": fake.openai_base_url,
        "api_key_env_var": "FAKE_API_KEY",
        "models": {
            "chat-1": {"max_output_tokens": 100,
                       "pricing": {"input_cost_per_token": PRICE_IN, "output_cost_per_token": PRICE_OUT}},
            "free": {},
        },
    }))
    return str(conf)


async def make_token(client: Client, **scope: Any) -> str:
    async with client.post("/users/me/tokens", json={"name": "sdk", **scope}) as r:
        assert r.status == 201, await r.text()
        return (await r.json())["token"]  # type: ignore[no-any-return]


class Gateway:
    def __init__(self, client: Client, token: str, fake: FakeLLMServer) -> None:
        self.client, self.token, self.fake = client, token, fake

    @property
    def base_url(self) -> str:
        return self.client.url("/v1")

    def sdk(self, token: str | None = None, **kw: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=token or self.token, max_retries=0, **kw)

    def sync_sdk(self, token: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=token or self.token, max_retries=0)

    async def user(self) -> dict[str, Any]:
        async with self.client.get("/users/me") as r:
            assert r.status == 200
            return await r.json()  # type: ignore[no-any-return]

    async def usage(self) -> list[dict[str, Any]]:
        """The caller's full usage history."""
        async with self.client.get("/users/me/usage?limit=1000") as r:
            assert r.status == 200
            return (await r.json())["usage"]  # type: ignore[no-any-return]


async def start_gateway(serve: Any, fake: FakeLLMServer, tmp_path: Path, **env: str) -> Gateway:
    """The kernel with the test catalog (``fake/*``) and every provider at the fake vendor; alice's token."""
    env = {"FAKE_API_KEY": "sk-fake-test-key", "GOFANNON_STORAGE": "memory", **env}
    client = await serve(**fake.env, GOFANNON_CONFIG_DIR=fake_catalog(tmp_path, fake), **env)
    await client.login("alice")
    return Gateway(client, await make_token(client), fake)


@pytest.fixture
async def gw(serve: Any, fake_llm: FakeLLMServer, tmp_path: Path) -> Gateway:
    return await start_gateway(serve, fake_llm, tmp_path)


async def test_models_lists_catalog_models_with_a_key_and_answers_one(gw: Gateway) -> None:
    sdk = gw.sdk()
    ids = [m.id async for m in sdk.models.list()]
    assert MODEL in ids and "openai/gpt-4o" in ids
    one = await sdk.models.retrieve(MODEL)
    assert (one.id, one.object, one.owned_by) == (MODEL, "model", "fake")
    with pytest.raises(openai.NotFoundError) as err:
        await sdk.models.retrieve("fake/no-such-model")
    assert err.value.code == "model_not_found"


async def test_models_hides_providers_without_a_key(serve: Any, fake_llm: FakeLLMServer, tmp_path: Path) -> None:
    client = await serve(GOFANNON_CONFIG_DIR=fake_catalog(tmp_path, fake_llm), GOFANNON_STORAGE="memory")
    await client.login("alice")
    sdk = openai.AsyncOpenAI(base_url=client.url("/v1"), api_key=await make_token(client), max_retries=0)
    ids = [m.id async for m in sdk.models.list()]
    assert not any(i.startswith(("fake/", "openai/")) for i in ids)
    assert "ollama/llama2" in ids  # needs no key


async def test_chat_completion_through_the_async_sdk_is_charged_and_recorded(gw: Gateway) -> None:
    gw.fake.script(Reply("Hi there", input_tokens=12, output_tokens=3))
    before = (await gw.user())["usageInfo"]["spendRemaining"]
    got = await gw.sdk().chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
        temperature=0.2, max_completion_tokens=50, seed=7, stop=["END"], user="u-1", logit_bias={"1": 1})
    assert got.object == "chat.completion" and got.id.startswith("chatcmpl-") and got.model == MODEL
    assert got.choices[0].message.content == "Hi there" and got.choices[0].finish_reason == "stop"
    assert (got.usage.prompt_tokens, got.usage.completion_tokens, got.usage.total_tokens) == (12, 3, 15)
    sent = gw.fake.requests[-1].json
    assert sent["model"] == "chat-1" and sent["messages"][0] == {"role": "system", "content": "be brief"}
    assert (sent["temperature"], sent["max_tokens"], sent["seed"], sent["stop"], sent["user"]) == (0.2, 50, 7, ["END"], "u-1")
    assert "logit_bias" not in sent  # unknown to the gateway: ignored
    cost = 12 * PRICE_IN + 3 * PRICE_OUT
    after = (await gw.user())["usageInfo"]["spendRemaining"]
    assert after == pytest.approx(before - cost)
    entry = (await gw.usage())[-1]
    assert entry["responseCost"] == pytest.approx(cost)
    assert entry["metadata"]["provider"] == "fake" and entry["metadata"]["model"] == "chat-1"


async def test_the_sync_sdk_completes_and_streams(gw: Gateway) -> None:
    gw.fake.script(Reply("sync answer"), Reply("streamed sync answer"))
    sdk = gw.sync_sdk()

    def use() -> tuple[str | None, str]:  # a blocking client: in a thread, while the server runs on this loop
        got = sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        pieces = [c.choices[0].delta.content or "" for c in
                  sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True)
                  if c.choices]
        return got.choices[0].message.content, "".join(pieces)

    assert await asyncio.to_thread(use) == ("sync answer", "streamed sync answer")


async def test_a_stream_has_the_role_first_the_finish_reason_last_then_usage_and_is_charged_once(gw: Gateway) -> None:
    gw.fake.script(Reply("A longer answer, streamed in pieces", input_tokens=20, output_tokens=9))
    before = len(await gw.usage())
    stream = await gw.sdk().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "go"}], stream=True,
        stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert all(c.object == "chat.completion.chunk" and c.model == MODEL for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "A longer answer, streamed in pieces"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # really in pieces
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"] and chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 29
    history = await gw.usage()
    assert len(history) == before + 1
    assert history[-1]["responseCost"] == pytest.approx(20 * PRICE_IN + 9 * PRICE_OUT)
    assert history[-1]["metadata"]["inputTokens"] == 20


VENDOR_MODELS = ["openai/gpt-4o", "anthropic/claude-sonnet-4-5-20250929", "gemini/gemini-2.5-flash",
                 "bedrock/us.anthropic.claude-opus-4-6-v1"]


@pytest.mark.parametrize("model", VENDOR_MODELS)
@pytest.mark.parametrize("stream", [False, True])
async def test_every_vendor_answers_through_v1(gw: Gateway, model: str, stream: bool) -> None:
    """The bundled provider plugins behind /v1, each against the fake's protocol for its vendor."""
    gw.fake.script(Reply("Hello from the vendor", input_tokens=11, output_tokens=4))
    sdk = gw.sdk()
    if stream:
        chunks = [c async for c in await sdk.chat.completions.create(
            model=model, messages=USER_HI, stream=True, stream_options={"include_usage": True})]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage = chunks[-1].usage
    else:
        got = await sdk.chat.completions.create(model=model, messages=USER_HI)
        text, usage = got.choices[0].message.content, got.usage
    assert text == "Hello from the vendor"
    assert (usage.prompt_tokens, usage.completion_tokens) == (11, 4)
    assert (await gw.usage())[-1]["metadata"]["provider"] == model.split("/")[0]


@pytest.mark.parametrize("model", [MODEL, *VENDOR_MODELS])
@pytest.mark.parametrize("stream", [False, True])
async def test_tools_round_trip(gw: Gateway, stream: bool, model: str) -> None:
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    gw.fake.script(Reply("", tool_calls=[{"id": "call_w1", "name": "get_weather", "arguments": {"city": "Oslo"}}]),
                   Reply("It is sunny in Oslo."))
    sdk = gw.sdk()
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Oslo?"}]
    if stream:
        calls: dict[int, dict[str, Any]] = {}
        finish = None
        async for chunk in await sdk.chat.completions.create(model=model, messages=messages, tools=tools,
                                                             tool_choice="auto", stream=True):
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                for tc in choice.delta.tool_calls or []:
                    slot = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                    slot["id"] = tc.id or slot["id"]
                    slot["name"] += (tc.function.name or "") if tc.function else ""
                    slot["arguments"] += (tc.function.arguments or "") if tc.function else ""
        assert finish == "tool_calls"
        call = calls[0]
    else:
        first = await sdk.chat.completions.create(model=model, messages=messages, tools=tools, tool_choice="auto")
        assert first.choices[0].finish_reason == "tool_calls"
        assert first.choices[0].message.content is None
        tc = first.choices[0].message.tool_calls[0]
        call = {"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments}
    assert call["id"] and call["name"] == "get_weather"  # Gemini has no call ids: the plugin makes one
    assert json.loads(call["arguments"]) == {"city": "Oslo"}
    if model == MODEL:  # OpenAI's own wire: the tools pass through as sent
        sent = gw.fake.requests[-1].json
        assert sent["tools"] == tools and sent["tool_choice"] == "auto"
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}]},
        {"role": "tool", "tool_call_id": call["id"], "content": '{"sky": "sunny"}'},
    ]
    answer = await sdk.chat.completions.create(model=model, messages=messages, tools=tools)
    assert answer.choices[0].message.content == "It is sunny in Oslo."
    upstream = json.dumps([r.json for r in gw.fake.requests if r.method == "POST"][-1])
    assert "get_weather" in upstream and "sunny" in upstream  # the call and its result reached the vendor


async def test_the_v1_routes_are_in_the_openapi_document(gw: Gateway) -> None:
    async with gw.client.get("/openapi.json") as r:
        paths = (await r.json())["paths"]
    assert "get" in paths["/v1/models"] and "get" in paths["/v1/models/{model_id}"]
    chat = paths["/v1/chat/completions"]["post"]
    assert chat["requestBody"]
    # errors are documented in OpenAI's shape, as they are answered (a bad body is a 400, not a 422)
    assert "422" not in chat["responses"]
    for status in ("400", "401", "404", "429"):
        assert chat["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/OpenAIError"}
    async with gw.client.post("/v1/chat/completions", json={"model": MODEL}) as r:
        assert r.status == 400 and set((await r.json())["error"]) == {"message", "type", "param", "code"}


async def test_a_users_own_provider_key_makes_its_models_usable(serve: Any, fake_llm: FakeLLMServer) -> None:
    env = {k: v for k, v in fake_llm.env.items() if k != "OPENAI_API_KEY"}  # no operator key for openai
    client = await serve(**env, GOFANNON_STORAGE="memory")
    await client.login("alice")
    sdk = openai.AsyncOpenAI(base_url=client.url("/v1"), api_key=await make_token(client), max_retries=0)
    assert not [m async for m in sdk.models.list() if m.id.startswith("openai/")]
    async with client.put("/users/me/api-keys", json={"provider": "openai", "api_key": "sk-alices-own-key"}) as r:
        assert r.status == 200
    assert "openai/gpt-4o" in [m.id async for m in sdk.models.list()]
    got = await sdk.chat.completions.create(model="openai/gpt-4o", messages=USER_HI)
    assert got.choices[0].message.content == "Hello from the fake model"
    assert fake_llm.requests[-1].api_key == "sk-alices-own-key"


async def test_the_session_cookie_works_too(gw: Gateway) -> None:
    async with gw.client.post("/v1/chat/completions", json={"model": MODEL, "messages": USER_HI}) as r:
        assert r.status == 200
        assert (await r.json())["choices"][0]["message"]["content"] == "Hello from the fake model"


async def test_a_call_in_a_shared_workspace_is_charged_to_it_and_stops_when_its_budget_is_gone(gw: Gateway) -> None:
    async with gw.client.post("/workspaces", json={"displayName": "Team", "description": "d"}) as r:
        ws = (await r.json())["workspaceId"]
    async with gw.client.put(f"/workspaces/{ws}/budget", json={"monthlyAllowance": 10}) as r:
        assert r.status == 200, await r.text()
    sdk = gw.sdk(default_headers={"X-Gofannon-Workspace": ws})
    gw.fake.script(Reply("team answer", input_tokens=100, output_tokens=50))
    got = await sdk.chat.completions.create(model=MODEL, messages=USER_HI)
    assert got.choices[0].message.content == "team answer"
    async with gw.client.get(f"/workspaces/{ws}/usage") as r:
        usage = await r.json()
    assert usage["spendRemaining"] == pytest.approx(10 - (100 * PRICE_IN + 50 * PRICE_OUT))
    async with gw.client.put(f"/workspaces/{ws}/budget", json={"monthlyAllowance": 0}) as r:
        assert r.status == 200, await r.text()
    with pytest.raises(openai.RateLimitError) as err:
        await sdk.chat.completions.create(model=MODEL, messages=USER_HI)
    assert err.value.code == "insufficient_quota"


async def ask(sdk: openai.AsyncOpenAI, *, stream: bool) -> str:
    """One call with the SDK, streamed or not; the answer's text."""
    hi = [{"role": "user", "content": "hi"}]
    if not stream:
        return (await sdk.chat.completions.create(model=MODEL, messages=hi)).choices[0].message.content or ""
    chunks = await sdk.chat.completions.create(model=MODEL, messages=hi, stream=True)
    return "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])


async def test_sequential_calls_reuse_one_connection_to_the_vendor(gw: Gateway) -> None:
    # A streamed answer's connection goes back to the pool once read to its end, as a plain answer's does:
    # no new TCP (and, with a real vendor, TLS) handshake per call.
    sdk = gw.sdk()
    gw.fake.done_gap = 0.01  # the body's end arrives just after [DONE], as it may from a real vendor
    before = len(gw.fake.requests)
    for i in range(4):
        await asyncio.sleep(0.2)  # a client between two calls
        assert await ask(sdk, stream=bool(i % 2))
    peers = {r.peer for r in gw.fake.requests[before:] if r.path.endswith("/chat/completions")}
    assert len(peers) == 1 and "" not in peers, peers
