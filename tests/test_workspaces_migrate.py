"""``gofannon store migrate``: documents written before workspaces get their owner's personal workspace
written out, once, and everything keeps answering as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_store_cli import gofannon

from gofannon.store.cli import opened_store
from workspaces_helpers import call, people  # noqa: F401 - people is a fixture

OLD = {
    "agents": [{"_id": "a1", "name": "old", "ownerId": "dev_stub:alice", "code": "x", "friendlyName": "old"},
               {"_id": "a2", "name": "team", "ownerId": "dev_stub:alice", "workspaceId": "ws:team-00000000"},
               {"_id": "a3", "name": "orphan"}],
    "deployments": [{"_id": "old", "agentId": "a1", "ownerId": "dev_stub:alice"}],
    "demos": [{"_id": "d1", "name": "demo", "ownerId": "dev_stub:bob"}],
    "sessions": [{"_id": "s1", "provider_config": None}],
}


async def test_migrate_makes_the_personal_workspace_explicit_once(people: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    spec = f"sqlite:{data}"
    async with opened_store(spec) as store:
        for collection, docs in OLD.items():
            await store.put_many(collection, docs)
    dry = gofannon("store", "migrate", "--store", spec, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "agents                      1 documents would get" in dry.stdout
    async with opened_store(spec) as store:
        assert "workspaceId" not in (await store.get("agents", "a1") or {})
    done = gofannon("store", "migrate", "--store", spec)
    assert done.returncode == 0, done.stderr
    assert "deployments                 1 documents got" in done.stdout
    assert "demos                       1 documents got" in done.stdout
    async with opened_store(spec) as store:
        assert (await store.get("agents", "a1"))["workspaceId"] == "personal:dev_stub:alice"  # type: ignore[index]
        assert (await store.get("agents", "a2"))["workspaceId"] == "ws:team-00000000"  # type: ignore[index]
        assert "workspaceId" not in (await store.get("agents", "a3") or {})  # no owner: left alone
        assert "workspaceId" not in (await store.get("sessions", "s1") or {})
    again = gofannon("store", "migrate", "--store", spec)
    assert again.returncode == 0 and "agents                      0 documents got" in again.stdout
    # The service reads the migrated documents as before: alice's personal list, bob cannot see them.
    alice, bob = await people("alice", "bob", GOFANNON_DATA_DIR=str(data))
    _, listed = await call(alice, "GET", "/agents")
    assert [a["name"] for a in listed] == ["old"] and listed[0]["workspaceId"] == "personal:dev_stub:alice"
    assert (await call(bob, "GET", "/agents/a1"))[0] == 404
    assert (await call(alice, "PUT", "/agents/a1", {"description": "still mine"}))[0] == 200
    assert [d["friendlyName"] for d in (await call(bob, "GET", "/deployments"))[1]] == ["old"]  # still public


async def test_import_reference_maps_workspace_fields(people: Any, tmp_path: Path) -> None:
    from test_reference_import import write_export

    def agent(agent_id: str, name: str, **extra: Any) -> dict[str, Any]:
        return {"_id": agent_id, "_rev": "1-a", "name": name, "description": "d", "code": "x",
                "friendlyName": name, **extra}

    export = write_export(tmp_path / "export", {"agents": [
        agent("r1", "of_alice", workspaceId="personal:dev_stub:alice"),
        agent("r2", "of_demo", workspace_id="project:demo"),
        agent("r3", "unplaced"),
    ]})
    data = tmp_path / "data"
    result = gofannon("store", "import-reference", str(export), "--owner", "dev_stub:admin", "--to", f"sqlite:{data}")
    assert result.returncode == 0, result.stderr
    async with opened_store(f"sqlite:{data}") as store:
        r1, r2, r3 = [await store.get("agents", i) for i in ("r1", "r2", "r3")]
    assert r1["ownerId"] == "dev_stub:alice" and "workspaceId" not in r1  # type: ignore[index,operator]
    assert r2["ownerId"] == "dev_stub:admin" and r2["workspaceId"] == "project:demo"  # type: ignore[index]
    assert "workspace_id" not in r2  # type: ignore[operator]
    assert r3["ownerId"] == "dev_stub:admin" and "workspaceId" not in r3  # type: ignore[index,operator]
    alice, bob = await people("alice", "bob", GOFANNON_DATA_DIR=str(data))
    assert [a["name"] for a in (await call(alice, "GET", "/agents"))[1]] == ["of_alice"]
    assert [a["name"] for a in (await call(bob, "GET", "/agents", headers={"X-Gofannon-Workspace": "project:demo"}))[1]] \
        == ["of_demo"]
