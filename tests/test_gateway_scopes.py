"""Scoped personal tokens on ``/v1`` and ``/rest``: models, expiry, rpm and maxSpend, holding under
concurrency and across API processes sharing a Redis store."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from conftest import Client
from fakes import FakeLLMServer, Reply
from test_gateway_openai import (  # noqa: F401 - gw is a fixture
    MODEL, PRICE_IN, PRICE_OUT, Gateway, fake_catalog, gw, make_token, start_gateway)
from test_rest import deploy

USER = [{"role": "user", "content": "hi"}]
CALL_COST = 10 * PRICE_IN + 5 * PRICE_OUT  # the fake's default usage


async def tokens_of(client: Client) -> dict[str, dict[str, Any]]:
    async with client.get("/users/me/tokens") as r:
        assert r.status == 200
        return {t["id"]: t for t in (await r.json())["tokens"]}


async def created(client: Client, **scope: Any) -> dict[str, Any]:
    async with client.post("/users/me/tokens", json={"name": "scoped", **scope}) as r:
        assert r.status == 201, await r.text()
        return await r.json()  # type: ignore[no-any-return]


def away_from_minute_edge() -> None:
    """rpm windows are calendar minutes: keep a test's burst inside one."""
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)


async def test_a_scoped_token_shows_its_scope_and_spend(gw: Gateway) -> None:
    expires = (datetime.now(timezone.utc) + timedelta(days=1)).replace(microsecond=0)
    async with gw.client.get("/auth/me") as r:
        workspace = (await r.json())["workspaces"][0]["workspaceId"]
    made = await created(gw.client, models=["fake/*", "agent/echo"], maxSpend=2.5, rpm=60,
                         expiresAt=expires.isoformat(), workspaceId=workspace)
    listed = (await tokens_of(gw.client))[made["id"]]
    assert listed["models"] == ["fake/*", "agent/echo"] and listed["maxSpend"] == 2.5 and listed["rpm"] == 60
    assert listed["workspaceId"] == workspace and listed["spend"] == 0.0
    assert datetime.fromisoformat(listed["expiresAt"]) == expires.replace(tzinfo=None)
    assert "token" not in listed


@pytest.mark.parametrize("scope", [{"models": "fake/*"}, {"maxSpend": -1}, {"rpm": 0},
                                   {"expiresAt": "yesterday"}, {"expiresAt": "2001-01-01T00:00:00Z"},
                                   {"workspaceId": 5}, {"models": [" "]}, {"maxSpend": True}, {"rpm": True},
                                   # times that exist but not in UTC (found by fuzzing: were 500s)
                                   {"expiresAt": "0001-01-01T00:00:00+14:00"},
                                   {"expiresAt": "9999-12-31T23:59:59-14:00"}])
async def test_bad_scopes_are_refused(gw: Gateway, scope: dict[str, Any]) -> None:
    async with gw.client.post("/users/me/tokens", json={"name": "bad", **scope}) as r:
        assert r.status == 422, await r.text()


async def test_models_scope_limits_what_is_listed_and_called(gw: Gateway) -> None:
    token = (await created(gw.client, models=["fake/*"]))["token"]
    sdk = gw.sdk(token)
    ids = [m.id async for m in sdk.models.list()]
    assert ids and all(i.startswith("fake/") for i in ids)
    assert (await sdk.chat.completions.create(model=MODEL, messages=USER)).choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError) as err:
        await sdk.chat.completions.create(model="openai/gpt-4o", messages=USER)
    assert "openai/gpt-4o" in err.value.message
    with pytest.raises(openai.NotFoundError):  # out of scope is not listed either
        await sdk.models.retrieve("openai/gpt-4o")


async def test_models_scope_applies_to_rest(gw: Gateway) -> None:
    await deploy(gw.client, name="echo", friendlyName="echo",
                 code="async def run(input_dict, tools):\n    return {'outputText': 'ok'}\n")
    only_models = (await created(gw.client, models=["fake/*"]))["token"]
    agents = (await created(gw.client, models=["agent/*"]))["token"]
    async with aiohttp.ClientSession() as script:  # no session cookie: the token alone
        async with script.post(gw.client.url("/rest/echo"), json={},
                               headers={"Authorization": f"Bearer {only_models}"}) as r:
            assert r.status == 403 and "agent/echo" in (await r.json())["detail"]
        async with script.post(gw.client.url("/rest/echo"), json={},
                               headers={"Authorization": f"Bearer {agents}"}) as r:
            assert r.status == 200 and (await r.json()) == {"outputText": "ok"}


async def test_an_expired_token_is_refused_everywhere(gw: Gateway) -> None:
    soon = datetime.now(timezone.utc) + timedelta(seconds=1)
    token = (await created(gw.client, expiresAt=soon.isoformat()))["token"]
    assert [m async for m in gw.sdk(token).models.list()]
    await asyncio.sleep(max(0.0, (soon - datetime.now(timezone.utc)).total_seconds()) + 0.05)
    with pytest.raises(openai.AuthenticationError) as err:
        await gw.sdk(token).chat.completions.create(model=MODEL, messages=USER)
    assert "expired" in err.value.message
    async with aiohttp.ClientSession() as script:
        async with script.get(gw.client.url("/agents"), headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 401 and (await r.json())["detail"] == "API token expired"


async def test_rpm_holds_under_a_burst_and_says_when_to_retry(gw: Gateway) -> None:
    away_from_minute_edge()
    token = (await created(gw.client, rpm=5))["token"]
    sdk = gw.sdk(token)
    results = await asyncio.gather(*[sdk.chat.completions.create(model=MODEL, messages=USER) for _ in range(20)],
                                   return_exceptions=True)
    ok = [r for r in results if not isinstance(r, Exception)]
    limited = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(ok) == 5 and len(limited) == 15
    assert limited[0].code == "rate_limit_exceeded"
    assert 1 <= int(limited[0].response.headers["Retry-After"]) <= 60


async def test_max_spend_holds_under_200_concurrent_calls(gw: Gateway) -> None:
    made = await created(gw.client, maxSpend=0.5)
    sdk = gw.sdk(made["token"])
    before = len(await gw.usage())
    results = await asyncio.gather(
        *[sdk.chat.completions.create(model=MODEL, messages=USER, max_tokens=5) for _ in range(200)],
        return_exceptions=True)
    ok = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert ok and refused
    assert all(isinstance(r, openai.RateLimitError) and r.code == "insufficient_quota" for r in refused)
    spend = (await tokens_of(gw.client))[made["id"]]["spend"]
    assert spend <= 0.5 + 1e-9
    assert spend == pytest.approx(len(ok) * CALL_COST)
    assert len(await gw.usage()) - before == len(ok)  # the owner's history has exactly the calls that ran
    while True:  # one at a time it runs until the budget is truly gone, never past it
        try:
            await sdk.chat.completions.create(model=MODEL, messages=USER, max_tokens=5)
        except openai.RateLimitError as exc:
            assert exc.code == "insufficient_quota"
            break
    spend = (await tokens_of(gw.client))[made["id"]]["spend"]
    assert 0.5 - CALL_COST * 3 < spend <= 0.5 + 1e-9


@pytest.mark.parametrize("storage", ["memory", "sqlite"])  # sqlite: answers leave before their journaled charges
async def test_200_concurrent_streamed_calls_charge_exactly_200_times(serve: Any, fake_llm: FakeLLMServer,
                                                                       tmp_path: Path, storage: str) -> None:
    gw = await start_gateway(serve, fake_llm, tmp_path, GOFANNON_STORAGE=storage)
    made = await created(gw.client, maxSpend=1000)
    sdk = gw.sdk(made["token"])
    before_history = len(await gw.usage())
    before = (await gw.user())["usageInfo"]["spendRemaining"]

    async def one() -> str:
        stream = await sdk.chat.completions.create(model=MODEL, messages=USER, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    answers = await asyncio.gather(*[one() for _ in range(200)])
    assert answers == ["Hello from the fake model"] * 200
    assert len(await gw.usage()) - before_history == 200
    assert (await gw.user())["usageInfo"]["spendRemaining"] == pytest.approx(before - 200 * CALL_COST)
    assert (await tokens_of(gw.client))[made["id"]]["spend"] == pytest.approx(200 * CALL_COST)


async def test_scopes_hold_across_two_api_processes_on_redis(serve: Any, fake_llm: FakeLLMServer, tmp_path: Path,
                                                            redis_url: str) -> None:
    env = {**fake_llm.env, "FAKE_API_KEY": "k", "GOFANNON_CONFIG_DIR": fake_catalog(tmp_path, fake_llm),
           "GOFANNON_STORAGE": "redis", "REDIS_URL": redis_url}
    one, two = await serve(**env), await serve(**env)
    await one.login("alice")
    budget = await created(one, maxSpend=0.3)
    sdks = [openai.AsyncOpenAI(base_url=c.url("/v1"), api_key=budget["token"], max_retries=0) for c in (one, two)]
    results = await asyncio.gather(
        *[sdks[i % 2].chat.completions.create(model=MODEL, messages=USER, max_tokens=5) for i in range(200)],
        return_exceptions=True)
    ok = [r for r in results if not isinstance(r, Exception)]
    assert ok and all(isinstance(r, openai.RateLimitError) for r in results if isinstance(r, Exception))
    spend = (await tokens_of(one))[budget["id"]]["spend"]
    assert spend <= 0.3 + 1e-9 and spend == pytest.approx(len(ok) * CALL_COST)

    away_from_minute_edge()
    limited = await created(one, rpm=7)
    sdks = [openai.AsyncOpenAI(base_url=c.url("/v1"), api_key=limited["token"], max_retries=0) for c in (one, two)]
    results = await asyncio.gather(
        *[sdks[i % 2].models.list() for i in range(2)],  # listing is not a call: no rpm
        *[sdks[i % 2].chat.completions.create(model=MODEL, messages=USER) for i in range(30)],
        return_exceptions=True)
    assert len([r for r in results[2:] if not isinstance(r, Exception)]) == 7


async def test_a_failed_call_gives_its_reservation_back(serve: Any, fake_llm: FakeLLMServer, tmp_path: Path) -> None:
    gw = await start_gateway(serve, fake_llm, tmp_path, LLM_RATE_LIMIT_RETRIES="0")
    made = await created(gw.client, maxSpend=0.06)  # room for one call's reservation at a time
    sdk = gw.sdk(made["token"])
    fake_llm.respond(lambda request: Reply(status=500, error="down"))
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            await sdk.chat.completions.create(model=MODEL, messages=USER, max_tokens=5)
        with pytest.raises(openai.InternalServerError):  # streamed: refused before the stream starts
            await sdk.chat.completions.create(model=MODEL, messages=USER, max_tokens=5, stream=True)
    fake_llm.respond(None)
    got = await sdk.chat.completions.create(model=MODEL, messages=USER, max_tokens=5)
    assert got.choices[0].message.content
    assert (await tokens_of(gw.client))[made["id"]]["spend"] == pytest.approx(CALL_COST)
