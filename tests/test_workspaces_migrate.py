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
