"""The DocumentStore conformance suite against every bundled backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from gofannon.store.conformance import DocumentStoreContract


class TestMemoryStore(DocumentStoreContract):
    factory_path = "gofannon.store.memory:MemoryStore"


class TestSQLiteStore(DocumentStoreContract):
    durable = True
    factory_path = "gofannon_plugins.storage.sqlite.store:SQLiteStore.from_settings"

    @pytest.fixture
    def store_env(self, tmp_path: Path) -> dict[str, str]:
        return {"GOFANNON_DATA_DIR": str(tmp_path / "data")}


class TestRedisStore(DocumentStoreContract):
    durable = True
    factory_path = "gofannon_plugins.storage.redis.store:RedisStore.from_settings"

    @pytest.fixture
    def store_env(self, redis_url: str) -> dict[str, str]:
        return {"REDIS_URL": redis_url, "GOFANNON_REDIS_PREFIX": "test:"}


async def test_two_redis_stores_racing_on_one_counter_lose_no_increment(redis_url: str) -> None:
    """Two store objects stand in for two processes: their updates meet only in Redis."""
    import asyncio

    from gofannon_plugins.storage.redis.store import RedisStore

    from gofannon.settings import Settings

    stores = [RedisStore.from_settings(Settings.load({"REDIS_URL": redis_url})) for _ in range(2)]
    for s in stores:
        await s.open()
    try:
        def bump(doc: dict | None) -> dict:
            doc = doc or {"n": 0}
            doc["n"] += 1
            return doc

        await asyncio.gather(*(stores[i % 2].update("counters", "c", bump) for i in range(100)))
        assert (await stores[0].get("counters", "c"))["n"] == 100  # type: ignore[index]
        assert await stores[1].collections() == ["counters"]
    finally:
        for s in stores:
            await s.close()
