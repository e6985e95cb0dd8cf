"""POST /log/client: no login needed, the user recorded when known, size cap and per-address rate limit."""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gofannon import hookimpl
from gofannon.app import create_app
from gofannon.kernel import Kernel
from conftest import Client, free_port


class Sink:
    """A record_event plugin that keeps what it is given, as a log shipper would."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    @hookimpl
    def record_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)


@pytest.fixture
async def logged(make_settings: Callable[..., Any]) -> AsyncIterator[Callable[..., Any]]:
    opened: list[tuple[TestServer, aiohttp.ClientSession]] = []

    async def start(**env: str) -> tuple[Client, Sink]:
        kernel = Kernel(make_settings(**env))
        sink = Sink()
        kernel.pm.register(sink, name="test-sink")
        server = TestServer(create_app(kernel=kernel), host="127.0.0.1", port=free_port())
        await server.start_server()
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        opened.append((server, session))
        return Client(server, session), sink

    yield start
    for server, session in opened:
        await session.close()
        await server.close()


def _client_events(sink: Sink) -> list[dict[str, Any]]:
    return [e for e in sink.events if e["service"] == "webui"]


async def test_an_anonymous_client_log_is_accepted_and_recorded(logged: Any) -> None:
    client, sink = await logged()
    body = {"eventType": "ui_error", "message": "boom", "level": "warn", "metadata": {"page": "/agents"}}
    async with client.post("/log/client", json=body, headers={"User-Agent": "test-browser"}) as r:
        assert r.status == 202
        assert await r.json() == {"status": "logged"}
    [event] = _client_events(sink)
    assert event["eventType"] == "ui_error" and event["message"] == "boom" and event["level"] == "WARN"
    assert event["userId"] == "anonymous"
    assert event["metadata"] == {"page": "/agents", "client_host": "127.0.0.1", "user_agent": "test-browser"}


async def test_a_signed_in_users_log_carries_their_id_and_secrets_are_redacted(logged: Any) -> None:
    client, sink = await logged()
    await client.login("alice")
    body = {"eventType": "ui_info", "message": "pasted sk-proj-ABCDEFGHIJKLMNOPQRSTUV by mistake"}
    async with client.post("/log/client", json=body) as r:
        assert r.status == 202
    [event] = _client_events(sink)
    assert event["userId"] == "dev_stub:alice" and event["level"] == "INFO"
    assert "sk-proj-ABCDEFGHIJKLMNOPQRSTUV" not in event["message"] and "[REDACTED:openai_key]" in event["message"]


async def test_missing_fields_answer_422(logged: Any) -> None:
    client, sink = await logged()
    async with client.post("/log/client", json={"message": "x"}) as r:
        assert r.status == 422
        assert (await r.json())["detail"][0]["loc"] == ["body", "eventType"]
    assert _client_events(sink) == []


async def test_an_oversized_log_answers_413_declared_or_chunked(logged: Any) -> None:
    client, sink = await logged(GOFANNON_LOG_CLIENT_MAX_BYTES="1000")
    big = {"eventType": "x", "message": "y" * 2000}
    async with client.post("/log/client", json=big) as r:
        assert r.status == 413
        assert "too large" in (await r.json())["detail"]

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"eventType": "x", "message": "'
        for _ in range(10):
            yield b"y" * 200
        yield b'"}'

    async with client.post("/log/client", data=chunks(), headers={"Content-Type": "application/json"}) as r:
        assert r.status == 413
    assert _client_events(sink) == []


async def test_a_flooding_address_gets_429_after_its_per_minute_share(logged: Any) -> None:
    client, sink = await logged(GOFANNON_LOG_CLIENT_PER_MINUTE="5")
    statuses = []
    for i in range(7):
        async with client.post("/log/client", json={"eventType": "e", "message": str(i)}) as r:
            statuses.append(r.status)
            if r.status == 429:
                assert (await r.json())["detail"]
    # a minute boundary may fall inside the loop and open a fresh window
    assert statuses.count(202) in (5, 6, 7) and statuses[:5] == [202] * 5
    assert 429 in statuses or statuses.count(202) > 5
    assert len(_client_events(sink)) == statuses.count(202)


async def test_the_default_limit_admits_300_entries_a_minute(logged: Any) -> None:
    client, sink = await logged()
    for i in range(300):
        async with client.post("/log/client", json={"eventType": "e", "message": str(i)}) as r:
            assert r.status == 202
    assert len(_client_events(sink)) == 300


async def test_two_api_processes_sharing_a_store_share_one_rate_budget(logged: Any) -> None:
    first, _ = await logged(GOFANNON_LOG_CLIENT_PER_MINUTE="4")
    second, _ = await logged(GOFANNON_LOG_CLIENT_PER_MINUTE="4")  # same data dir: the same SQLite store
    statuses = []
    for i in range(6):
        target = first if i % 2 == 0 else second
        async with target.post("/log/client", json={"eventType": "e", "message": str(i)}) as r:
            statuses.append(r.status)
    # 4 admitted in total (5 or 6 only if a minute boundary fell inside the loop)
    assert statuses[:4] == [202] * 4 and (429 in statuses or statuses.count(202) > 4)
