"""The DocumentStore conformance suite, shipped for backend authors.

Use it from a test module::

    from gofannon.store.conformance import DocumentStoreContract

    class TestMyStore(DocumentStoreContract):
        durable = True                       # run the kill-and-reopen test
        factory_path = "my_pkg.store:create"  # factory(settings) -> DocumentStore

        @pytest.fixture
        def store_env(self, tmp_path):       # env the factory's Settings are loaded from
            return {"MY_STORE_PATH": str(tmp_path / "db")}

The ``store`` fixture opens a store from ``factory_path`` and ``store_env``; every test here then runs
against it. Needs pytest-asyncio (auto mode).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from typing import Any, AsyncIterator

import pytest

from gofannon.errors import RevisionConflict
from gofannon.settings import Settings
from gofannon.store import ANY, DocumentStore


def load_factory(path: str) -> Any:
    module, _, attrs = path.partition(":")
    obj: Any = importlib.import_module(module)
    for attr in attrs.split("."):
        obj = getattr(obj, attr)
    return obj


class DocumentStoreContract:
    durable = False
    factory_path = "gofannon.store.memory:MemoryStore"

    @pytest.fixture
    def store_env(self) -> dict[str, str]:
        return {}

    @pytest.fixture
    async def store(self, store_env: dict[str, str]) -> AsyncIterator[DocumentStore]:
        s = load_factory(self.factory_path)(Settings.load(store_env))
        await s.open()
        try:
            yield s
        finally:
            await s.close()

    # -- basic reads and writes ---------------------------------------------------------------------
    async def test_put_then_get_returns_the_document_with_id_and_rev(self, store: DocumentStore) -> None:
        rev = await store.put("things", "a", {"name": "α", "nested": {"n": [1, 2.5, None, True]}})
        doc = await store.get("things", "a")
        assert doc == {"_id": "a", "_rev": rev, "name": "α", "nested": {"n": [1, 2.5, None, True]}}

    async def test_half_a_surrogate_pair_is_kept_as_it_was_written(self, store: DocumentStore) -> None:
        """JSON's ``\\u`` escapes can make text UTF-8 cannot hold (an agent's output, say): it must not fail
        the write, and it reads back as written (a whole pair, the character it is)."""
        odd = {"text": "a\ud800b", "pair": "\U0001F600", "list": ["\udfff"], "k\udc00": 1}
        rev = await store.put("things", "odd", odd)
        assert await store.get("things", "odd") == {"_id": "odd", "_rev": rev, **odd}
        await store.update("things", "odd", lambda d: {**(d or {}), "more": "\ud83d"})
        assert (await store.get("things", "odd"))["more"] == "\ud83d"  # type: ignore[index]

    async def test_get_of_a_missing_document_is_none(self, store: DocumentStore) -> None:
        assert await store.get("things", "nope") is None
        assert await store.get("never-used-collection", "nope") is None

    async def test_returned_documents_are_private_copies(self, store: DocumentStore) -> None:
        await store.put("things", "a", {"tags": ["x"]})
        doc = await store.get("things", "a")
        assert doc is not None
        doc["tags"].append("mutated")
        assert (await store.get("things", "a"))["tags"] == ["x"]  # type: ignore[index]

    async def test_every_write_gives_a_new_revision(self, store: DocumentStore) -> None:
        r1 = await store.put("things", "a", {"v": 1})
        r2 = await store.put("things", "a", {"v": 2})
        assert r1 != r2
        assert (await store.get("things", "a")) == {"_id": "a", "_rev": r2, "v": 2}

    async def test_the_id_argument_wins_over_an_id_in_the_body(self, store: DocumentStore) -> None:
        await store.put("things", "real", {"_id": "fake", "v": 1})
        assert (await store.get("things", "real"))["_id"] == "real"  # type: ignore[index]
        assert await store.get("things", "fake") is None

    # -- revisions ----------------------------------------------------------------------------------
    async def test_create_only_put_conflicts_when_the_document_exists(self, store: DocumentStore) -> None:
        await store.put("things", "a", {"v": 1}, rev=None)
        with pytest.raises(RevisionConflict):
            await store.put("things", "a", {"v": 2}, rev=None)
        assert (await store.get("things", "a"))["v"] == 1  # type: ignore[index]

    async def test_put_with_a_stale_revision_conflicts_and_keeps_the_newer_document(self, store: DocumentStore) -> None:
        r1 = await store.put("things", "a", {"v": 1})
        r2 = await store.put("things", "a", {"v": 2}, rev=r1)
        with pytest.raises(RevisionConflict):
            await store.put("things", "a", {"v": 3}, rev=r1)
        assert (await store.get("things", "a")) == {"_id": "a", "_rev": r2, "v": 2}

    async def test_put_with_a_revision_on_a_missing_document_conflicts(self, store: DocumentStore) -> None:
        with pytest.raises(RevisionConflict):
            await store.put("things", "ghost", {"v": 1}, rev="1-abc")
        assert await store.get("things", "ghost") is None

    async def test_delete(self, store: DocumentStore) -> None:
        rev = await store.put("things", "a", {"v": 1})
        await store.put("things", "b", {"v": 1})
        with pytest.raises(RevisionConflict):
            await store.delete("things", "a", rev="1-stale")
        assert await store.delete("things", "a", rev=rev) is True
        assert await store.get("things", "a") is None
        assert await store.delete("things", "a") is False
        assert await store.delete("things", "b", rev=ANY) is True

    # -- listing and queries ------------------------------------------------------------------------
    async def test_list_is_ordered_by_id_and_honours_limit(self, store: DocumentStore) -> None:
        for i in ["c", "a", "b", "d"]:
            await store.put("things", i, {"i": i})
        await store.put("other", "z", {"i": "z"})
        assert [d["_id"] for d in await store.list("things")] == ["a", "b", "c", "d"]
        assert [d["_id"] for d in await store.list("things", limit=2)] == ["a", "b"]
        assert await store.list("empty") == []

    async def test_find_matches_every_given_field_by_equality(self, store: DocumentStore) -> None:
        await store.put("agents", "1", {"ownerId": "u1", "kind": "x", "n": 1})
        await store.put("agents", "2", {"ownerId": "u1", "kind": "y", "n": 2})
        await store.put("agents", "3", {"ownerId": "u2", "kind": "x", "n": 1})
        await store.put("agents", "4", {"kind": "x", "flag": True, "none": None})
        assert [d["_id"] for d in await store.find("agents", {"ownerId": "u1"})] == ["1", "2"]
        assert [d["_id"] for d in await store.find("agents", {"ownerId": "u1", "kind": "x"})] == ["1"]
        assert [d["_id"] for d in await store.find("agents", {"n": 1})] == ["1", "3"]
        assert [d["_id"] for d in await store.find("agents", {"flag": True})] == ["4"]
        assert [d["_id"] for d in await store.find("agents", {"none": None})] == ["4"]
        assert await store.find("agents", {"ownerId": "nobody"}) == []
        assert [d["_id"] for d in await store.find("agents", {"kind": "x"}, limit=2)] == ["1", "3"]
        assert await store.count("agents", {"kind": "x"}) == 3
        assert await store.count("agents") == 4

    async def test_find_tells_strings_from_numbers(self, store: DocumentStore) -> None:
        await store.put("t", "1", {"v": "1"})
        await store.put("t", "2", {"v": 1})
        assert [d["_id"] for d in await store.find("t", {"v": "1"})] == ["1"]
        assert [d["_id"] for d in await store.find("t", {"v": 1})] == ["2"]

    async def test_collections_lists_the_non_empty_ones(self, store: DocumentStore) -> None:
        await store.put("alpha", "1", {})
        await store.put("beta", "1", {})
        await store.delete("beta", "1")
        names = await store.collections()
        assert "alpha" in names and "beta" not in names

    # -- bulk ---------------------------------------------------------------------------------------
    async def test_bulk_variants(self, store: DocumentStore) -> None:
        revs = await store.put_many("bulk", [{"_id": f"d{i}", "i": i} for i in range(5)])
        assert len(revs) == 5 and len(set(revs)) == 5
        got = await store.get_many("bulk", ["d0", "d4", "missing"])
        assert got["d0"]["i"] == 0 and got["d4"]["i"] == 4 and got["missing"] is None  # type: ignore[index]
        assert await store.delete_many("bulk", ["d0", "d1", "missing"]) == 2
        assert [d["_id"] for d in await store.list("bulk")] == ["d2", "d3", "d4"]

    async def test_latest_reads_the_last_ids_under_a_prefix_oldest_first(self, store: DocumentStore) -> None:
        await store.put_many("hist", [{"_id": f"a:{i:03d}", "who": "a"} for i in range(12)]
                             + [{"_id": f"ab:{i:03d}", "who": "ab"} for i in range(3)]
                             + [{"_id": f"b:{i:03d}", "who": "b"} for i in range(3)])
        got = await store.latest("hist", "a:", 5, {"who": "a"})
        assert [d["_id"] for d in got] == [f"a:{i:03d}" for i in range(7, 12)]
        assert [d["_id"] for d in await store.latest("hist", "b:", 50, {"who": "b"})] == ["b:000", "b:001", "b:002"]
        assert await store.latest("hist", "c:", 5, {"who": "c"}) == []
        assert await store.latest("hist", "a:", 0, {"who": "a"}) == []

    async def test_update_and_put_writes_the_update_and_the_new_documents(self, store: DocumentStore) -> None:
        def bump(doc: dict[str, Any] | None) -> dict[str, Any]:
            doc = doc or {"n": 0}
            doc["n"] += 1
            return doc

        await asyncio.gather(*(store.update_and_put("acct", "u", bump, "entries", [{"_id": f"e{i:03d}", "i": i}])
                               for i in range(50)))
        assert (await store.get("acct", "u"))["n"] == 50  # type: ignore[index]
        assert [d["i"] for d in await store.list("entries")] == list(range(50))
        declined = await store.update_and_put("acct", "u", lambda d: None, "entries", [{"_id": "e999", "i": 999}])
        assert declined is not None and declined["n"] == 50
        assert (await store.get("entries", "e999"))["i"] == 999  # type: ignore[index]

    # -- change stamps (optional) -------------------------------------------------------------------
    async def test_a_documents_stamp_moves_with_every_write_to_it(self, store: DocumentStore) -> None:
        if store.stamp("things", "a") is None:
            pytest.skip("this backend offers no change stamps: callers read documents afresh")
        seen = [store.stamp("things", "a")]

        def moved(what: str) -> None:
            now = store.stamp("things", "a")
            assert now != seen[-1], f"the stamp did not move on {what}"
            seen.append(now)

        await store.put("things", "a", {"n": 1})
        moved("put")
        await store.update("things", "a", lambda d: {**(d or {}), "n": 2})
        moved("update")
        other = store.stamp("history", "h1")
        await store.update_and_put("things", "a", lambda d: {**(d or {}), "n": 3}, "history", [{"_id": "h1"}])
        moved("update_and_put")
        assert store.stamp("history", "h1") != other  # the added document's moved too
        await store.put_many("things", [{"_id": "a", "n": 4}])
        moved("put_many")
        await store.update("things", "a", lambda d: None)  # declined: nothing written, nothing moves
        assert store.stamp("things", "a") == seen[-1]
        await store.delete("things", "a")
        moved("delete")
        await store.put("things", "a", {})
        moved("put")
        await store.delete_many("things", ["a"])
        moved("delete_many")

    async def test_stamps_are_shared_by_every_store_object_on_the_same_data(self, store: DocumentStore,
                                                                            store_env: dict[str, str]) -> None:
        if not self.durable or store.stamp("things", "b") is None:
            pytest.skip("no shared change stamps")
        other = load_factory(self.factory_path)(Settings.load(store_env))  # stands in for another process
        await other.open()
        try:
            before = other.stamp("things", "b")
            await store.put("things", "b", {"v": 1})
            assert other.stamp("things", "b") != before
            before = store.stamp("things", "b")
            await other.delete("things", "b")
            assert store.stamp("things", "b") != before
        finally:
            await other.close()

    # -- concurrency --------------------------------------------------------------------------------
    async def test_concurrent_updates_lose_no_increment(self, store: DocumentStore) -> None:
        def bump(doc: dict[str, Any] | None) -> dict[str, Any]:
            doc = doc or {"n": 0, "log": []}
            doc["n"] += 1
            return doc

        await asyncio.gather(*(store.update("counters", "c", bump) for _ in range(200)))
        assert (await store.get("counters", "c"))["n"] == 200  # type: ignore[index]

    async def test_update_can_decline_to_write(self, store: DocumentStore) -> None:
        rev = await store.put("t", "a", {"v": 1})
        result = await store.update("t", "a", lambda d: None)
        assert result is not None and result["_rev"] == rev
        assert await store.update("t", "missing", lambda d: None) is None

    async def test_racing_writers_on_one_revision_only_one_wins(self, store: DocumentStore) -> None:
        rev = await store.put("t", "a", {"writer": None})
        results = await asyncio.gather(
            *(store.put("t", "a", {"writer": i}, rev=rev) for i in range(20)), return_exceptions=True
        )
        winners = [r for r in results if isinstance(r, str)]
        assert len(winners) == 1
        assert all(isinstance(r, RevisionConflict) for r in results if not isinstance(r, str))
        doc = await store.get("t", "a")
        assert doc is not None and doc["_rev"] == winners[0]

    async def test_racing_creators_only_one_wins(self, store: DocumentStore) -> None:
        results = await asyncio.gather(
            *(store.put("t", "new", {"writer": i}, rev=None) for i in range(20)), return_exceptions=True
        )
        assert sum(isinstance(r, str) for r in results) == 1

    # -- durability ---------------------------------------------------------------------------------
    async def test_committed_writes_survive_a_killed_process(self, store_env: dict[str, str]) -> None:
        if not self.durable:
            pytest.skip(f"{self.factory_path} keeps nothing across processes")
        script = textwrap.dedent(
            f"""
            import asyncio, json, sys, time
            from gofannon.settings import Settings
            from gofannon.store.conformance import load_factory
            async def main():
                s = load_factory({self.factory_path!r})(Settings.load(json.loads(sys.argv[1])))
                await s.open()
                for i in range(50):
                    await s.put("durable", f"d{{i:02d}}", {{"i": i}})
                await s.update("durable", "d00", lambda d: {{**d, "updated": True}})
                print("written", flush=True)
                time.sleep(60)
            asyncio.run(main())
            """
        )
        env = {**os.environ, **store_env}
        proc = subprocess.Popen(
            [sys.executable, "-c", script, json.dumps(store_env)], stdout=subprocess.PIPE, env=env
        )
        try:
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)  # type: ignore[union-attr]
            assert line.strip() == b"written"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        reopened = load_factory(self.factory_path)(Settings.load(store_env))
        await reopened.open()
        try:
            docs = await reopened.list("durable")
            assert [d["i"] for d in docs] == list(range(50))
            assert docs[0]["updated"] is True
        finally:
            await reopened.close()
