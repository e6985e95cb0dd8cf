"""Admin users over HTTP: site admins by login, the reference's X-Admin-Password path when enabled."""

from __future__ import annotations

from typing import Any


async def test_a_site_admin_lists_every_user_with_keys_masked(serve: Any) -> None:
    alice = await serve()
    await alice.login("alice")
    async with alice.put("/users/me/api-keys", json={"provider": "openai", "api_key": "sk-secret-value-12345678"}) as r:
        assert r.status == 200
    admin = await serve()
    await admin.login("admin")
    async with admin.get("/admin/users") as r:
        assert r.status == 200
        text = await r.text()
        listed = await r.json()
    assert "sk-secret-value-12345678" not in text
    by_id = {u["_id"]: u for u in listed}
    assert by_id["dev_stub:alice"]["apiKeys"]["openaiApiKey"] == "sk-...5678"
    assert "encryptedApiKeys" not in by_id["dev_stub:alice"]


async def test_admin_edit_applies_allowance_then_date_then_spend(serve: Any) -> None:
    admin = await serve()
    await admin.login("admin")
    body = {"monthlyAllowance": 20, "allowanceResetDate": 4102444800000, "spendRemaining": 500}
    async with admin.put("/admin/users/dev_stub:carol", json=body) as r:
        assert r.status == 200
        user = await r.json()
    assert user["_id"] == "dev_stub:carol"  # unknown users are created, then edited
    assert user["basicInfo"] == {"displayName": None, "email": None}
    assert user["usageInfo"]["monthlyAllowance"] == 20.0
    assert user["usageInfo"]["spendRemaining"] == 500.0  # explicit spendRemaining is not clamped
    async with admin.put("/admin/users/dev_stub:carol", json={"monthly_allowance": 10, "spendRemaining": None}) as r:
        info = (await r.json())["usageInfo"]
    assert info["monthlyAllowance"] == 10.0 and info["spendRemaining"] == 10.0
    assert info["allowanceResetDate"] == 4102444800000.0
    async with admin.put("/admin/users/dev_stub:carol", json={"spendRemaining": "much"}) as r:
        assert r.status == 422


async def test_a_signed_in_non_admin_gets_403_and_nobody_gets_401(serve: Any) -> None:
    client = await serve()
    async with client.get("/admin/users") as r:
        assert r.status == 401
        assert r.headers["X-Auth-Reason"] == "not_authenticated"
    await client.login("alice")
    async with client.get("/admin/users") as r:
        assert r.status == 403
    async with client.put("/admin/users/dev_stub:alice", json={"spendRemaining": 1e6}) as r:
        assert r.status == 403


async def test_admin_password_header_works_only_when_the_panel_is_enabled(serve: Any) -> None:
    off = await serve(ADMIN_PANEL_PASSWORD="s3cret")
    async with off.get("/admin/users", headers={"X-Admin-Password": "s3cret"}) as r:
        assert r.status == 403
        assert (await r.json())["detail"] == "Admin panel is disabled"
    no_password = await serve(ADMIN_PANEL_ENABLED="true")
    async with no_password.get("/admin/users", headers={"X-Admin-Password": "password"}) as r:
        assert r.status == 401  # there is no default password
        assert (await r.json())["detail"] == "Invalid admin password"
    on = await serve(ADMIN_PANEL_ENABLED="true", ADMIN_PANEL_PASSWORD="s3cret")
    async with on.get("/admin/users", headers={"X-Admin-Password": "wrong"}) as r:
        assert r.status == 401
    async with on.get("/admin/users", headers={"X-Admin-Password": "s3cret"}) as r:
        assert r.status == 200
        assert isinstance(await r.json(), list)
    async with on.put("/admin/users/dev_stub:bob", json={"spendRemaining": 3},
                      headers={"X-Admin-Password": "s3cret"}) as r:
        assert r.status == 200
        assert (await r.json())["usageInfo"]["spendRemaining"] == 3.0
    await on.login("bob")  # a signed-in non-admin using the panel's password is admitted too
    async with on.get("/admin/users", headers={"X-Admin-Password": "s3cret"}) as r:
        assert r.status == 200


async def test_guessing_the_admin_password_is_stopped_after_ten_tries(serve: Any) -> None:
    client = await serve(ADMIN_PANEL_ENABLED="true", ADMIN_PANEL_PASSWORD="s3cret")
    statuses = []
    for i in range(11):
        async with client.get("/admin/users", headers={"X-Admin-Password": f"guess-{i}"}) as r:
            statuses.append(r.status)
    async with client.get("/admin/users", headers={"X-Admin-Password": "s3cret"}) as r:
        final = r.status
    # ten wrong guesses answer 401; then every attempt, even the right one, waits out the minute
    # (unless a minute boundary fell inside the loop and opened a fresh window)
    assert statuses[:10] == [401] * 10
    if statuses[10] == 429:
        assert final == 429
    else:  # the window turned over during the loop: the eleventh guess was the first of a new minute
        assert statuses[10] == 401
