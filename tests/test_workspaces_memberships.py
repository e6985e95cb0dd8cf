"""Memberships from every source land in one list (``GET /workspaces``, ``/auth/me``) and all of them name an
active workspace: the personal one, the dev_stub config, an OIDC groups claim (claim name and admin groups from
the auth config), GitHub organisations, and workspaces made here — against the local OAuth servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestServer
from test_auth_oidc import (  # noqa: F401 - provider is a fixture
    FakeGitHub, FakeOidcProvider, _start, auth_config, browser_login, provider, serve_with_github)

from workspaces_helpers import call, make_workspace, people  # noqa: F401 - people is a fixture

H = "X-Gofannon-Workspace"


async def test_an_oidc_groups_claim_named_in_the_config_becomes_workspaces_with_mapped_roles(
        serve: Any, provider: FakeOidcProvider, tmp_path: Path) -> None:
    provider.user = {"sub": "u-9", "name": "Olga Idc", "email": "olga@example.org", "teams": ["eng", "ops"]}
    entry = {"type": "oidc", "enabled": True, "config": {
        "issuer": provider.issuer, "client_id": "gofannon", "client_secret": "shh", "groups_claim": "teams",
        "admin_groups": ["ops"], "group_display_names": {"eng": "Engineering"}}}
    client = await serve(AUTH_CONFIG_PATH=auth_config(tmp_path, [entry]))
    status, _location, _ = await browser_login(client, "oidc")
    assert status == 302
    status, listed = await call(client, "GET", "/workspaces")
    assert [(w["workspaceId"], w["role"], w["displayName"], w["source"]) for w in listed["workspaces"]] == [
        ("personal:oidc:u-9", "admin", "Personal", "auto_personal"),
        ("group:eng", "member", "Engineering", "oidc_claim"),
        ("group:ops", "admin", "ops", "oidc_claim"),
    ]
    async with client.get("/workspaces/active", headers={H: "group:ops"}) as r:
        assert r.status == 200 and (await r.json())["role"] == "admin"
    async with client.get("/workspaces/active", headers={H: "group:sales"}) as r:
        assert r.status == 404
    # A workspace made here joins the same list for an OIDC user, and the groups stay on refresh.
    made = await make_workspace(client, "Platform")
    async with client.post("/auth/refresh-workspaces") as r:
        assert r.status == 200
    status, me = await call(client, "GET", "/auth/me")
    assert [w["workspaceId"] for w in me["workspaces"]] == ["personal:oidc:u-9", "group:eng", "group:ops", made]


async def test_github_organisations_become_org_workspaces(serve: Any, tmp_path: Path) -> None:
    opened: list[TestServer] = []
    try:
        client = await serve_with_github(serve, tmp_path, FakeGitHub(), opened)
        status, _location, _ = await browser_login(client, "github")
        assert status == 302
        status, listed = await call(client, "GET", "/workspaces")
        assert [(w["workspaceId"], w["role"], w["source"]) for w in listed["workspaces"]] == [
            ("personal:github:4242", "admin", "auto_personal"), ("org:apache", "admin", "github_org")]
        async with client.get("/workspaces/active?workspace=org:apache") as r:
            assert r.status == 200 and (await r.json())["source"] == "github_org"
        async with client.put("/workspaces/org:apache/members/github:1", json={"role": "member"}) as r:
            assert r.status == 409  # the organisation's members are GitHub's to manage
    finally:
        for s in opened:
            await s.close()


async def test_dev_stub_config_workspaces_and_manual_ones_combine(people: Any, tmp_path: Path) -> None:
    from gofannon.services.auth_config import DEV_CONFIG

    provider_entry = DEV_CONFIG["providers"][0]
    config = {**DEV_CONFIG, "providers": [{**provider_entry, "config": {**provider_entry["config"], "users": [
        *provider_entry["config"]["users"],
        {"uid": "erin", "display_name": "Erin", "workspaces": [
            {"id": "project:alpha", "role": "admin", "display_name": "Alpha"},
            {"id": "project:beta", "display_name": "Beta"}]}]}}]}
    path = tmp_path / "auth.yaml"
    path.write_text(yaml.safe_dump({"auth": config}))
    alice, erin = await people("alice", "erin", AUTH_CONFIG_PATH=str(path))
    made = await make_workspace(alice)
    assert (await call(alice, "PUT", f"/workspaces/{made}/members/dev_stub:erin", {"role": "member"}))[0] == 200
    status, listed = await call(erin, "GET", "/workspaces")
    assert [(w["workspaceId"], w["role"], w["source"]) for w in listed["workspaces"]] == [
        ("personal:dev_stub:erin", "admin", "auto_personal"), ("project:alpha", "admin", "dev_stub"),
        ("project:beta", "member", "dev_stub"), (made, "member", "manual")]
    for workspace_id, role in (("project:alpha", "admin"), ("project:beta", "member"), (made, "member")):
        async with erin.get("/workspaces/active", headers={H: workspace_id}) as r:
            assert (await r.json())["role"] == role


async def test_an_invitation_needs_an_address_the_provider_verified(
        people: Any, provider: FakeOidcProvider, tmp_path: Path) -> None:
    from gofannon.services.auth_config import DEV_CONFIG

    oidc = {"type": "oidc", "enabled": True, "config": {"issuer": provider.issuer, "client_id": "gofannon",
                                                       "client_secret": "shh"}}
    path = tmp_path / "both.yaml"
    path.write_text(yaml.safe_dump({"auth": {**DEV_CONFIG, "providers": [*DEV_CONFIG["providers"], oidc]}}))
    alice, olga = await people("alice", "olga?", AUTH_CONFIG_PATH=str(path))
    made = await make_workspace(alice)
    assert (await call(alice, "POST", f"/workspaces/{made}/invitations", {"email": "olga@example.org"}))[0] == 201
    provider.user = {**provider.user, "email_verified": False}
    assert (await browser_login(olga, "oidc"))[0] == 302
    status, me = await call(olga, "GET", "/auth/me")
    assert made not in [w["workspaceId"] for w in me["workspaces"]]  # an unverified address claims nothing
    provider.user = {**provider.user, "email_verified": True}
    assert (await browser_login(olga, "oidc"))[0] == 302
    status, me = await call(olga, "GET", "/auth/me")
    assert [(w["workspaceId"], w["role"]) for w in me["workspaces"]][-1] == (made, "member")


@pytest.mark.parametrize("storage", ["redis", "postgres"])
async def test_workspaces_work_on_every_shared_store(people: Any, request: Any, storage: str) -> None:
    env = {"GOFANNON_STORAGE": storage}
    if storage == "redis":
        env["REDIS_URL"] = request.getfixturevalue("redis_url")
    else:
        env["DATABASE_URL"] = request.getfixturevalue("postgres_url")
    alice, bob = await people("alice", "bob", **env)
    made = await make_workspace(alice)
    assert (await call(alice, "PUT", f"/workspaces/{made}/members/dev_stub:bob", {"role": "member"}))[0] == 200
    status, listed = await call(bob, "GET", "/workspaces")
    assert [w["workspaceId"] for w in listed["workspaces"]][-1] == made
    assert (await call(alice, "PUT", f"/workspaces/{made}/members/dev_stub:alice", {"role": "member"}))[0] == 409
    assert (await call(bob, "GET", "/agents", headers={H: made}))[1] == []
    status, agent = await call(bob, "POST", "/agents", {"name": "a", "description": "d", "code": "x"},
                               headers={H: made})
    assert status == 201 and agent["workspaceId"] == made
    assert (await call(alice, "DELETE", f"/workspaces/{made}"))[0] == 409
    assert (await call(alice, "DELETE", f"/workspaces/{made}?force=true"))[0] == 204
    assert (await call(bob, "GET", f"/agents/{agent['_id']}"))[0] == 404
