"""The data-store viewer over HTTP: what a signed-in user sees and can change, and only their own."""

from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator, Callable
from urllib.parse import quote

import aiohttp

from gofannon.services import data_store as ds
from gofannon.web.keys import KERNEL


def rec_path(ns: str, key: str | None = None) -> str:
    path = "/data-store/namespaces/" + quote(ns, safe="")
    return path if key is None else path + "/records/" + quote(key, safe="")


async def seed(client: Any, uid: str) -> None:
    """Records written the way agents write them (through the service, as the broker does)."""
    kernel = client.server.app[KERNEL]
    await ds.set(kernel, uid, "files:repo/x", "src/main.py", "print('hi')", {"type": "code"}, agent_name="reader")
    await ds.set(kernel, uid, "files:repo/x", "README", "# readme", agent_name="writer")
    await ds.set(kernel, uid, "default", "count", 3, agent_name="writer")


async def test_namespace_list_shows_counts_sizes_and_agents(serve: Callable[..., Any]) -> None:
    client = await serve()
    await client.login("alice")
    await seed(client, await uid_of(client))
    async with client.get("/data-store/namespaces") as r:
        assert r.status == 200
        body = await r.json()
    names = [n["namespace"] for n in body["namespaces"]]
    assert names == ["default", "files:repo/x"]
    files = body["namespaces"][1]
    assert files["recordCount"] == 2 and files["agents"] == ["reader", "writer"]
    assert files["sizeBytes"] == len('"print(\'hi\')"') + len('"# readme"') and files["updatedAt"]
    assert body["totalRecordCount"] == 3
    assert body["totalSizeBytes"] == files["sizeBytes"] + body["namespaces"][0]["sizeBytes"]


async def uid_of(client: Any) -> str:
    async with client.get("/auth/me") as r:
        assert r.status == 200
        return str((await r.json())["uid"])


async def test_one_namespace_and_its_records_with_slashes_in_names(serve: Callable[..., Any]) -> None:
    client = await serve()
    await client.login("alice")
    await seed(client, await uid_of(client))
    async with client.get(rec_path("files:repo/x")) as r:
        assert r.status == 200
        stats = await r.json()
    assert stats["namespace"] == "files:repo/x" and stats["recordCount"] == 2
    async with client.get(rec_path("files:repo/x") + "/records") as r:
        assert r.status == 200
        records = await r.json()
    assert [x["key"] for x in records] == ["README", "src/main.py"]
    main = records[1]
    assert main["value"] == "print('hi')" and main["metadata"] == {"type": "code"}
    assert main["createdByAgent"] == "reader" and main["accessCount"] == 0 and main["_id"]
    async with client.get(rec_path("files:repo/x", "src/main.py")) as r:
        assert r.status == 200
        assert (await r.json())["value"] == "print('hi')"
    async with client.get(rec_path("empty-one")) as r:
        assert r.status == 200
        assert await r.json() == {"namespace": "empty-one", "recordCount": 0, "sizeBytes": 0, "agents": [],
                                  "updatedAt": None}


async def test_editing_and_deleting_a_record(serve: Callable[..., Any]) -> None:
    client = await serve()
    await client.login("alice")
    await seed(client, await uid_of(client))
    async with client.put(rec_path("files:repo/x", "src/main.py"), json={"value": {"edited": True}}) as r:
        assert r.status == 200
        saved = await r.json()
    assert saved["value"] == {"edited": True} and saved["metadata"] == {"type": "code"}
    assert saved["createdByAgent"] == "reader"
    async with client.put(rec_path("new-ns", "fresh key"), json={"value": "v", "metadata": {"type": "note"}}) as r:
        assert r.status == 200
        assert (await r.json())["key"] == "fresh key"
    async with client.get(rec_path("new-ns", "fresh key")) as r:
        assert (await r.json())["metadata"] == {"type": "note"}

    async with client.delete(rec_path("files:repo/x", "src/main.py")) as r:
        assert r.status == 204
    async with client.get(rec_path("files:repo/x", "src/main.py")) as r:
        assert r.status == 404
        assert (await r.json())["detail"] == "Record 'src/main.py' not found in 'files:repo/x'"
    async with client.delete(rec_path("files:repo/x", "src/main.py")) as r:
        assert r.status == 404
        assert (await r.json())["detail"] == "Record 'src/main.py' not found in 'files:repo/x'"


async def test_deleting_a_namespace_reports_how_many_records_went(serve: Callable[..., Any]) -> None:
    client = await serve()
    await client.login("alice")
    await seed(client, await uid_of(client))
    async with client.delete(rec_path("files:repo/x")) as r:
        assert r.status == 200
        assert await r.json() == {"namespace": "files:repo/x", "deletedCount": 2}
    async with client.get("/data-store/namespaces") as r:
        assert [n["namespace"] for n in (await r.json())["namespaces"]] == ["default"]


async def test_another_users_namespaces_are_invisible_and_untouchable(serve: Callable[..., Any]) -> None:
    client = await serve()
    await client.login("alice")
    await seed(client, await uid_of(client))
    async with second_browser(client) as other:
        await bob_sees_nothing_of_alice(other)
    async with client.get(rec_path("default", "count")) as r:
        assert (await r.json())["value"] == 3  # alice's record is untouched by bob's write


async def bob_sees_nothing_of_alice(other: Any) -> None:
    await other.login("bob")
    async with other.get("/data-store/namespaces") as r:
        assert await r.json() == {"namespaces": [], "totalRecordCount": 0, "totalSizeBytes": 0}
    async with other.get(rec_path("files:repo/x") + "/records") as r:
        assert await r.json() == []
    async with other.get(rec_path("default", "count")) as r:
        assert r.status == 404
    async with other.delete(rec_path("files:repo/x")) as r:
        assert await r.json() == {"namespace": "files:repo/x", "deletedCount": 0}
    async with other.put(rec_path("default", "count"), json={"value": 99}) as r:
        assert r.status == 200


@contextlib.asynccontextmanager
async def second_browser(client: Any) -> AsyncIterator[Any]:
    """A second browser (its own cookie jar) against the same server."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield type(client)(client.server, session)


async def test_bad_input_gets_a_clear_4xx(serve: Callable[..., Any]) -> None:
    client = await serve(GOFANNON_DATA_STORE_MAX_VALUE_BYTES="100")
    await client.login("alice")
    async with client.put(rec_path("n", "k"), json={"metadata": {}}) as r:
        assert r.status == 422
        assert (await r.json())["detail"][0]["loc"] == ["body", "value"]
    async with client.put(rec_path("n", "k"), data=b"{not json", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 422
    async with client.put(rec_path("n", "k"), json={"value": "x" * 500}) as r:
        assert r.status == 413
        assert "limit 100 bytes" in (await r.json())["detail"]
    async with client.put(rec_path("n", "k"), json={"value": 1, "metadata": "nope"}) as r:
        assert r.status == 422
    async with client.get(rec_path("n", "k" * 2000)) as r:
        assert r.status == 400
        assert "Key is too long" in (await r.json())["detail"]


async def test_the_viewer_needs_a_signed_in_user(serve: Callable[..., Any]) -> None:
    client = await serve()
    for method, path in [("GET", "/data-store/namespaces"), ("GET", rec_path("default")),
                         ("GET", rec_path("default") + "/records"), ("DELETE", rec_path("default")),
                         ("PUT", rec_path("default", "k")), ("GET", rec_path("default", "k"))]:
        async with client.request(method, path, json={"value": 1}) as r:
            assert r.status == 401, (method, path)
            assert r.headers["X-Auth-Reason"] == "not_authenticated"
