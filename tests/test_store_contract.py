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


async def test_sqlite_indexes_hold_only_documents_that_have_the_field(tmp_path: Path) -> None:
    """A database made by an earlier version (a full index per queried field: every document in all five) opens
    with partial indexes instead: a document lacking a field costs no index entry when written, and finds by
    those fields still answer exactly."""
    import json
    import sqlite3

    from gofannon_plugins.storage.sqlite.store import INDEXED_FIELDS, SQLiteStore

    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE docs (coll TEXT NOT NULL, id TEXT NOT NULL, rev TEXT NOT NULL, body TEXT NOT NULL,"
                " PRIMARY KEY (coll, id)) WITHOUT ROWID")
    for field in INDEXED_FIELDS:
        old.execute(f"CREATE INDEX docs_{field} ON docs (coll, json_extract(body, '$.{field}'))")
    old.execute("INSERT INTO docs VALUES ('agents', 'a1', '1-x', ?)",
                (json.dumps({"_id": "a1", "_rev": "1-x", "ownerId": "alice"}),))
    old.commit()
    old.close()

    store = SQLiteStore(path)
    await store.open()
    try:
        await store.put("usage", "e1", {"userId": "alice", "responseCost": 0.5})
        await store.put("agents", "a2", {"ownerId": "bob"})
        assert [d["_id"] for d in await store.find("agents", {"ownerId": "alice"})] == ["a1"]
        assert [d["_id"] for d in await store.find("usage", {"userId": "alice"})] == ["e1"]
    finally:
        await store.close()
    db = sqlite3.connect(path)
    names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='index' AND name LIKE 'docs_%'")}
    assert names == {f"docs_{field}_set" for field in INDEXED_FIELDS}
    # Entries per index: the owner index holds the two agents, the user index the one usage entry, the rest none.
    def entries(field: str) -> int:
        return db.execute(f"SELECT COUNT(*) FROM docs INDEXED BY docs_{field}_set WHERE coll IN ('agents', 'usage')"
                          f" AND json_extract(body, '$.{field}') IS NOT NULL").fetchone()[0]
    assert {field: entries(field) for field in INDEXED_FIELDS} == {
        "ownerId": 2, "agentId": 0, "userId": 1, "uid": 0, "workspaceId": 0, "namespace": 0, "status": 0}
    db.close()


async def test_sqlite_finds_by_a_queried_field_read_its_index_not_the_collection(tmp_path: Path) -> None:
    """A find on a field services query by (an owner's agents, an agent's deployments, running runs) reads the
    field's index, so its cost follows what it returns, not how big the collection is; the answer stays exact
    (1 and "1" distinct) and ordered by id."""
    from gofannon_plugins.storage.sqlite.store import INDEXED_FIELDS, SQLiteStore

    store = SQLiteStore(tmp_path / "plans.sqlite3")
    await store.open()
    try:
        docs = [{"_id": f"d{i:04d}", **{f: f"v{i % 7}" for f in INDEXED_FIELDS}, "n": i} for i in range(300)]
        docs += [{"_id": "t1", "ownerId": 1}, {"_id": "t3", "ownerId": "1"}]
        await store.put_many("things", docs)
        statements: list[str] = []
        assert store._conn is not None
        store._conn.set_trace_callback(statements.append)
        for field in INDEXED_FIELDS:
            found = await store.find("things", {field: "v3", "n": 10})
            assert [d["_id"] for d in found] == ["d0010"]
            found = await store.find("things", {field: "v3"})
            assert [d["_id"] for d in found] == [f"d{i:04d}" for i in range(300) if i % 7 == 3]
        assert [d["_id"] for d in await store.find("things", {"ownerId": 1})] == ["t1"]
        assert [d["_id"] for d in await store.find("things", {"ownerId": "1"})] == ["t3"]
        # Two indexed fields: the more selective one's index (an agent's runs that are done: the agent's).
        await store.find("things", {"status": "v1", "agentId": "v1"})
        store._conn.set_trace_callback(None)
        finds = [s for s in statements if s.startswith("SELECT body FROM docs")]
        plans = [" ".join(str(row[3]) for row in store._conn.execute(f"EXPLAIN QUERY PLAN {s}")) for s in finds]
        assert all("USING INDEX docs_" in plan for plan in plans), plans
        assert "docs_agentId_set" in plans[-1]
    finally:
        await store.close()
