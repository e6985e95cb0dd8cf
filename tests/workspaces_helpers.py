"""Shared helpers of the tests/test_workspaces_*.py files: several signed-in people on one real server."""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable

import aiohttp
import pytest

from conftest import Client


async def call(client: Any, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
    """One request; the status and the decoded answer (JSON, else text)."""
    async with client.request(method, path, json=body, **kw) as r:
        answer = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, answer


@pytest.fixture
async def people(serve: Any) -> AsyncIterator[Callable[..., Any]]:
    """``alice, bob = await people("alice", "bob", **env)``: one server, one signed-in browser per person
    (a uid ending in ``?`` gets a browser that has not signed in yet)."""
    sessions: list[aiohttp.ClientSession] = []

    async def start(*uids: str, **env: str) -> list[Client]:
        first = await serve(**env)
        clients = [first]
        for _ in uids[1:]:
            session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
            sessions.append(session)
            clients.append(Client(first.server, session))
        for client, uid in zip(clients, uids):
            if not uid.endswith("?"):
                await client.login(uid)
        return clients

    yield start
    for session in sessions:
        await session.close()


async def make_workspace(client: Any, name: str = "Research Team") -> str:
    status, body = await call(client, "POST", "/workspaces", {"displayName": name, "description": "R&D"})
    assert status == 201, body
    return str(body["workspaceId"])
