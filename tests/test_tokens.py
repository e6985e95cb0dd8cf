"""Personal API tokens: shown once, listed without the secret, Bearer works everywhere, revoked → 401."""

from __future__ import annotations

from typing import Any

import aiohttp


async def _bearer(client: Any, method: str, path: str, token: str, **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as plain:  # no cookie jar: only the token speaks
        async with plain.request(method, client.url(path), headers={"Authorization": f"Bearer {token}"}, **kw) as r:
            body = await r.json(content_type=None) if r.status != 204 else None
            return r.status, body


async def test_a_token_is_shown_once_and_then_acts_as_its_owner(client: Any) -> None:
    await client.login("alice")
    async with client.post("/users/me/tokens", json={"name": "ci script"}) as r:
        assert r.status == 201
        created = await r.json()
    assert set(created) == {"id", "name", "token", "createdAt"} and created["name"] == "ci script"
    token = created["token"]
    async with client.get("/users/me/tokens") as r:
        listed = (await r.json())["tokens"]
    assert listed == [{"id": created["id"], "name": "ci script", "createdAt": created["createdAt"], "lastUsedAt": None}]
    status, me = await _bearer(client, "GET", "/users/me", token)
    assert status == 200 and me["_id"] == "dev_stub:alice"
    status, _ = await _bearer(client, "POST", "/users/me/usage", token, json={"responseCost": 1})
    assert status == 200
    async with client.get("/users/me/tokens") as r:
        assert (await r.json())["tokens"][0]["lastUsedAt"] is not None
        assert token not in await r.text()


async def test_a_revoked_or_forged_token_answers_401(client: Any) -> None:
    await client.login("alice")
    async with client.post("/users/me/tokens", json={"name": "temp"}) as r:
        created = await r.json()
    async with client.delete(f"/users/me/tokens/{created['id']}") as r:
        assert r.status == 204
    status, body = await _bearer(client, "GET", "/users/me", created["token"])
    assert status == 401 and body["detail"] == "Invalid or revoked API token"
    forged = created["token"][:-4] + "AAAA"
    assert (await _bearer(client, "GET", "/users/me", forged))[0] == 401
    assert (await _bearer(client, "GET", "/users/me", "gft_nonsense"))[0] == 401
    assert (await _bearer(client, "GET", "/users/me", "not-one-of-ours"))[0] == 401


async def test_another_users_token_id_is_a_404_like_an_unknown_one(serve: Any) -> None:
    alice = await serve()
    await alice.login("alice")
    async with alice.post("/users/me/tokens", json={"name": "mine"}) as r:
        token_id = (await r.json())["id"]
    bob = await serve()
    await bob.login("bob")
    async with bob.delete(f"/users/me/tokens/{token_id}") as r:
        assert r.status == 404
        other = await r.json()
    async with bob.delete("/users/me/tokens/" + "0" * 32) as r:
        assert r.status == 404
        assert await r.json() == other
    async with bob.get("/users/me/tokens") as r:
        assert (await r.json())["tokens"] == []


async def test_token_name_is_required(client: Any) -> None:
    await client.login("alice")
    async with client.post("/users/me/tokens", json={}) as r:
        assert r.status == 422
        assert (await r.json())["detail"][0]["loc"] == ["body", "name"]


async def test_a_site_admins_token_opens_admin_routes(client: Any) -> None:
    await client.login("admin")
    async with client.post("/users/me/tokens", json={"name": "ops"}) as r:
        token = (await r.json())["token"]
    status, users = await _bearer(client, "GET", "/admin/users", token)
    assert status == 200 and isinstance(users, list)
