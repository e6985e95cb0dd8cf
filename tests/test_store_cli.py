"""``gofannon store copy``: an operator moves every document from one store to another."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from gofannon.store.cli import opened_store

REPO = Path(__file__).resolve().parent.parent

SAMPLE: dict[str, list[dict[str, Any]]] = {
    "users": [{"_id": "alice", "usageInfo": {"spendRemaining": 98.5, "usage": []}, "basicInfo": {"email": "a@x"}}],
    "agents": [{"_id": f"agent-{i:03d}", "name": f"A{i}", "ownerId": "alice", "code": "async def run(**kw): ..."}
               for i in range(120)],
    "deployments": [{"_id": "hello", "agentId": "agent-001", "ownerId": "alice"}],
    "agent_data_store": [{"_id": "alice:notes:a2V5", "userId": "alice", "namespace": "notes", "key": "key",
                          "value": {"nested": ["ünïcode", 1.5, None, True]}}],
    "kernel_secrets": [{"_id": "master", "key": "c2VjcmV0"}],
}


def gofannon(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gofannon", *args], capture_output=True, text=True, timeout=120, check=False, cwd=str(REPO),
        env={**os.environ, "APP_ENV": "test", **(env or {})},
    )


async def fill(spec: str, data: dict[str, list[dict[str, Any]]] = SAMPLE) -> None:
    async with opened_store(spec) as store:
        for coll, docs in data.items():
            await store.put_many(coll, docs)


async def contents(spec: str) -> dict[str, list[dict[str, Any]]]:
    async with opened_store(spec) as store:
        return {c: [{k: v for k, v in d.items() if k != "_rev"} for d in await store.list(c)]
                for c in await store.collections()}


async def test_copying_sqlite_to_postgres_moves_every_collection_and_reports_verified_counts(
    tmp_path: Path, postgres_url: str
) -> None:
    source = f"sqlite:{tmp_path / 'data'}"
    await fill(source)
    result = gofannon("store", "copy", "--from", source, "--to", postgres_url)
    assert result.returncode == 0, result.stderr + result.stdout
    lines = result.stdout
    assert "agents" in lines and "120 documents (120 written, 0 unchanged)" in lines
    assert "verified: 5 collections, 124 documents, counts match" in lines
    assert await contents(postgres_url) == await contents(source)


async def test_copying_again_writes_nothing_and_still_verifies(tmp_path: Path, postgres_url: str) -> None:
    source = f"sqlite:{tmp_path / 'data'}"
    await fill(source)
    assert gofannon("store", "copy", "--from", source, "--to", postgres_url).returncode == 0
    again = gofannon("store", "copy", "--from", source, "--to", postgres_url)
    assert again.returncode == 0, again.stderr
    assert "120 documents (0 written, 120 unchanged)" in again.stdout
    assert "counts match" in again.stdout


async def test_a_changed_source_document_is_copied_over_the_old_one(tmp_path: Path, postgres_url: str) -> None:
    source = f"sqlite:{tmp_path / 'data'}"
    await fill(source)
    assert gofannon("store", "copy", "--from", source, "--to", postgres_url).returncode == 0
    async with opened_store(source) as store:
        await store.put("agents", "agent-005", {"name": "renamed", "ownerId": "alice"})
    again = gofannon("store", "copy", "--from", source, "--to", postgres_url, "--collections", "agents")
    assert "120 documents (1 written, 119 unchanged)" in again.stdout
    async with opened_store(postgres_url) as store:
        assert (await store.get("agents", "agent-005"))["name"] == "renamed"  # type: ignore[index]


async def test_extra_documents_in_the_target_fail_verification_until_pruned(tmp_path: Path, postgres_url: str) -> None:
    source = f"sqlite:{tmp_path / 'data'}"
    await fill(source)
    await fill(postgres_url, {"agents": [{"_id": "stray", "ownerId": "bob"}]})
    failed = gofannon("store", "copy", "--from", source, "--to", postgres_url)
    assert failed.returncode == 1
    assert "MISMATCH: target holds 121" in failed.stdout and "--prune" in failed.stdout
    pruned = gofannon("store", "copy", "--from", source, "--to", postgres_url, "--prune")
    assert pruned.returncode == 0, pruned.stdout
    assert "1 pruned" in pruned.stdout
    async with opened_store(postgres_url) as store:
        assert await store.get("agents", "stray") is None


async def test_redis_to_postgres_and_back_to_a_new_sqlite_store(tmp_path: Path, postgres_url: str,
                                                                redis_url: str) -> None:
    await fill(redis_url)
    assert gofannon("store", "copy", "--from", redis_url, "--to", postgres_url).returncode == 0
    back = f"sqlite:{tmp_path / 'restored'}"
    result = gofannon("store", "copy", "--from", postgres_url, "--to", back)
    assert result.returncode == 0, result.stderr
    assert await contents(back) == await contents(redis_url)


def test_unknown_or_missing_stores_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    bogus = gofannon("store", "copy", "--from", "couchdb-somewhere", "--to", "memory:")
    assert bogus.returncode == 2 and "unrecognised store 'couchdb-somewhere'" in bogus.stderr
    missing = gofannon("store", "copy", "--from", f"sqlite:{tmp_path / 'nothing'}", "--to", "memory:")
    assert missing.returncode == 2 and "no SQLite store there" in missing.stderr
    assert not (tmp_path / "nothing").exists()
    same = gofannon("store", "copy", "--from", f"sqlite:{tmp_path}", "--to", f"sqlite:{tmp_path}")
    assert same.returncode == 2 and "same store" in same.stderr
    plugin = gofannon("store", "copy", "--from", "nosuchplugin:", "--to", "memory:")
    assert plugin.returncode == 2 and "no such storage plugin" in plugin.stderr


def test_a_password_in_a_store_url_is_not_printed(tmp_path: Path) -> None:
    from gofannon.store.cli import describe

    assert describe("postgresql://gofannon:s3cret@db:5432/g") == "postgresql://gofannon:***@db:5432/g"


AGENT_CODE = '''
async def run(input_dict, tools):
    return {"outputText": input_dict["inputText"].upper()}
'''


async def _json(resp: Any) -> Any:
    body = await resp.json()
    assert resp.status < 400, body
    return body


async def test_a_deployment_filled_over_http_on_sqlite_reads_back_unchanged_from_postgres(
    tmp_path: Path, postgres_url: str, serve: Any
) -> None:
    import asyncio

    # 1. fill the SQLite store through the HTTP API
    before = await serve()  # the serve fixture's data dir: tmp_path / "data"
    await before.login("alice")
    async with before.post("/agents", json={
        "name": "shouter", "description": "upper-cases", "code": AGENT_CODE, "friendlyName": "shouter",
        "inputSchema": {"inputText": "string"}, "outputSchema": {"outputText": "string"},
    }) as r:
        agent = await _json(r)
    async with before.post(f"/agents/{agent['_id']}/deploy") as r:
        await _json(r)
    async with before.put("/users/me/api-keys", json={"provider": "openai", "api_key": "sk-copied-key-9876"}) as r:
        await _json(r)
    async with before.post("/users/me/usage", json={"responseCost": 0.5, "metadata": {"note": "copied"}}) as r:
        await _json(r)
    for key in ("one", "two/with/slashes"):
        async with before.put(f"/data-store/namespaces/notes/records/{key}", json={"value": {"k": key}}) as r:
            await _json(r)
    async with before.post("/agents/run-code/start", json={
        "code": AGENT_CODE, "inputDict": {"inputText": "hi"}, "tools": {}, "agentId": agent["_id"],
        "friendlyName": "shouter",
    }) as r:
        run_id = (await _json(r))["runId"]
    for _ in range(300):
        async with before.get(f"/runs/{run_id}") as r:
            run = await _json(r)
        if run["status"] != "running":
            break
        await asyncio.sleep(0.1)

    views = ["/agents", f"/agents/{agent['_id']}", "/deployments", "/users/me", "/users/me/api-keys",
             "/users/me/usage", "/data-store/namespaces/notes/records", f"/runs/{run_id}", "/runs"]

    async def snapshot(client: Any) -> dict[str, Any]:
        out = {}
        for path in views:
            async with client.get(path) as r:
                out[path] = await _json(r)
        return out

    seen_on_sqlite = await snapshot(before)

    # 2. copy to postgres with the command an operator runs
    copied = gofannon("store", "copy", "--from", f"sqlite:{tmp_path / 'data'}", "--to", postgres_url)
    assert copied.returncode == 0, copied.stdout + copied.stderr
    assert "counts match" in copied.stdout

    # 3. a kernel on postgres serves the same answers
    after = await serve(GOFANNON_STORAGE="postgres", DATABASE_URL=postgres_url,
                        GOFANNON_DATA_DIR=str(tmp_path / "elsewhere"))
    await after.login("alice")
    seen_on_postgres = await snapshot(after)
    assert seen_on_postgres == seen_on_sqlite
    async with after.post("/rest/shouter", json={"inputText": "still deployed"}) as r:
        assert await _json(r) == {"outputText": "STILL DEPLOYED"}


def test_an_unreachable_database_is_a_clear_error_without_the_password(tmp_path: Path) -> None:
    from conftest import free_port

    result = gofannon("store", "copy", "--from", "memory:", "--to",
                      f"postgresql://gofannon:s3cret@127.0.0.1:{free_port()}/gofannon")
    assert result.returncode == 2
    assert "cannot connect to PostgreSQL at postgresql://gofannon:***@127.0.0.1" in result.stderr
    assert "s3cret" not in result.stderr + result.stdout
