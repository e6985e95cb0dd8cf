"""Charging is atomic: concurrent charges on one user lose no update, on SQLite and on Redis, within one
process and across two processes sharing the store; the allowance gate answers 402 when spend runs out."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable

import pytest

from gofannon.auth import Identity
from gofannon.errors import PaymentRequired
from gofannon.kernel import Kernel
from gofannon.services import users

UID = "dev_stub:alice"


@pytest.fixture(params=["sqlite", "redis"])
async def kernels(request: Any, make_settings: Callable[..., Any]) -> AsyncIterator[Callable[[], Any]]:
    """``await open_kernel()``: a started kernel on the parametrised storage; several share one store."""
    env = {"GOFANNON_STORAGE": request.param}
    if request.param == "redis":
        env["REDIS_URL"] = request.getfixturevalue("redis_url")
    opened: list[Kernel] = []

    async def open_kernel() -> Kernel:
        kernel = Kernel(make_settings(**env))
        await kernel.open()
        opened.append(kernel)
        return kernel

    yield open_kernel
    for kernel in reversed(opened):
        await kernel.close()


async def test_200_concurrent_charges_on_one_user_lose_no_update(kernels: Any) -> None:
    kernel = await kernels()
    await users.get_or_create_user(kernel, UID)
    await asyncio.gather(*[users.charge(kernel, UID, 0.25, {"i": i}) for i in range(200)])
    user = await users.get_or_create_user(kernel, UID)
    assert user["usageInfo"]["spendRemaining"] == pytest.approx(50.0)
    assert len(user["usageInfo"]["usage"]) == users.RECENT_USAGE  # the wire shows the recent entries
    history = await users.usage_history(kernel, UID, limit=1000)
    assert sorted(e["metadata"]["i"] for e in history) == list(range(200))  # the full history is elsewhere


async def test_two_processes_charging_the_same_user_lose_no_update(kernels: Any) -> None:
    first, second = await kernels(), await kernels()
    await asyncio.gather(*[users.charge(k, UID, 0.5, None) for k in (first, second) for _ in range(60)])
    user = await users.get_or_create_user(second, UID)
    assert user["usageInfo"]["spendRemaining"] == pytest.approx(40.0)


async def test_concurrent_first_visits_create_one_user(kernels: Any) -> None:
    kernel = await kernels()
    created = await asyncio.gather(*[users.get_or_create_user(kernel, "dev_stub:newbie") for _ in range(20)])
    assert len({u["createdAt"] for u in created}) == 1


async def test_the_allowance_gate_refuses_once_spend_is_exhausted(kernels: Any) -> None:
    kernel = await kernels()
    await users.require_allowance(kernel, UID)  # a new user has the default allowance
    await users.charge(kernel, UID, 99.5)
    with pytest.raises(PaymentRequired):
        await users.require_allowance(kernel, UID)
    user = await users.charge(kernel, UID, 5.0)
    assert user["usageInfo"]["spendRemaining"] == 0.0  # never below zero


async def test_the_gate_opens_again_after_the_reset_date_passes(kernels: Any) -> None:
    kernel = await kernels()
    await users.admin_update(kernel, UID, monthly_allowance=10.0, allowance_reset_date=1000.0, spend_remaining=0.5)
    await users.require_allowance(kernel, UID)  # 1970 + 1 s has passed: reset to 10 and admitted
    user = await users.get_or_create_user(kernel, UID)
    assert user["usageInfo"]["spendRemaining"] == 10.0


async def test_recent_usage_shows_the_latest_entries_since_the_last_reset(kernels: Any) -> None:
    kernel = await kernels()
    for i in range(3):
        await users.charge(kernel, UID, 0.1, {"before": i})
    cleared = await users.reset_allowance(kernel, Identity(uid=UID, provider_type="dev_stub"))
    assert cleared["usageInfo"]["usage"] == [] and cleared["usageInfo"]["spendRemaining"] == 100.0
    for i in range(60):
        await users.charge(kernel, UID, 0.1, {"after": i})
    user = await users.get_or_create_user(kernel, UID)
    shown = user["usageInfo"]["usage"]
    assert [e["metadata"]["after"] for e in shown] == list(range(10, 60))  # the last 50, oldest first
    assert all(set(e) == {"timestamp", "responseCost", "metadata"} for e in shown)
    assert "usageClearedAt" not in user  # internal bookkeeping stays off the wire
    # the full history still has every entry, the ones before the reset included
    assert len(await users.usage_history(kernel, UID, limit=1000)) == 63


async def test_one_users_usage_never_shows_in_anothers(kernels: Any) -> None:
    kernel = await kernels()
    # ids of one user's entries must not fall under another's prefix, even when one uid extends the other
    await users.charge(kernel, "dev_stub:al", 1.0, {"who": "al"})
    await users.charge(kernel, "dev_stub:al:ice", 2.0, {"who": "al:ice"})
    first = await users.get_or_create_user(kernel, "dev_stub:al")
    second = await users.get_or_create_user(kernel, "dev_stub:al:ice")
    assert [e["metadata"]["who"] for e in first["usageInfo"]["usage"]] == ["al"]
    assert [e["metadata"]["who"] for e in second["usageInfo"]["usage"]] == ["al:ice"]


async def test_entries_kept_in_an_older_user_document_are_shown_before_new_ones(kernels: Any) -> None:
    kernel = await kernels()
    await users.get_or_create_user(kernel, UID)

    def older_layout(doc: Any) -> Any:
        doc["usageInfo"]["usage"] = [{"timestamp": "2026-01-01T00:00:00.000000", "responseCost": 0.5,
                                      "metadata": {"old": True}}]
        return doc

    await kernel.store.update(users.COLLECTION, UID, older_layout)
    await users.charge(kernel, UID, 0.25, {"old": False})
    shown = (await users.get_or_create_user(kernel, UID))["usageInfo"]["usage"]
    assert [e["metadata"]["old"] for e in shown] == [True, False]
