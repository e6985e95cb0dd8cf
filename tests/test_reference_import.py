"""``gofannon store import-reference``: a reference deployment's CouchDB export comes across.

The fixture below is a small export in CouchDB's ``_all_docs?include_docs=true`` form, written from the
wire contract's data models (§2): what a reference deployment holds, with its ``_rev``s and no owners.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gofannon.store.cli import opened_store

REPO = Path(__file__).resolve().parent.parent
ADMIN = "dev_stub:admin"
ALICE = "dev_stub:alice"
CLEAR_KEY = "sk-reference-plaintext-key-1234"

ECHO_CODE = '''
async def run(input_dict, tools):
    return {"outputText": "echo: " + input_dict["inputText"]}
'''


def _agent(agent_id: str, name: str, code: str) -> dict[str, Any]:
    return {
        "name": name, "description": f"{name} from the reference", "code": code, "docstring": "Echoes.",
        "friendlyName": name, "tools": {}, "swaggerSpecs": [], "inputSchema": {"inputText": "string"},
        "outputSchema": {"outputText": "string"},
        "invokableModels": [{"provider": "openai", "model": "gpt-4o", "parameters": {}, "builtInTool": None}],
        "gofannonAgents": [], "composerThoughts": None,
        "composerModelConfig": {"provider": "openai", "model": "gpt-4o", "parameters": {}, "builtInTool": None},
        "dataStoreConfig": [{"namespace": "notes", "access": "both", "description": None}],
        "envVars": [], "_id": agent_id, "_rev": "3-9f8e7d", "createdAt": "2026-01-02T03:04:05.123456",
        "updatedAt": "2026-01-03T03:04:05.123456",
    }


REFERENCE: dict[str, list[dict[str, Any]]] = {
    "users": [{
        "_id": ALICE, "_rev": "7-aaaa", "createdAt": "2026-01-01T00:00:00.000001",
        "updatedAt": "2026-01-05T00:00:00.000001",
        "basicInfo": {"displayName": "Alice", "email": "alice@example.org"},
        "billingInfo": {"plan": None, "status": None},
        "usageInfo": {"monthlyAllowance": 100.0, "allowanceResetDate": 0.0, "spendRemaining": 99.25,
                      "usage": [{"timestamp": f"2026-01-04T00:00:{i:02d}.000000", "responseCost": 0.0125,
                                 "metadata": None} for i in range(60)]},
        "apiKeys": {"openaiApiKey": CLEAR_KEY, "anthropicApiKey": None, "geminiApiKey": None,
                    "perplexityApiKey": None, "openrouterApiKey": None},
    }],
    "agents": [
        _agent("0b7e8a1c-1111-4c6e-9d1a-000000000001", "echo_agent", ECHO_CODE),
        _agent("0b7e8a1c-2222-4c6e-9d1a-000000000002", "second_agent", ECHO_CODE),
        {"_id": "_design/by_name", "_rev": "1-x", "views": {}},
    ],
    "deployments": [{"_id": "echo_agent", "_rev": "1-bbbb", "agentId": "0b7e8a1c-1111-4c6e-9d1a-000000000001"}],
    "demos": [{
        "name": "Echo demo", "description": "d", "selectedApis": [{
            "friendlyName": "echo_agent", "agentId": "0b7e8a1c-1111-4c6e-9d1a-000000000001", "description": "d",
            "inputSchema": {"inputText": "string"}, "outputSchema": {"outputText": "string"}}],
        "modelConfig": {"provider": "openai", "model": "gpt-4o", "parameters": {}, "builtInTool": None},
        "userPrompt": "a page", "generatedCode": {"html": "<p>", "css": "", "js": "", "thoughts": None},
        "composerThoughts": None, "_id": "demo-1", "_rev": "2-cccc",
        "created_at": "2026-01-02T00:00:00.000000", "updated_at": "2026-01-02T00:00:00.000000",
    }],
    "sessions": [{"_id": "chat-session-1", "_rev": "1-dddd", "created_at": "2026-01-02T00:00:00.000000",
                  "updated_at": "2026-01-02T00:00:00.000000",
                  "provider_config": {"provider": "openai", "model": "gpt-4o", "parameters": {},
                                      "built_in_tool": None}}],
    "tickets": [{"_id": "ticket-1", "_rev": "2-eeee", "status": "completed",
                 "created_at": "2026-01-02T00:00:00.000000", "completed_at": "2026-01-02T00:00:01.000000",
                 "request": {"messages": [{"role": "user", "content": "hi"}], "provider": "openai",
                             "model": "gpt-4o", "parameters": {}, "stream": False, "builtInTools": []},
                 "result": {"content": "hello", "thoughts": None, "model": "openai/gpt-4o"}}],
    "agent_data_store": [{
        "_id": f"{ALICE}:notes:Z3JlZXRpbmc=", "_rev": "1-ffff", "userId": ALICE, "namespace": "notes",
        "key": "greeting", "value": {"text": "hello"}, "metadata": {}, "createdByAgent": "echo_agent",
        "lastAccessedByAgent": "echo_agent", "accessCount": 3, "createdAt": "2026-01-02T00:00:00.000000",
        "updatedAt": "2026-01-02T00:00:00.000000", "lastAccessedAt": "2026-01-02T00:00:00.000000"}],
    "user_sessions": [{"_id": "x" * 43, "_rev": "1-a", "userUid": ALICE}],
}


def write_export(directory: Path, data: dict[str, list[dict[str, Any]]] = REFERENCE) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for db, docs in data.items():
        rows = [{"id": d["_id"], "key": d["_id"], "value": {"rev": d["_rev"]}, "doc": d} for d in docs]
        (directory / f"{db}.json").write_text(json.dumps({"total_rows": len(rows), "offset": 0, "rows": rows}))
    return directory


def gofannon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gofannon", *args], capture_output=True, text=True, timeout=120, check=False,
                          cwd=str(REPO), env={**os.environ, "APP_ENV": "test"})


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"  # the data dir the ``serve`` fixture's kernel uses


async def test_dry_run_reports_what_would_change_and_writes_nothing(tmp_path: Path, data_dir: Path) -> None:
    export = write_export(tmp_path / "export")
    result = gofannon("store", "import-reference", str(export), "--owner", ADMIN, "--to", f"sqlite:{data_dir}",
                      "--dry-run")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("DRY RUN: nothing written")
    assert "agents                    2 read: 2 new, 0 changed, 0 unchanged" in out
    assert "provider keys that would be encrypted: 1" in out
    assert "usage entries that would be moved to 'usage': 60" in out
    assert "user_sessions: 1 skipped" in out
    async with opened_store(f"sqlite:{data_dir}") as store:
        assert await store.collections() == []


async def test_imported_agents_deployments_and_records_are_served_as_before(
    tmp_path: Path, data_dir: Path, serve: Callable[..., Any]
) -> None:
    export = write_export(tmp_path / "export")
    result = gofannon("store", "import-reference", str(export), "--owner", ADMIN, "--to", f"sqlite:{data_dir}")
    assert result.returncode == 0, result.stderr
    assert "deployments               1 read: 1 new" in result.stdout

    client = await serve()
    await client.login("admin")
    async with client.get("/agents") as r:
        agents = await r.json()
        assert r.status == 200, agents
    by_name = {a["name"]: a for a in agents}
    assert set(by_name) == {"echo_agent", "second_agent"}
    echo = by_name["echo_agent"]
    assert echo["_id"] == "0b7e8a1c-1111-4c6e-9d1a-000000000001"
    assert echo["code"] == ECHO_CODE and echo["createdAt"] == "2026-01-02T03:04:05.123456"
    assert echo["_rev"] != "3-9f8e7d"  # the reference's CouchDB revision does not come along
    async with client.get("/deployments") as r:
        deployed = await r.json()
        assert r.status == 200, deployed
    assert [d["friendlyName"] for d in deployed] == ["echo_agent"]
    async with client.post("/rest/echo_agent", json={"inputText": "hi"}) as r:
        assert r.status == 200, await r.text()
        assert await r.json() == {"outputText": "echo: hi"}
    async with client.get("/demos/demo-1") as r:
        assert r.status == 200, await r.text()
        demo = await r.json()
    assert demo["userPrompt"] == "a page" and demo["selectedApis"][0]["friendlyName"] == "echo_agent"


async def test_imported_users_keep_budgets_see_only_a_masked_key_and_their_usage(
    tmp_path: Path, data_dir: Path, serve: Callable[..., Any]
) -> None:
    export = write_export(tmp_path / "export")
    assert gofannon("store", "import-reference", str(export), "--owner", ADMIN,
                    "--to", f"sqlite:{data_dir}").returncode == 0
    async with opened_store(f"sqlite:{data_dir}") as store:
        raw = json.dumps(await store.list("users"))
        assert CLEAR_KEY not in raw  # encrypted at rest
        assert await store.count("usage", {"userId": ALICE}) == 60
        assert await store.count("user_sessions") == 0
    client = await serve()
    await client.login("alice")
    async with client.get("/users/me") as r:
        me = await r.json()
        assert r.status == 200, me
    assert me["usageInfo"]["spendRemaining"] == 99.25
    assert me["apiKeys"]["openaiApiKey"] == "sk-...1234"
    async with client.get("/users/me/usage?limit=1000") as r:
        assert len((await r.json())["usage"]) == 60
    async with client.get("/data-store/namespaces/notes/records/greeting") as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["value"] == {"text": "hello"}


async def test_importing_twice_changes_nothing_the_second_time(tmp_path: Path, data_dir: Path) -> None:
    export = write_export(tmp_path / "export")
    target = f"sqlite:{data_dir}"
    assert gofannon("store", "import-reference", str(export), "--owner", ADMIN, "--to", target).returncode == 0
    async with opened_store(target) as store:
        before = {c: await store.list(c) for c in await store.collections()}
    again = gofannon("store", "import-reference", str(export), "--owner", ADMIN, "--to", target)
    assert again.returncode == 0, again.stderr
    assert " 0 new, 0 changed" in again.stdout and " new, 1 changed" not in again.stdout
    async with opened_store(target) as store:
        assert {c: await store.list(c) for c in await store.collections()} == before


async def test_one_export_file_imports_into_postgres_with_the_admin_as_owner(tmp_path: Path, postgres_url: str) -> None:
    export = write_export(tmp_path / "export")
    result = gofannon("store", "import-reference", str(export / "agents.json"), "--owner", ADMIN,
                      "--to", postgres_url)
    assert result.returncode == 0, result.stderr
    async with opened_store(postgres_url) as store:
        assert [a["ownerId"] for a in await store.list("agents")] == [ADMIN, ADMIN]
        assert await store.get("agents", "_design/by_name") is None


def test_an_unreadable_export_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    bad = tmp_path / "agents.json"
    bad.write_text("{not json")
    result = gofannon("store", "import-reference", str(bad), "--owner", ADMIN, "--to", "memory:")
    assert result.returncode == 2 and "not a JSON export" in result.stderr
    keys_only = tmp_path / "demos.json"
    keys_only.write_text(json.dumps({"rows": [{"id": "a", "key": "a", "value": {"rev": "1-x"}}]}))
    result = gofannon("store", "import-reference", str(keys_only), "--owner", ADMIN, "--to", "memory:")
    assert result.returncode == 2 and "include_docs=true" in result.stderr
    missing = gofannon("store", "import-reference", str(tmp_path / "nope"), "--owner", ADMIN, "--to", "memory:")
    assert missing.returncode == 2 and "no such file or directory" in missing.stderr
