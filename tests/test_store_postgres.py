"""The postgres storage plugin against a real PostgreSQL server the tests start."""

from __future__ import annotations

from typing import Any

import pytest
from fakes.postgres import PostgresServer
from gofannon_plugins.storage.postgres.store import TABLE, PostgresStore

from gofannon.settings import Settings
from gofannon.store.conformance import DocumentStoreContract


class TestPostgresStore(DocumentStoreContract):
    durable = True
    factory_path = "gofannon_plugins.storage.postgres.store:PostgresStore.from_settings"

    @pytest.fixture
    def store_env(self, postgres_url: str) -> dict[str, str]:
        return {"GOFANNON_STORAGE": "postgres", "DATABASE_URL": postgres_url, "GOFANNON_DATABASE_POOL_SIZE": "5"}


async def test_a_database_server_restart_loses_nothing_committed_and_the_store_keeps_working(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    store = PostgresStore(postgres_url, pool_size=3)
    await store.open()
    try:
        for i in range(20):
            await store.put("agents", f"a{i:02d}", {"ownerId": "alice", "i": i})
        await store.update("users", "alice", lambda d: {"spend": 1.5})
        postgres_server.restart("immediate")  # no shutdown checkpoint: recovery replays the WAL
        assert [d["i"] for d in await store.find("agents", {"ownerId": "alice"})] == list(range(20))
        assert (await store.get("users", "alice"))["spend"] == 1.5  # type: ignore[index]
        await store.put("agents", "after", {"ownerId": "alice"})
        assert await store.count("agents") == 21
    finally:
        await store.close()


async def test_documents_come_back_with_their_keys_in_the_order_they_were_written(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        doc = {"name": "n", "description": "d", "code": "c", "friendlyName": "f", "_id": "x", "_rev": None,
               "createdAt": "t", "updatedAt": "t"}
        rev = await store.put("agents", "x", doc)
        got = await store.get("agents", "x")
        assert list(got) == list(doc)  # type: ignore[arg-type]
        assert got["_rev"] == rev  # type: ignore[index]
    finally:
        await store.close()


async def test_awkward_values_and_field_names_are_stored_and_queried_exactly(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        await store.put("t", "nul", {"text": "a\x00b", "it's": "quote'd", "tags": ["x", "y"]})
        await store.put("t", "sub", {"tags": ["x"]})
        assert (await store.get("t", "nul"))["text"] == "a\x00b"  # type: ignore[index]
        assert [d["_id"] for d in await store.find("t", {"it's": "quote'd"})] == ["nul"]
        assert [d["_id"] for d in await store.find("t", {"tags": ["x"]})] == ["sub"]
        assert await store.count("t", {"tags": ["x"]}) == 1
    finally:
        await store.close()


async def test_ids_sort_bytewise_like_the_other_stores(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        for i in ["b", "B", "a", "_x", "Z", "é"]:
            await store.put("t", i, {})
        assert [d["_id"] for d in await store.list("t")] == sorted(["b", "B", "a", "_x", "Z", "é"])
    finally:
        await store.close()


async def test_the_schema_is_created_once_and_reopening_migrates_nothing(postgres_url: str) -> None:
    first = PostgresStore(postgres_url)
    await first.open()
    await first.put("t", "a", {"v": 1})
    second = PostgresStore(postgres_url)
    await second.open()
    try:
        assert await second.migrate() == 2  # the schema's version: both migrations applied once
        indexes = await second._run(lambda c: c.fetch("SELECT indexname FROM pg_indexes WHERE tablename=$1", TABLE))
        assert {f"{TABLE}_uid", f"{TABLE}_workspaceid", f"{TABLE}_ownerid"} <= {r["indexname"] for r in indexes}
        assert (await second.get("t", "a"))["v"] == 1  # type: ignore[index]
    finally:
        await first.close()
        await second.close()


async def test_the_kernel_serves_the_api_on_postgres(serve: Any, postgres_url: str) -> None:
    client = await serve(GOFANNON_STORAGE="postgres", DATABASE_URL=postgres_url)
    await client.login("alice")
    async with client.get("/auth/me") as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["uid"]
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        assert "user_sessions" in await store.collections()
    finally:
        await store.close()


def test_missing_database_url_says_which_setting_to_set() -> None:
    with pytest.raises(RuntimeError, match="DATABASE_URL"):
        PostgresStore.from_settings(Settings.load({"GOFANNON_STORAGE": "postgres"}))


async def test_text_postgres_cannot_hold_is_a_clear_400_not_a_crash(postgres_url: str) -> None:
    from gofannon.errors import BadRequest

    store = PostgresStore(postgres_url)
    await store.open()
    try:
        with pytest.raises(BadRequest):
            await store.get("agents", "nul\x00id")
        with pytest.raises(BadRequest):  # an id is a column of its own: no JSON escape to keep it in
            await store.get("agents", "half\ud800id")
        await store.put("t", "a", {"text": "\ud800"})  # in a document, half a surrogate pair is kept (as its escape)
        assert (await store.get("t", "a"))["text"] == "\ud800"  # type: ignore[index]
        with pytest.raises(BadRequest):
            await store.find("t", {"namespace": "a\x00b"})
        await store.put("t", "ok", {"v": 1})
        assert (await store.get("t", "ok"))["v"] == 1  # type: ignore[index]
    finally:
        await store.close()


async def test_several_processes_starting_at_once_on_a_new_database_all_come_up(postgres_url: str) -> None:
    import asyncio

    stores = [PostgresStore(postgres_url, pool_size=2) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        await stores[0].put("t", "a", {"v": 1})
        assert [(await s.get("t", "a"))["v"] for s in stores] == [1, 1, 1, 1]  # type: ignore[index]
    finally:
        await asyncio.gather(*(s.close() for s in stores))
