"""A signed-in user's profile, budget and provider keys over HTTP (wire contract §1.4, §6.4; DECISIONS.md)."""

from __future__ import annotations

import time
from typing import Any, Callable

import pytest



async def test_first_visit_creates_the_profile_with_the_default_allowance(client: Any) -> None:
    await client.login("alice")
    async with client.get("/users/me") as r:
        assert r.status == 200
        me = await r.json()
    assert me["_id"] == "dev_stub:alice" and me["_rev"]
    assert me["basicInfo"] == {"displayName": "Alice Dev", "email": "alice@dev.local"}
    assert me["billingInfo"] == {"plan": None, "status": None}
    assert me["usageInfo"] == {"monthlyAllowance": 100.0, "allowanceResetDate": 0.0, "spendRemaining": 100.0,
                               "usage": []}
    assert me["apiKeys"] == {"openaiApiKey": None, "anthropicApiKey": None, "geminiApiKey": None,
                             "perplexityApiKey": None, "openrouterApiKey": None}
    assert "T" in me["createdAt"] and not me["createdAt"].endswith("Z")
    async with client.get("/users/me") as r:
        assert (await r.json())["createdAt"] == me["createdAt"]


async def test_profile_needs_a_login(client: Any) -> None:
    async with client.get("/users/me") as r:
        assert r.status == 401
        assert r.headers["X-Auth-Reason"] == "not_authenticated"
        assert (await r.json())["detail"] == "Not authenticated. Session cookie missing or invalid."


async def test_budget_routes_edit_the_allowance_in_a_dev_deployment(client: Any) -> None:
    await client.login("alice")
    async with client.put("/users/me/spend-remaining", json={"spendRemaining": 80}) as r:
        assert r.status == 200
        assert (await r.json())["usageInfo"]["spendRemaining"] == 80.0
    async with client.put("/users/me/monthly-allowance", json={"monthly_allowance": "60"}) as r:
        info = (await r.json())["usageInfo"]
    assert info["monthlyAllowance"] == 60.0 and info["spendRemaining"] == 60.0  # clamped down to the allowance
    far = 4102444800000.0  # 2100-01-01 in epoch ms: not due
    async with client.put("/users/me/allowance-reset-date", json={"allowanceResetDate": far}) as r:
        assert (await r.json())["usageInfo"]["allowanceResetDate"] == far
    async with client.post("/users/me/usage", json={"responseCost": 2.5, "metadata": {"a": 1}}) as r:
        assert r.status == 200
        info = (await r.json())["usageInfo"]
    assert info["spendRemaining"] == 57.5
    assert info["usage"][-1]["responseCost"] == 2.5 and info["usage"][-1]["metadata"] == {"a": 1}
    async with client.post("/users/me/reset-allowance") as r:
        info = (await r.json())["usageInfo"]
    assert info["spendRemaining"] == 60.0 and info["usage"] == []
    async with client.get("/users/me/usage") as r:
        history = (await r.json())["usage"]
    assert [e["responseCost"] for e in history] == [2.5]  # the full history outlives the reset


async def test_negative_usage_cannot_add_credit(client: Any) -> None:
    await client.login("alice")
    async with client.post("/users/me/usage", json={"responseCost": -50}) as r:
        assert r.status == 422
        detail = (await r.json())["detail"]
    assert detail[0]["loc"] == ["body", "responseCost"]
    async with client.get("/users/me") as r:
        assert (await r.json())["usageInfo"]["spendRemaining"] == 100.0


async def test_missing_or_malformed_budget_bodies_answer_422_in_the_wire_shape(client: Any) -> None:
    await client.login("alice")
    async with client.put("/users/me/monthly-allowance", json={"monthly": 50}) as r:
        assert r.status == 422
        assert (await r.json())["detail"] == [
            {"type": "missing", "loc": ["body", "monthlyAllowance"], "msg": "Field required", "input": {"monthly": 50}}
        ]
    async with client.put("/users/me/spend-remaining", data=b"{not json", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 422
    async with client.put("/users/me/spend-remaining", json={"spendRemaining": "lots"}) as r:
        assert r.status == 422
    for path, field in [("/users/me/spend-remaining", "spendRemaining"), ("/users/me/monthly-allowance",
                        "monthlyAllowance"), ("/users/me/usage", "responseCost")]:
        method = client.post if path.endswith("usage") else client.put
        async with method(path, json={field: True}) as r:  # not read as 1.0, as pydantic's lax mode would
            assert r.status == 422
            error = (await r.json())["detail"][0]
            assert error["loc"] == ["body", field] and "not true or false" in error["msg"]
    async with client.get("/users/me") as r:
        assert (await r.json())["usageInfo"]["spendRemaining"] == 100.0


async def test_self_service_budget_off_refuses_users_but_not_site_admins(serve: Any) -> None:
    client = await serve(GOFANNON_SELF_SERVICE_BUDGET="false")
    await client.login("alice")
    for method, path, body in [("PUT", "/users/me/monthly-allowance", {"monthlyAllowance": 1000}),
                               ("PUT", "/users/me/spend-remaining", {"spendRemaining": 1000}),
                               ("PUT", "/users/me/allowance-reset-date", {"allowanceResetDate": 1}),
                               ("POST", "/users/me/reset-allowance", None)]:
        async with client.request(method, path, json=body) as r:
            assert r.status == 403, path
            assert "disabled" in (await r.json())["detail"]
    async with client.post("/users/me/usage", json={"responseCost": 1}) as r:
        assert r.status == 200  # recording usage only lowers the budget
    admin = await serve(GOFANNON_SELF_SERVICE_BUDGET="false")
    await admin.login("admin")
    async with admin.put("/users/me/spend-remaining", json={"spendRemaining": 5}) as r:
        assert r.status == 200


async def test_allowance_resets_itself_once_the_reset_date_has_passed(client: Any) -> None:
    await client.login("alice")
    async with client.post("/users/me/usage", json={"responseCost": 30}) as r:
        assert (await r.json())["usageInfo"]["spendRemaining"] == 70.0
    past = (time.time() - 3600) * 1000.0
    async with client.put("/users/me/allowance-reset-date", json={"allowanceResetDate": past}) as r:
        info = (await r.json())["usageInfo"]
    assert info["spendRemaining"] == 70.0  # this write set the date; the next read applies it
    async with client.get("/users/me") as r:
        info = (await r.json())["usageInfo"]
    assert info["spendRemaining"] == 100.0 and info["usage"] == []
    assert info["allowanceResetDate"] > time.time() * 1000.0  # moved to next month


async def test_provider_keys_are_masked_and_never_returned_in_clear(client: Any) -> None:
    await client.login("alice")
    secret = "sk-proj-abcdefghijklmnopqrstuvwxyz123456"
    async with client.put("/users/me/api-keys", json={"provider": "openai", "api_key": secret}) as r:
        assert r.status == 200
        text = await r.text()
    assert secret not in text
    async with client.get("/users/me/api-keys") as r:
        keys = await r.json()
    assert keys["openaiApiKey"] == "sk-...3456" and keys["anthropicApiKey"] is None
    async with client.get("/users/me") as r:
        assert secret not in await r.text()
    async with client.get("/users/me/api-keys/openai/effective") as r:
        assert await r.json() == {"provider": "openai", "has_key": True, "source": "user"}
    async with client.delete("/users/me/api-keys/openai") as r:
        assert r.status == 200
        assert (await r.json())["apiKeys"]["openaiApiKey"] is None
    async with client.get("/users/me/api-keys/openai/effective") as r:
        assert await r.json() == {"provider": "openai", "has_key": False, "source": None}


async def test_effective_key_reports_a_server_key_from_the_environment(serve: Any) -> None:
    client = await serve(ANTHROPIC_API_KEY="sk-ant-server-side-key-000")
    await client.login("bob")
    async with client.get("/users/me/api-keys/anthropic/effective") as r:
        assert await r.json() == {"provider": "anthropic", "has_key": True, "source": "env"}
    async with client.get("/users/me/api-keys/whatever/effective") as r:
        assert await r.json() == {"provider": "whatever", "has_key": False, "source": None}


async def test_api_key_routes_refuse_unknown_providers_and_the_camel_case_key(client: Any) -> None:
    await client.login("alice")
    async with client.put("/users/me/api-keys", json={"provider": "acme", "api_key": "k" * 20}) as r:
        assert r.status == 400
        assert (await r.json())["detail"] == "Unknown provider: acme"
    async with client.put("/users/me/api-keys", json={"provider": "openai", "apiKey": "k" * 20}) as r:
        assert r.status == 422
    async with client.delete("/users/me/api-keys/acme") as r:
        assert r.status == 400


async def test_stored_keys_are_encrypted_in_the_database(serve: Any, make_settings: Any) -> None:
    settings = make_settings()
    client = await serve(settings)
    await client.login("alice")
    secret = "sk-ant-api03-verysecretvalue-zzzz"
    async with client.put("/users/me/api-keys", json={"provider": "anthropic", "api_key": secret}) as r:
        assert r.status == 200
    db_files = [p for p in settings.data_path.rglob("*") if p.is_file()]
    assert db_files
    for path in db_files:
        assert secret.encode() not in path.read_bytes(), path


async def test_two_processes_sharing_a_store_decrypt_each_others_keys(serve: Any, make_settings: Any) -> None:
    settings = make_settings()
    first = await serve(settings)
    await first.login("alice")
    async with first.put("/users/me/api-keys", json={"provider": "gemini", "api_key": "AIza" + "x" * 35}) as r:
        assert r.status == 200
    second = await serve(make_settings())  # same data dir, its own kernel: the generated key is shared
    await second.login("alice")
    async with second.get("/users/me/api-keys/gemini/effective") as r:
        assert (await r.json())["source"] == "user"


async def test_a_changed_secret_key_makes_stored_keys_unusable_but_breaks_nothing(serve: Any, make_settings: Any) -> None:
    first = await serve(make_settings(GOFANNON_SECRET_KEY="first-key"))
    await first.login("alice")
    async with first.put("/users/me/api-keys", json={"provider": "openai", "api_key": "sk-abcdefghijklmnop"}) as r:
        assert r.status == 200
    second = await serve(make_settings(GOFANNON_SECRET_KEY="rotated-key"))
    await second.login("alice")
    async with second.get("/users/me/api-keys/openai/effective") as r:
        assert await r.json() == {"provider": "openai", "has_key": False, "source": None}
    async with second.get("/users/me") as r:
        assert r.status == 200


@pytest.mark.parametrize("storage", ["sqlite", "redis", "memory"])
async def test_usage_history_reads_the_newest_entries_of_both_id_forms(
        make_settings: Callable[..., Any], storage: str, request: pytest.FixtureRequest) -> None:
    """``GET /users/me/usage`` reads ranges of ids, not the whole collection: this version's entries and the older
    form (``<uid>:<time>:...``, earlier versions and the reference import) come back merged by time, newest
    ``limit``, and another user's entries (even one whose uid extends this one's) never do."""
    from gofannon.kernel import Kernel
    from gofannon.services import users

    env = {"GOFANNON_STORAGE": storage, "GOFANNON_SANDBOX_POOL_SIZE": "0"}
    if storage == "redis":
        env["REDIS_URL"] = request.getfixturevalue("redis_url")
        env["GOFANNON_REDIS_PREFIX"] = f"test-usage-{time.time_ns()}:"
    kernel = Kernel(make_settings(**env), role="cli")
    await kernel.open()
    try:
        uid, other = "oidc:alice", "oidc:alice:bob"  # the other's older-form ids share this user's prefix
        older = [{"_id": f"{uid}:2026-01-0{d}T00:00:00:x{d}", "userId": uid, "timestamp": f"2026-01-0{d}T00:00:00",
                  "responseCost": float(d), "metadata": {"n": f"old{d}"}} for d in range(1, 4)]
        others = [{"_id": f"{other}:2026-02-0{d}T00:00:00:y{d}", "userId": other,
                   "timestamp": f"2026-02-0{d}T00:00:00", "responseCost": 9.0, "metadata": {"n": "bob"}}
                  for d in range(1, 6)]
        await kernel.store.put_many(users.USAGE_COLLECTION, older + others)
        for n in range(4):  # this version's entries, newer than all of the above
            await users.charge(kernel, uid, 0.25, {"n": f"new{n}"})
        names = lambda rows: [row["metadata"]["n"] for row in rows]  # noqa: E731
        assert names(await users.usage_history(kernel, uid, limit=100)) == [
            "old1", "old2", "old3", "new0", "new1", "new2", "new3"]
        assert names(await users.usage_history(kernel, uid, limit=5)) == ["old3", "new0", "new1", "new2", "new3"]
        assert names(await users.usage_history(kernel, uid, limit=2)) == ["new2", "new3"]
        assert names(await users.usage_history(kernel, other, limit=3)) == ["bob"] * 3
        assert await users.usage_history(kernel, uid, limit=0) == []
    finally:
        await kernel.close()
