"""Chat-settings sessions (wire §1.7): saved per user, snake_case on read, another user's id is a 404."""

from __future__ import annotations

from typing import Any


async def test_session_config_roundtrip_and_delete(serve: Any) -> None:
    client = await serve()
    await client.login("alice")
    cfg = {"provider": "openai", "model": "gpt-4o", "parameters": {"t": 1}, "builtInTool": "web_search"}
    async with client.post("/sessions/session_1_abc/config", json=cfg) as r:
        assert r.status == 200
        assert await r.json() == {"message": "Configuration updated", "session_id": "session_1_abc"}
    async with client.get("/sessions/session_1_abc/config") as r:
        assert await r.json() == {"provider": "openai", "model": "gpt-4o", "parameters": {"t": 1},
                                  "built_in_tool": "web_search"}
    async with client.delete("/sessions/session_1_abc") as r:
        assert r.status == 200
        assert await r.json() == {"message": "Session deleted"}
    async with client.get("/sessions/session_1_abc/config") as r:
        assert r.status == 404
        assert (await r.json())["detail"] == "Document 'session_1_abc' not found in 'sessions'"
    async with client.delete("/sessions/session_1_abc") as r:
        assert r.status == 404
        assert (await r.json())["detail"] == "Document 'session_1_abc' not found for deletion."


async def test_session_config_needs_parameters(serve: Any) -> None:
    client = await serve()
    await client.login("alice")
    async with client.post("/sessions/s/config", json={"provider": "openai", "model": "gpt-4o"}) as r:
        assert r.status == 422
        assert (await r.json())["detail"][0]["loc"] == ["body", "parameters"]


async def test_another_users_session_is_invisible_and_untouchable(serve: Any) -> None:
    alice = await serve()
    await alice.login("alice")
    cfg = {"provider": "openai", "model": "gpt-4o", "parameters": {}}
    async with alice.post("/sessions/shared/config", json=cfg) as r:
        assert r.status == 200
    bob = await serve()
    await bob.login("bob")
    async with bob.get("/sessions/shared/config") as r:
        assert r.status == 404
    async with bob.post("/sessions/shared/config", json=dict(cfg, model="evil")) as r:
        assert r.status == 404
    async with bob.delete("/sessions/shared") as r:
        assert r.status == 404
    async with alice.get("/sessions/shared/config") as r:
        assert (await r.json())["model"] == "gpt-4o"
