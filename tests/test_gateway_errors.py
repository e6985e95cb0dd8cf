"""``/v1`` errors in OpenAI's shape, each raised by the official SDK as the exception class it maps to."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from fakes import FakeLLMServer, Reply
from test_gateway_openai import MODEL, Gateway, fake_catalog, gw, make_token, start_gateway  # noqa: F401 - gw is a fixture

USER = [{"role": "user", "content": "hi"}]


def shape(body: dict[str, Any]) -> dict[str, Any]:
    assert set(body) == {"error"} and set(body["error"]) >= {"message", "type", "param", "code"}, body
    return body["error"]  # type: ignore[no-any-return]


async def test_a_bad_or_missing_key_is_an_authentication_error(gw: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError) as err:
        await gw.sdk(token="gft_" + "0" * 32 + "_" + "x" * 40).chat.completions.create(model=MODEL, messages=USER)
    assert err.value.code == "invalid_api_key" and "Invalid or revoked API token" in err.value.message
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(gw.client.url("/v1/models")) as r:
            assert r.status == 401
            assert shape(await r.json())["code"] == "invalid_api_key"


async def test_unknown_model_and_unknown_route_are_not_found(gw: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        await gw.sdk().chat.completions.create(model="fake/nope", messages=USER)
    assert (err.value.code, err.value.param, err.value.type) == ("model_not_found", "model", "invalid_request_error")
    with pytest.raises(openai.NotFoundError):
        await gw.sdk().chat.completions.create(model="agent/nobody", messages=USER)
    async with gw.client.post("/v1/embeddings", json={}, headers={"Authorization": f"Bearer {gw.token}"}) as r:
        assert r.status == 404
        assert shape(await r.json())["type"] == "invalid_request_error"


async def test_v1_itself_and_a_path_with_a_line_break_answer_in_openai_shape_with_a_request_id(gw: Gateway) -> None:
    """A decoded line break stopped every route's pattern, the catch-all's too: aiohttp's own text 404 answered,
    without a request id; ``/v1`` alone answered the kernel's ``detail`` shape."""
    auth = {"Authorization": f"Bearer {gw.token}"}
    for path in ("/v1", "/v1/models/a%0ab", "/v1/no%0Awhere"):
        async with gw.client.get(path, headers=auth) as r:
            assert r.status == 404, path
            assert shape(await r.json())["type"] == "invalid_request_error"
            assert r.headers.get("X-Request-Id")
    async with gw.client.get("/agents/a%0ab", headers=auth) as r:
        assert r.status == 404 and r.headers.get("X-Request-Id") and "detail" in await r.json()


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": USER, "n": 2}, "n"),
    ({"messages": USER, "n": True}, "n"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]}, "messages[0].content[0].text"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ({"messages": [*USER, {"role": "assistant", "tool_calls": [{"id": "c"}]}]}, "messages[1].tool_calls[0]"),
    ({"messages": USER, "temperature": "hot"}, "temperature"),
    ({"messages": USER, "max_tokens": 0}, "max_tokens"),
    ({"messages": USER, "tools": [{"type": "function"}]}, "tools[0]"),
    ({"messages": USER, "response_format": {"type": "yaml"}}, "response_format.type"),
    ({"messages": USER, "stream": "yes"}, "stream"),
])
async def test_malformed_requests_are_bad_requests_naming_the_field(gw: Gateway, body: dict[str, Any],
                                                                   param: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await gw.sdk().chat.completions.create(model=MODEL, **body)
    assert err.value.param == param and err.value.type == "invalid_request_error"
    assert not gw.fake.requests  # nothing reached the provider


FN_TOOL = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize("model", [MODEL, "openai/gpt-4o"], ids=["openai_compat", "openai"])
@pytest.mark.parametrize(("options", "param"), [
    ({"tools": FN_TOOL, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tool_choice": {}}, "tool_choice"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": "not an object"}}},
     "response_format"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://evil/x.png"}}]}]},
     "messages"),
])
async def test_the_pass_through_providers_refuse_malformed_options_as_the_translating_ones_do(
        gw: Gateway, model: str, options: dict[str, Any], param: str) -> None:
    """providers.md: a malformed option is a 400 saying what is wrong, for every provider; the OpenAI-protocol
    plugins forwarded these to the vendor as they were."""
    body = {"messages": USER, **options}
    with pytest.raises(openai.BadRequestError) as err:
        await gw.sdk().chat.completions.create(model=model, **body)
    assert err.value.param == param, err.value.message
    assert not gw.fake.requests  # nothing reached the provider


async def test_a_catalog_parameter_out_of_range_names_the_parameter(gw: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await gw.sdk().chat.completions.create(model="openai/gpt-4o", messages=USER, temperature=99)
    assert err.value.param == "temperature" and "between" in err.value.message


async def test_a_body_that_is_not_json_is_a_bad_request(gw: Gateway) -> None:
    async with gw.client.post("/v1/chat/completions", data=b"{nope", headers={
            "Authorization": f"Bearer {gw.token}", "Content-Type": "application/json"}) as r:
        assert r.status == 400
        assert shape(await r.json())["type"] == "invalid_request_error"


async def test_a_catalog_parameter_out_of_range_is_a_bad_request(gw: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await gw.sdk().chat.completions.create(model="ollama/llama2", messages=USER, temperature=1.5)
    assert "temperature" in err.value.message


async def test_too_large_a_body_is_413_in_openai_shape(serve: Any, fake_llm: FakeLLMServer, tmp_path: Path) -> None:
    client = await serve(**fake_llm.env, GOFANNON_MAX_BODY_BYTES="2000", GOFANNON_STORAGE="memory")
    await client.login("alice")
    with pytest.raises(openai.APIStatusError) as err:
        await openai.AsyncOpenAI(base_url=client.url("/v1"), api_key=await make_token(client), max_retries=0
                                 ).chat.completions.create(model="openai/gpt-4o",
                                                           messages=[{"role": "user", "content": "x" * 5000}])
    assert err.value.status_code == 413 and err.value.code == "request_too_large"


async def test_an_exhausted_allowance_is_insufficient_quota(gw: Gateway) -> None:
    async with gw.client.put("/users/me/spend-remaining", json={"spendRemaining": 0}) as r:
        assert r.status == 200, await r.text()
    with pytest.raises(openai.RateLimitError) as err:
        await gw.sdk().chat.completions.create(model=MODEL, messages=USER)
    assert (err.value.code, err.value.type) == ("insufficient_quota", "insufficient_quota")
    with pytest.raises(openai.RateLimitError):  # streaming: refused before the stream starts
        await gw.sdk().chat.completions.create(model=MODEL, messages=USER, stream=True)
    assert not gw.fake.requests


async def test_a_provider_failure_is_a_server_error_with_its_message_and_no_key(
        serve: Any, fake_llm: FakeLLMServer, tmp_path: Path) -> None:
    gw = await start_gateway(serve, fake_llm, tmp_path, LLM_RATE_LIMIT_RETRIES="0")
    gw.fake.script(Reply(status=500, error="model melted"))
    with pytest.raises(openai.InternalServerError) as err:
        await gw.sdk().chat.completions.create(model=MODEL, messages=USER)
    assert err.value.status_code == 502 and "model melted" in err.value.message
    assert "sk-fake" not in str(err.value.body) and "Traceback" not in str(err.value.body)


async def test_a_provider_refusing_the_request_is_the_callers_400_with_its_message(
        serve: Any, fake_llm: FakeLLMServer, tmp_path: Path) -> None:
    """A tool schema or parameter the vendor rejects is the caller's to fix: BadRequestError, not a 502."""
    gw = await start_gateway(serve, fake_llm, tmp_path, LLM_RATE_LIMIT_RETRIES="0")
    gw.fake.script(Reply(status=400, error="Invalid schema for function 'f': 'object' is not valid"))
    with pytest.raises(openai.BadRequestError) as err:
        await gw.sdk().chat.completions.create(model=MODEL, messages=USER)
    assert "Invalid schema for function" in err.value.message and err.value.type == "invalid_request_error"
    assert "sk-fake" not in str(err.value.body)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_provider_error_quoting_the_operators_key_does_not_hand_it_to_the_caller(
        serve: Any, fake_llm: FakeLLMServer, tmp_path: Path, stream: bool) -> None:
    """Vendors echo what they were sent ("Incorrect API key provided: sk-..."); the kernel's own key is the
    operator's secret, so the message reaches the caller with it hidden, the rest of it intact."""
    from fakes.llm_servers import KEY

    gw = await start_gateway(serve, fake_llm, tmp_path, LLM_RATE_LIMIT_RETRIES="0")
    for status in (400, 500):
        gw.fake.script(Reply(status=status, error=f"vendor says no to {KEY} today"))
        with pytest.raises(openai.APIStatusError) as err:
            answer = await gw.sdk().chat.completions.create(model=MODEL, messages=USER, stream=stream)
            async for _ in answer:  # type: ignore[union-attr]
                pass
        assert "vendor says no to" in err.value.message and "today" in err.value.message
        assert KEY not in str(err.value.body) and KEY not in err.value.message


async def test_keys_under_any_variable_name_are_hidden_from_vendor_errors(
        serve: Any, fake_llm: FakeLLMServer, tmp_path: Path) -> None:
    """Bedrock's key variable is AWS_BEARER_TOKEN_BEDROCK and an operator's own provider may name its key
    variable anything (``api_key_env_var``): those keys are the operator's secrets too."""
    conf = Path(fake_catalog(tmp_path, fake_llm))
    (conf / "catalog" / "own.json").write_text(json.dumps({
        "slug": "own", "plugin": "openai_compat", "base_url": fake_llm.openai_base_url,
        "api_key_env_var": "OWN_KEY_VALUE", "models": {"m": {}}}))
    bedrock_key, own_key = "ABSKQmVkcm9ja0FQSUtleS1zZWNyZXQxMjM0NTY3ODkw", "zz-custom-operator-secret-999"
    client = await serve(**{**fake_llm.env, "AWS_BEARER_TOKEN_BEDROCK": bedrock_key}, OWN_KEY_VALUE=own_key,
                         GOFANNON_CONFIG_DIR=str(conf), GOFANNON_STORAGE="memory", LLM_RATE_LIMIT_RETRIES="0")
    await client.login("alice")
    sdk = openai.AsyncOpenAI(base_url=client.url("/v1"), api_key=await make_token(client), max_retries=0)
    for model, key in (("own/m", own_key), ("bedrock/us.amazon.nova-pro-v1:0", bedrock_key)):
        fake_llm.script(Reply(status=400, error=f"bad key {key} here"))
        with pytest.raises(openai.BadRequestError) as err:
            await sdk.chat.completions.create(model=model, messages=USER)
        assert "bad key" in err.value.message and key not in str(err.value.body), model


async def test_a_provider_timeout_is_504(serve: Any, fake_llm: FakeLLMServer, tmp_path: Path) -> None:
    gw = await start_gateway(serve, fake_llm, tmp_path, LLM_TIMEOUT_SECONDS="0.3", LLM_RATE_LIMIT_RETRIES="0")
    fake_llm.script(Reply("late", delay=3))
    with pytest.raises(openai.APIStatusError) as err:
        await gw.sdk().chat.completions.create(model=MODEL, messages=USER)
    assert err.value.status_code == 504 and err.value.type == "server_error"



async def test_reasoning_effort_goes_to_models_that_have_it_only(gw: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await gw.sdk().chat.completions.create(model="openai/gpt-4o", messages=USER, reasoning_effort="high")
    assert err.value.param == "reasoning_effort" and not gw.fake.requests
    with pytest.raises(openai.BadRequestError) as err:  # the catalog's choices for the model apply
        await gw.sdk().chat.completions.create(model="openai/o3", messages=USER, reasoning_effort="xhigh")
    assert "reasoning_effort" in err.value.message
    await gw.sdk().chat.completions.create(model="openai/o3", messages=USER, reasoning_effort="low")
    assert gw.fake.requests[0].json["reasoning"]["effort"] == "low"  # o3 goes through the Responses API
