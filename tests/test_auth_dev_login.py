"""The dev_stub login flow as a browser runs it, and what a session grants."""

from __future__ import annotations

from typing import Any


async def test_auth_me_is_401_before_login_and_the_user_after(client: Any) -> None:
    async with client.get("/auth/me") as r:
        assert r.status == 401
        assert "X-Auth-Reason" not in r.headers
    await client.login("alice")
    async with client.get("/auth/me") as r:
        assert r.status == 200
        me = await r.json()
    assert me["uid"] == "dev_stub:alice"
    assert me["providerType"] == "dev_stub" and me["isSiteAdmin"] is False
    assert me["workspaces"][0]["workspaceId"] == "personal:dev_stub:alice"


async def test_login_redirects_to_the_frontend_with_an_httponly_session_cookie(client: Any) -> None:
    async with client.get("/auth/login/dev_stub?return_to=/agents") as r:
        assert r.status == 302
        assert r.headers["Location"].startswith("/auth/dev-stub-picker?")
        state_cookie = r.cookies["gofannon_auth_state"]
        assert state_cookie["httponly"] and len(state_cookie.value) == 48
    async with client.get(f"/auth/callback/dev_stub?code=alice&state={state_cookie.value}") as r:
        assert r.status == 302
        assert r.headers["Location"] == "http://localhost:3000/agents"
        sid = r.cookies["gofannon_sid"]
        assert sid["httponly"] and sid["samesite"].lower() == "lax" and sid["path"] == "/"


async def test_callback_refuses_a_state_mismatch_and_a_missing_state_cookie(serve: Any) -> None:
    client = await serve()
    async with client.get("/auth/callback/dev_stub?code=alice&state=x") as r:
        assert r.status == 400
        assert (await r.json())["detail"] == "Missing state cookie; possible CSRF"
    async with client.get("/auth/login/dev_stub") as r:
        assert r.status == 302
    async with client.get("/auth/callback/dev_stub?code=alice&state=wrong") as r:
        assert r.status == 400
        assert (await r.json())["detail"] == "State mismatch; possible CSRF"


async def test_return_to_on_another_origin_falls_back_to_the_frontend_root(client: Any) -> None:
    async with client.get("/auth/login/dev_stub?return_to=https://evil.example/x") as r:
        state = r.cookies["gofannon_auth_state"].value
    async with client.get(f"/auth/callback/dev_stub?code=bob&state={state}") as r:
        assert r.headers["Location"] == "http://localhost:3000/"


async def test_picker_escapes_what_it_echoes(client: Any) -> None:
    async with client.get('/auth/dev-stub-picker?state="><script>alert(1)</script>') as r:
        text = await r.text()
    assert "<script>" not in text
    assert ">alice</a>" in text and ">bob</a>" in text


async def test_logout_revokes_the_session(client: Any) -> None:
    await client.login("alice")
    sid = next(c.value for c in client.session.cookie_jar if c.key == "gofannon_sid")
    async with client.post("/auth/logout") as r:
        assert r.status == 204
    client.session.cookie_jar.update_cookies({"gofannon_sid": sid})
    async with client.get("/auth/me") as r:
        assert r.status == 401


async def test_unknown_session_cookie_on_a_protected_route_says_session_expired(client: Any) -> None:
    client.session.cookie_jar.update_cookies({"gofannon_sid": "not-a-session"})
    async with client.get("/users/me") as r:
        assert r.status in (401, 404)
        if r.status == 401:
            assert r.headers["X-Auth-Reason"] == "session_expired"


async def test_providers_lists_dev_stub(client: Any) -> None:
    async with client.get("/auth/providers") as r:
        body = await r.json()
    assert body == {"providers": [{"type": "dev_stub", "displayName": "Dev stub login", "icon": "dev"}],
                    "legacyFirebaseEnabled": True}


async def test_dev_login_does_not_exist_in_production(serve: Any) -> None:
    client = await serve(APP_ENV="production")
    async with client.get("/auth/login/dev_stub") as r:
        assert r.status == 404
    async with client.get("/auth/dev-stub-picker") as r:
        assert r.status == 404


async def test_a_login_state_works_once_only(client: Any) -> None:
    async with client.get("/auth/login/dev_stub") as r:
        state = r.cookies["gofannon_auth_state"].value
    async with client.get(f"/auth/callback/dev_stub?code=alice&state={state}") as r:
        assert r.status == 302
    client.session.cookie_jar.update_cookies({"gofannon_auth_state": state})
    async with client.get(f"/auth/callback/dev_stub?code=alice&state={state}") as r:
        assert r.status == 400
        assert "start the login again" in (await r.json())["detail"]


async def test_the_sweeper_deletes_expired_sessions_and_abandoned_login_states(make_settings: Any) -> None:
    from gofannon.kernel import Kernel
    from gofannon.services import sessions

    kernel = Kernel(make_settings())
    await kernel.open()
    try:
        await kernel.store.put("user_sessions", "old", {"userUid": "dev_stub:alice", "expiresAt": "2000-01-01T00:00:00"})
        await kernel.store.put("user_sessions", "live", {"userUid": "dev_stub:alice", "expiresAt": "2999-01-01T00:00:00"})
        await kernel.store.put("auth_login_states", "abandoned", {"type": "dev_stub", "createdAt": "2000-01-01T00:00:00"})
        assert await sessions.sweep(kernel) == 2
        assert [d["_id"] for d in await kernel.store.list("user_sessions")] == ["live"]
        assert await kernel.store.list("auth_login_states") == []
    finally:
        await kernel.close()


async def test_stale_memberships_are_refreshed_in_the_background(serve: Any, tmp_path: Any) -> None:
    import asyncio

    import yaml

    from gofannon.services.auth_config import DEV_CONFIG
    from gofannon.web.keys import KERNEL

    path = tmp_path / "auth.yaml"
    path.write_text(yaml.safe_dump({"auth": {**DEV_CONFIG, "workspace_refresh_minutes": 1}}))
    client = await serve(AUTH_CONFIG_PATH=str(path))
    await client.login("alice")
    sid = next(c.value for c in client.session.cookie_jar if c.key == "gofannon_sid")
    store = client.server.app[KERNEL].store
    doc = await store.get("user_sessions", sid)
    doc["workspaces"] = doc["workspaces"][:1]  # as if the project membership were granted after login
    doc["lastRefreshAt"] = "2000-01-01T00:00:00"
    await store.put("user_sessions", sid, doc)
    ids: list[str] = []
    for _ in range(50):
        async with client.get("/auth/me") as r:
            ids = [w["workspaceId"] for w in (await r.json())["workspaces"]]
        if "project:demo" in ids:
            break
        await asyncio.sleep(0.02)
    assert ids == ["personal:dev_stub:alice", "project:demo"]
    assert (await store.get("user_sessions", sid))["lastRefreshAt"] != "2000-01-01T00:00:00"
