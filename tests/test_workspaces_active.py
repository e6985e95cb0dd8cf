"""The workspace a request acts in: named by the header or the query, else the personal one (or a token's bound
workspace); a workspace the caller is not a member of is a 404 (site admins may act in any); a token bound to
one workspace cannot act in another."""

from __future__ import annotations

from typing import Any

from workspaces_helpers import call, make_workspace, people  # noqa: F401 - people is a fixture

H = "X-Gofannon-Workspace"


async def active(client: Any, workspace: str | None = None, *, query: str | None = None,
                 token: str | None = None) -> tuple[int, Any]:
    headers = {H: workspace} if workspace else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    path = "/workspaces/active" + (f"?workspace={query}" if query else "")
    return await call(client, "GET", path, headers=headers)


async def token_for(client: Any, **scope: Any) -> tuple[int, Any]:
    return await call(client, "POST", "/users/me/tokens", {"name": "script", **scope})


async def test_without_a_header_a_request_acts_in_the_personal_workspace(people: Any) -> None:
    alice, = await people("alice")
    status, ws = await active(alice)
    assert status == 200
    assert (ws["workspaceId"], ws["role"], ws["source"]) == ("personal:dev_stub:alice", "admin", "auto_personal")


async def test_the_header_or_the_query_names_the_workspace_and_the_role_follows(people: Any) -> None:
    alice, bob = await people("alice", "bob")
    assert (await active(alice, "project:demo"))[1]["role"] == "admin"
    assert (await active(bob, "project:demo"))[1]["role"] == "member"
    status, ws = await active(bob, query="project:demo")
    assert status == 200 and ws["workspaceId"] == "project:demo" and ws["role"] == "member"
    made = await make_workspace(alice)
    await call(alice, "PUT", f"/workspaces/{made}/members/dev_stub:bob", {"role": "admin"})
    assert (await active(bob, made))[1]["role"] == "admin"  # a manual membership, on the next request


async def test_a_workspace_the_caller_is_not_in_is_the_same_404_as_an_unknown_one(people: Any) -> None:
    alice, bob = await people("alice", "bob")
    made = await make_workspace(alice)
    for named in (made, "ws:unknown-00000000", "personal:dev_stub:alice", "group:nobody", "x" * 5000):
        status, answer = await active(bob, named)
        assert (status, answer) == (404, {"detail": "Workspace not found"}), named
    assert (await active(bob, query=made))[0] == 404


async def test_site_admins_may_act_in_any_existing_workspace(people: Any) -> None:
    alice, admin = await people("alice", "admin")
    made = await make_workspace(alice)
    status, ws = await active(admin, made)
    assert status == 200 and ws["role"] == "admin" and ws["displayName"] == "Research Team"
    assert (await active(admin, "personal:dev_stub:alice"))[1]["role"] == "admin"
    assert (await active(admin, "ws:unknown-00000000"))[0] == 404


async def test_a_token_bound_to_a_workspace_defaults_to_it_and_cannot_act_elsewhere(people: Any) -> None:
    alice, bob, anonymous = await people("alice", "bob", "nobody?")
    made = await make_workspace(alice)
    status, created = await token_for(alice, workspaceId=made)
    assert status == 201 and created["workspaceId"] == made
    token = created["token"]
    status, ws = await active(anonymous, token=token)
    assert status == 200 and (ws["workspaceId"], ws["role"]) == (made, "admin")
    assert (await active(anonymous, made, token=token))[0] == 200
    for elsewhere in ("personal:dev_stub:alice", "project:demo"):
        assert (await active(anonymous, elsewhere, token=token)) == (404, {"detail": "Workspace not found"})
    # The binding is re-checked on use: removed from the workspace, the token acts nowhere.
    await call(alice, "PUT", f"/workspaces/{made}/members/dev_stub:bob", {"role": "admin"})
    await call(bob, "PUT", f"/workspaces/{made}/members/dev_stub:alice", {"role": "member"})
    assert (await active(anonymous, token=token))[1]["role"] == "member"
    await call(bob, "DELETE", f"/workspaces/{made}/members/dev_stub:alice")
    auth = {"Authorization": f"Bearer {token}"}
    # Nowhere at all: not in the workspace, and not on the routes of its owner's own account either.
    assert (await active(anonymous, token=token))[0] == 401
    for method, path in (("GET", "/users/me"), ("GET", "/agents"), ("POST", "/users/me/tokens")):
        status, answer = await call(anonymous, method, path, {"name": "escape"}, headers=auth)
        assert status == 401 and "no longer a member" in answer["detail"], (path, status, answer)
    # An unbound token acts like a session.
    status, plain = await token_for(alice)
    assert (await active(anonymous, token=plain["token"]))[1]["workspaceId"] == "personal:dev_stub:alice"
    assert (await active(anonymous, "project:demo", token=plain["token"]))[1]["role"] == "admin"


async def test_a_token_can_only_be_bound_to_a_workspace_of_its_owner(people: Any) -> None:
    alice, bob = await people("alice", "bob")
    made = await make_workspace(alice)
    for elsewhere in (made, "ws:unknown-00000000", "personal:dev_stub:alice"):
        status, answer = await token_for(bob, workspaceId=elsewhere)
        assert (status, answer) == (404, {"detail": "Workspace not found"})
    status, tokens = await call(bob, "GET", "/users/me/tokens")
    assert tokens["tokens"] == []  # nothing half-made
    assert (await token_for(bob, workspaceId="project:demo"))[0] == 201


async def test_the_header_wins_over_the_query_and_a_blank_one_means_personal(people: Any) -> None:
    alice, = await people("alice")
    made = await make_workspace(alice)
    async with alice.get(f"/workspaces/active?workspace={made}", headers={H: "project:demo"}) as r:
        assert (await r.json())["workspaceId"] == "project:demo"
    assert (await active(alice, "   "))[1]["workspaceId"] == "personal:dev_stub:alice"
    # Routes that act in a workspace refuse one the caller is not in before doing anything.
    chat = {"messages": [{"role": "user", "content": "hi"}], "provider": "openai", "model": "gpt-4o"}
    for method, path, body in (("POST", "/chat", chat), ("GET", "/agents", None), ("GET", "/demos", None),
                               ("GET", "/runs", None), ("GET", "/deployments", None),
                               ("GET", "/data-store/namespaces", None),
                               ("POST", "/agents", {"name": "a", "description": "d", "code": "x"})):
        status, answer = await call(alice, method, path, body, headers={H: "group:not-mine"})
        assert (status, answer) == (404, {"detail": "Workspace not found"}), path
    _, agents = await call(alice, "GET", "/agents")
    assert agents == []  # the refused create made nothing


async def test_a_scoped_token_cannot_make_or_revoke_tokens(people: Any) -> None:
    """A token's limits would not pass to a token it made, so it may make none (nor revoke its owner's others);
    a session and an unscoped token can."""
    alice, anonymous = await people("alice", "nobody?")
    made = await make_workspace(alice)
    scoped = [(await token_for(alice, **scope))[1] for scope in (
        {"workspaceId": made}, {"models": ["openai/*"]}, {"maxSpend": 1.0}, {"rpm": 5},
        {"expiresAt": "2999-01-01T00:00:00Z"})]
    status, plain = await token_for(alice)
    assert status == 201
    for created in scoped:
        auth = {"Authorization": f"Bearer {created['token']}"}
        status, answer = await call(anonymous, "POST", "/users/me/tokens", {"name": "escape"}, headers=auth)
        assert status == 403 and ("scoped API token" in answer["detail"] or "limited to models" in answer["detail"])
        status, _ = await call(anonymous, "DELETE", f"/users/me/tokens/{plain['id']}", headers=auth)
        assert status == 403
        assert (await call(anonymous, "GET", "/users/me/tokens", headers=auth))[0] == 200  # reading is fine
    status, listed = await call(alice, "GET", "/users/me/tokens")
    assert len(listed["tokens"]) == len(scoped) + 1  # nothing made, nothing revoked
    unscoped = {"Authorization": f"Bearer {plain['token']}"}
    status, more = await call(anonymous, "POST", "/users/me/tokens", {"name": "more"}, headers=unscoped)
    assert status == 201
    assert (await call(anonymous, "DELETE", f"/users/me/tokens/{more['id']}", headers=unscoped))[0] == 204
