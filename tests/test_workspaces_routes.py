"""Workspaces made in the platform, as people use them over HTTP: create, list, rename, members, invitations,
delete — and every status a caller can meet (404 outside, 403 for a member doing an admin's job, 409 for
provider-derived memberships and the last admin, 422 for bad bodies)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from gofannon.services.auth_config import DEV_CONFIG
from gofannon.web.keys import KERNEL
from workspaces_helpers import call, make_workspace, people  # noqa: F401 - people is a fixture


async def make_full(client: Any, name: str = "Research Team") -> dict[str, Any]:
    status, body = await call(client, "POST", "/workspaces", {"displayName": name, "description": "R&D"})
    assert status == 201, body
    return body


async def test_creating_a_workspace_makes_the_creator_its_admin_and_lists_it_everywhere(people: Any) -> None:
    alice, = await people("alice")
    ws = await make_full(alice, "Research Team")
    assert ws["workspaceId"].startswith("ws:research-team-")
    assert {k: ws[k] for k in ("displayName", "description", "role", "source")} == {
        "displayName": "Research Team", "description": "R&D", "role": "admin", "source": "manual"}
    status, listed = await call(alice, "GET", "/workspaces")
    assert status == 200
    assert [w["workspaceId"] for w in listed["workspaces"]] == [
        "personal:dev_stub:alice", "project:demo", ws["workspaceId"]]
    assert [w["source"] for w in listed["workspaces"]] == ["auto_personal", "dev_stub", "manual"]
    status, me = await call(alice, "GET", "/auth/me")
    assert me["workspaces"] == listed["workspaces"]
    status, one = await call(alice, "GET", f"/workspaces/{ws['workspaceId']}")
    assert status == 200 and one["role"] == "admin" and one["displayName"] == "Research Team"


async def test_a_new_member_sees_the_workspace_on_the_next_request_without_signing_in_again(people: Any) -> None:
    alice, bob = await people("alice", "bob")
    ws = await make_workspace(alice)
    status, me = await call(bob, "GET", "/auth/me")
    assert ws not in [w["workspaceId"] for w in me["workspaces"]]
    await call(bob, "GET", "/users/me")  # as the web UI does after sign-in: the user document exists
    status, member = await call(alice, "PUT", f"/workspaces/{ws}/members/dev_stub:bob", {"role": "member"})
    assert status == 200 and member == {"uid": "dev_stub:bob", "displayName": "Bob Dev", "role": "member",
                                        "source": "manual"}
    status, me = await call(bob, "GET", "/auth/me")
    assert [w for w in me["workspaces"] if w["workspaceId"] == ws][0]["role"] == "member"
    status, members = await call(bob, "GET", f"/workspaces/{ws}/members")
    assert status == 200 and [(m["uid"], m["role"]) for m in members["members"]] == [
        ("dev_stub:alice", "admin"), ("dev_stub:bob", "member")]
    # Removed: gone on the next request too, and the workspace is a 404 for bob again.
    assert (await call(alice, "DELETE", f"/workspaces/{ws}/members/dev_stub:bob"))[0] == 204
    status, me = await call(bob, "GET", "/auth/me")
    assert ws not in [w["workspaceId"] for w in me["workspaces"]]
    assert (await call(bob, "GET", f"/workspaces/{ws}"))[0] == 404


async def test_members_cannot_do_an_admins_job_and_outsiders_see_nothing(people: Any) -> None:
    alice, bob, carol = await people("alice", "bob", "admin")  # carol: a site admin
    ws = await make_workspace(alice)
    # bob is not a member yet: every route answers the same 404 as an unknown id.
    unknown = "ws:does-not-exist-00000000"
    for target in (ws, unknown):
        for method, suffix, body in [("GET", "", None), ("PUT", "", {"displayName": "x"}), ("DELETE", "", None),
                                     ("GET", "/members", None), ("PUT", "/members/dev_stub:bob", {"role": "admin"}),
                                     ("DELETE", "/members/dev_stub:alice", None),
                                     ("POST", "/invitations", {"email": "x@example.org", "role": "member"}),
                                     ("PUT", "/budget", {"monthlyAllowance": 5}), ("GET", "/usage", None)]:
            status, answer = await call(bob, method, f"/workspaces/{target}{suffix}", body)
            assert (status, answer) == (404, {"detail": "Workspace not found"}), (method, suffix, target)
    await call(alice, "PUT", f"/workspaces/{ws}/members/dev_stub:bob", {"role": "member"})
    for method, suffix, body in [("PUT", "", {"displayName": "x"}), ("DELETE", "", None),
                                 ("PUT", "/members/dev_stub:bob", {"role": "admin"}),
                                 ("DELETE", "/members/dev_stub:alice", None),
                                 ("POST", "/invitations", {"email": "x@example.org", "role": "member"}),
                                 ("GET", "/invitations", None), ("PUT", "/budget", {"monthlyAllowance": 5})]:
        status, answer = await call(bob, method, f"/workspaces/{ws}{suffix}", body)
        assert status == 403 and "admin" in answer["detail"], (method, suffix, answer)
    assert (await call(bob, "GET", f"/workspaces/{ws}/usage"))[0] == 200
    # A site admin may manage any workspace, without being a member.
    status, renamed = await call(carol, "PUT", f"/workspaces/{ws}", {"displayName": "Renamed"})
    assert status == 200 and renamed["displayName"] == "Renamed" and renamed["description"] == "R&D"
    assert (await call(carol, "GET", f"/workspaces/{ws}/members"))[0] == 200
    assert (await call(carol, "GET", f"/workspaces/{unknown}"))[0] == 404
    # Leaving is allowed to anyone.
    assert (await call(bob, "DELETE", f"/workspaces/{ws}/members/dev_stub:bob"))[0] == 204
    assert (await call(bob, "GET", f"/workspaces/{ws}"))[0] == 404


async def test_provider_derived_memberships_are_read_only_here(people: Any) -> None:
    alice, bob = await people("alice", "bob")  # admin and member of project:demo through the dev_stub config
    status, one = await call(alice, "GET", "/workspaces/project:demo")
    assert status == 200 and one["role"] == "admin" and one["source"] == "dev_stub"
    for method, suffix, body in [("PUT", "", {"displayName": "x"}), ("DELETE", "", None),
                                 ("PUT", "/members/dev_stub:carol", {"role": "member"}),
                                 ("DELETE", "/members/dev_stub:bob", None),
                                 ("POST", "/invitations", {"email": "x@example.org", "role": "member"})]:
        status, answer = await call(alice, method, f"/workspaces/project:demo{suffix}", body)
        assert status == 409 and "login provider" in answer["detail"], (method, suffix)
    status, members = await call(alice, "GET", "/workspaces/project:demo/members")
    assert members == {"members": [{"uid": "dev_stub:alice", "displayName": "Alice Dev", "role": "admin",
                                    "source": "dev_stub"}]}
    # bob is a member of project:demo: an admin's job is a 403 before the 409
    assert (await call(bob, "PUT", "/workspaces/project:demo", {"displayName": "x"}))[0] == 403


async def test_the_last_admin_cannot_leave_or_step_down(people: Any) -> None:
    alice, = await people("alice")
    ws = await make_workspace(alice)
    status, answer = await call(alice, "PUT", f"/workspaces/{ws}/members/dev_stub:alice", {"role": "member"})
    assert status == 409 and "at least one admin" in answer["detail"]
    assert (await call(alice, "DELETE", f"/workspaces/{ws}/members/dev_stub:alice"))[0] == 409
    await call(alice, "PUT", f"/workspaces/{ws}/members/dev_stub:bob", {"role": "admin"})
    assert (await call(alice, "DELETE", f"/workspaces/{ws}/members/dev_stub:alice"))[0] == 204
    assert (await call(alice, "GET", f"/workspaces/{ws}"))[0] == 404


async def test_bad_bodies_are_422_and_unknown_members_404(people: Any) -> None:
    alice, = await people("alice")
    assert (await call(alice, "POST", "/workspaces", {"description": "no name"}))[0] == 422
    assert (await call(alice, "POST", "/workspaces", {"displayName": "   "}))[0] == 422
    assert (await call(alice, "POST", "/workspaces", {"displayName": "x" * 201}))[0] == 422
    ws = await make_workspace(alice)
    assert (await call(alice, "PUT", f"/workspaces/{ws}/members/dev_stub:bob", {"role": "owner"}))[0] == 422
    assert (await call(alice, "PUT", f"/workspaces/{ws}/members/nobody", {"role": "member"}))[0] == 422
    assert (await call(alice, "POST", f"/workspaces/{ws}/invitations", {"email": "not-an-address"}))[0] == 422
    assert (await call(alice, "PUT", f"/workspaces/{ws}/budget", {"monthlyAllowance": -1}))[0] == 422
    assert (await call(alice, "PUT", f"/workspaces/{ws}/budget", {}))[0] == 422
    status, answer = await call(alice, "DELETE", f"/workspaces/{ws}/members/dev_stub:nobody")
    assert (status, answer) == (404, {"detail": "Member not found"})
    async with alice.request("POST", "/workspaces", data="{not json", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 422


async def test_an_invitation_turns_into_a_membership_at_first_login_with_that_address(people: Any, tmp_path: Any) -> None:
    config = {**DEV_CONFIG, "providers": [{**DEV_CONFIG["providers"][0], "config": {
        **DEV_CONFIG["providers"][0]["config"],
        "users": [*DEV_CONFIG["providers"][0]["config"]["users"],
                  {"uid": "dana", "display_name": "Dana New", "email": "Dana@Example.org"}]}}]}
    path = tmp_path / "auth.yaml"
    path.write_text(yaml.safe_dump({"auth": config}))
    alice, dana, bob = await people("alice", "dana?", "bob", AUTH_CONFIG_PATH=str(path))
    with pytest.raises(AssertionError, match="No active workspace memberships"):
        await dana.login("dana")  # no membership anywhere yet: refused
    ws = await make_workspace(alice)
    status, inv = await call(alice, "POST", f"/workspaces/{ws}/invitations",
                             {"email": "dana@example.ORG", "role": "admin"})
    assert status == 201 and inv["email"] == "dana@example.org" and inv["role"] == "admin"
    status, open_ = await call(alice, "GET", f"/workspaces/{ws}/invitations")
    assert [i["email"] for i in open_["invitations"]] == ["dana@example.org"]
    await dana.login("dana")  # her first login: the invitation is what lets her in
    status, me = await call(dana, "GET", "/auth/me")
    assert [(w["workspaceId"], w["role"]) for w in me["workspaces"]][-1] == (ws, "admin")
    status, open_ = await call(alice, "GET", f"/workspaces/{ws}/invitations")
    assert open_["invitations"] == []  # used up
    # Withdrawn invitations grant nothing.
    await call(alice, "POST", f"/workspaces/{ws}/invitations", {"email": "bob@dev.local"})
    assert (await call(alice, "DELETE", f"/workspaces/{ws}/invitations/bob@dev.local"))[0] == 204
    assert (await call(alice, "DELETE", f"/workspaces/{ws}/invitations/bob@dev.local"))[0] == 404
    await bob.login("bob")
    status, me = await call(bob, "GET", "/auth/me")
    assert ws not in [w["workspaceId"] for w in me["workspaces"]]


async def test_deleting_a_workspace_that_holds_resources_needs_force(people: Any) -> None:
    alice, = await people("alice")
    ws = await make_workspace(alice)
    store = alice.server.app[KERNEL].store
    await store.put("agents", "a-in-ws", {"ownerId": "dev_stub:alice", "name": "x", "workspaceId": ws})
    await store.put("agents", "a-elsewhere", {"ownerId": "dev_stub:alice", "name": "y"})
    status, answer = await call(alice, "DELETE", f"/workspaces/{ws}")
    assert status == 409 and "force=true" in answer["detail"]
    assert (await call(alice, "GET", f"/workspaces/{ws}"))[0] == 200
    assert (await call(alice, "DELETE", f"/workspaces/{ws}?force=true"))[0] == 204
    assert await store.get("agents", "a-in-ws") is None
    assert await store.get("agents", "a-elsewhere") is not None
    assert (await call(alice, "GET", f"/workspaces/{ws}"))[0] == 404
    assert await store.find("workspace_members", {"workspaceId": ws}) == []
    empty = await make_workspace(alice, "Empty")
    assert (await call(alice, "DELETE", f"/workspaces/{empty}"))[0] == 204


async def test_two_admins_demoting_each_other_at_once_leave_one_admin(people: Any) -> None:
    import asyncio

    alice, bob = await people("alice", "bob")
    ws = await make_workspace(alice)
    await call(alice, "PUT", f"/workspaces/{ws}/members/dev_stub:bob", {"role": "admin"})
    for _ in range(5):
        results = await asyncio.gather(
            call(alice, "PUT", f"/workspaces/{ws}/members/dev_stub:bob", {"role": "member"}),
            call(bob, "PUT", f"/workspaces/{ws}/members/dev_stub:alice", {"role": "member"}))
        _, members = await call(alice, "GET", f"/workspaces/{ws}/members")
        admins = [m["uid"] for m in members["members"] if m["role"] == "admin"]
        assert admins, results  # never none
        for admin in ("dev_stub:alice", "dev_stub:bob"):  # back to two admins for the next round
            if admin not in admins:
                status, _ = await call(alice if admins[0] == "dev_stub:alice" else bob, "PUT",
                                       f"/workspaces/{ws}/members/{admin}", {"role": "admin"})
                assert status == 200
