"""The data store service as agents see it through the broker: values, namespaces, access tracking, ops log."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable

import pytest

from gofannon.errors import BadRequest, PayloadTooLarge
from gofannon.kernel import Kernel
from gofannon.services import data_store as ds


@pytest.fixture
async def kernel(make_settings: Callable[..., Any]) -> AsyncIterator[Kernel]:
    """A kernel with only its (real SQLite) store open: the data store needs nothing else."""
    k = Kernel(make_settings(GOFANNON_DATA_STORE_MAX_VALUE_BYTES="2000"))
    k.store = k.open_store()
    await k.store.open()
    try:
        yield k
    finally:
        await k.store.close()


async def test_a_value_set_by_one_agent_is_read_back_by_another(kernel: Kernel) -> None:
    await ds.set(kernel, "u1", "default", "greeting", {"text": "hi"}, agent_name="writer")
    assert await ds.get(kernel, "u1", "default", "greeting", agent_name="reader") == {"text": "hi"}
    rec = await ds.get_record(kernel, "u1", "default", "greeting")
    assert rec is not None
    assert rec["_id"] == "u1:default:" + "Z3JlZXRpbmc="
    assert rec["createdByAgent"] == "writer" and rec["lastAccessedByAgent"] == "reader"
    assert rec["accessCount"] == 1 and rec["lastAccessedAt"] is not None
    assert rec["userId"] == "u1" and rec["namespace"] == "default" and rec["key"] == "greeting"


async def test_overwriting_keeps_creation_fields_and_merges_metadata(kernel: Kernel) -> None:
    first = await ds.set(kernel, "u1", "ns", "k", 1, {"a": 1}, agent_name="one")
    second = await ds.set(kernel, "u1", "ns", "k", 2, {"b": 2}, agent_name="two")
    assert second["value"] == 2
    assert second["metadata"] == {"a": 1, "b": 2}
    assert second["createdByAgent"] == "one" and second["lastAccessedByAgent"] == "two"
    assert second["createdAt"] == first["createdAt"] and second["updatedAt"] >= first["updatedAt"]


async def test_users_never_see_each_others_data(kernel: Kernel) -> None:
    await ds.set(kernel, "u1", "shared", "k", "mine")
    assert await ds.get(kernel, "u2", "shared", "k", "nothing") == "nothing"
    assert await ds.list_namespaces(kernel, "u2") == []
    assert await ds.clear(kernel, "u2", "shared") == 0
    assert await ds.get(kernel, "u1", "shared", "k") == "mine"


async def test_listing_is_sorted_and_prefix_filtered(kernel: Kernel) -> None:
    await ds.set_many(kernel, "u1", "files", {"src/b.py": "b", "src/a.py": "a", "README": "r"})
    await ds.set(kernel, "u1", "summary", "x", 1)
    assert await ds.list_keys(kernel, "u1", "files") == ["README", "src/a.py", "src/b.py"]
    assert await ds.list_keys(kernel, "u1", "files", "src/") == ["src/a.py", "src/b.py"]
    assert await ds.list_namespaces(kernel, "u1") == ["files", "summary"]
    assert await ds.get_all(kernel, "u1", "files") == {"README": "r", "src/a.py": "a", "src/b.py": "b"}
    assert await ds.get_many(kernel, "u1", "files", ["README", "nope"]) == {"README": "r"}


async def test_delete_delete_many_and_clear_report_what_they_removed(kernel: Kernel) -> None:
    await ds.set_many(kernel, "u1", "n", {"a": 1, "b": 2, "c": 3, "d": 4})
    assert await ds.delete(kernel, "u1", "n", "a") is True
    assert await ds.delete(kernel, "u1", "n", "a") is False
    assert await ds.delete_many(kernel, "u1", "n", ["b", "c", "zz"]) == 2
    assert await ds.clear(kernel, "u1", "n") == 1
    assert await ds.list_keys(kernel, "u1", "n") == []


async def test_concurrent_reads_count_every_access(kernel: Kernel) -> None:
    await ds.set(kernel, "u1", "default", "hot", 0)
    await asyncio.gather(*(ds.get(kernel, "u1", "default", "hot", agent_name=f"a{i}") for i in range(20)))
    rec = await ds.get_record(kernel, "u1", "default", "hot")
    assert rec is not None and rec["accessCount"] == 20


async def test_namespace_stats_count_records_size_and_agents(kernel: Kernel) -> None:
    await ds.set(kernel, "u1", "n", "a", "xy", agent_name="alpha")
    await ds.set(kernel, "u1", "n", "b", [1, 2], agent_name="beta")
    stats = await ds.namespace_stats(kernel, "u1", "n")
    assert stats["namespace"] == "n" and stats["recordCount"] == 2
    assert stats["sizeBytes"] == len('"xy"') + len("[1,2]")
    assert stats["agents"] == ["alpha", "beta"] and stats["updatedAt"]
    empty = await ds.namespace_stats(kernel, "u1", "nothing-here")
    assert empty == {"namespace": "nothing-here", "recordCount": 0, "sizeBytes": 0, "agents": [], "updatedAt": None}
    total = await ds.all_namespace_stats(kernel, "u1")
    assert [s["namespace"] for s in total["namespaces"]] == ["n"]
    assert total["totalRecordCount"] == 2 and total["totalSizeBytes"] == stats["sizeBytes"]


async def test_bad_keys_and_oversized_values_are_refused_with_a_reason(kernel: Kernel) -> None:
    with pytest.raises(BadRequest, match="Key must be"):
        await ds.set(kernel, "u1", "n", "", 1)
    with pytest.raises(BadRequest, match="Namespace must be"):
        await ds.set(kernel, "u1", "", "k", 1)
    with pytest.raises(PayloadTooLarge, match="limit 2000 bytes"):
        await ds.set(kernel, "u1", "n", "big", "x" * 5000)
    with pytest.raises(BadRequest, match="JSON"):
        await ds.set(kernel, "u1", "n", "k", {1, 2})
    with pytest.raises(PayloadTooLarge):
        await ds.set_many(kernel, "u1", "n", {"ok": 1, "big": "x" * 5000})
    assert await ds.list_keys(kernel, "u1", "n") == []  # nothing of a refused batch is written


async def test_perform_runs_proxy_methods_and_logs_each_operation(kernel: Kernel) -> None:
    log: list[dict[str, Any]] = []

    async def op(name: str, ns: str = "default", **args: Any) -> Any:
        return await ds.perform(kernel, "u1", name, args, namespace=ns, agent_name="bot", ops_log=log)

    assert await op("set", key="k", value="v" * 300) is None
    assert await op("get", key="k") == "v" * 300
    assert await op("get", key="missing", default=7) == 7
    assert await op("set_many", ns="other", items={f"k{i}": i for i in range(12)}) == 12
    assert await op("get_many", ns="other", keys=["k1", "k2", "zz"]) == {"k1": 1, "k2": 2}
    assert await op("list_keys", ns="other", prefix="k1") == ["k1", "k10", "k11"]
    assert await op("list_namespaces") == ["default", "other"]
    assert len(await op("get_all", ns="other")) == 12
    assert await op("delete_many", ns="other", keys=["k1", "k2"]) == 2
    assert await op("delete", key="k") is True
    assert await op("clear", ns="other") == 10

    ops = [e["op"] for e in log]
    assert ops == ["set", "get", "get", "set_many", "get_many", "list_keys", "list_namespaces", "get_all",
                   "delete_many", "delete", "clear"]
    for e in log:
        assert e["agent"] == "bot" and e["ts"] and e["namespace"] in ("default", "other")
    assert log[0]["key"] == "k" and log[0]["valuePreview"] == '"' + "v" * 199 + "…"
    assert log[1]["found"] is True and log[2] == {**log[2], "found": False, "valuePreview": "7"}
    assert log[3]["count"] == 12 and len(log[3]["keys"]) == 10
    assert log[4]["requested"] == 3 and log[4]["found"] == 2
    assert log[5]["prefix"] == "k1" and log[5]["count"] == 3
    assert log[6]["count"] == 2 and log[7]["count"] == 12
    assert log[8] == {**log[8], "requested": 2, "count": 2, "keys": ["k1", "k2"]}
    assert log[9]["found"] is True and log[10]["count"] == 10


async def test_perform_refuses_unknown_operations(kernel: Kernel) -> None:
    with pytest.raises(BadRequest, match="Unknown data_store operation"):
        await ds.perform(kernel, "u1", "drop_database", {})
