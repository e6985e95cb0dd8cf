"""The isolation matrix: agents and deployments × every verb × {workspace admin, member, non-member, site
admin, a token bound elsewhere} — the expected status for each — and nothing of another workspace in any list,
count or error message. Without a workspace header everything behaves as before workspaces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gofannon.services.auth_config import DEV_CONFIG
from workspaces_helpers import call, make_workspace, people  # noqa: F401 - people is a fixture

H = "X-Gofannon-Workspace"
CODE = "async def run(input_dict, tools):\n    return {'outputText': input_dict.get('inputText', '').upper()}\n"


def body(name: str) -> dict[str, Any]:
    return {"name": name, "description": "d", "code": CODE, "friendlyName": name,
            "inputSchema": {"inputText": "string"}, "outputSchema": {"outputText": "string"}}


@pytest.fixture
def dev_config(tmp_path: Path) -> str:
    """The built-in dev users plus carol, who belongs to nothing but her own project."""
    entry = DEV_CONFIG["providers"][0]
    users = [*entry["config"]["users"], {"uid": "carol", "display_name": "Carol",
                                          "workspaces": [{"id": "project:other", "role": "admin"}]}]
    path = tmp_path / "auth.yaml"
    path.write_text(yaml.safe_dump({"auth": {**DEV_CONFIG, "providers": [{**entry, "config": {
        **entry["config"], "users": users}}]}}))
    return str(path)


class World:
    """A shared workspace W (alice admin, bob member), an agent of each in it, and the outsiders."""

    def __init__(self, clients: list[Any], ws: str, token: str) -> None:
        self.alice, self.bob, self.carol, self.admin, self.nobody = clients
        self.ws, self.token = ws, token
        self.agents: dict[str, dict[str, Any]] = {}

    def actor(self, who: str) -> tuple[Any, dict[str, str]]:
        """The client and headers acting in W as ``who``."""
        if who == "token":  # alice's own token, bound to project:demo
            return self.nobody, {H: self.ws, "Authorization": f"Bearer {self.token}"}
        return getattr(self, who), {H: self.ws}


@pytest.fixture
async def world(people: Any, dev_config: str) -> World:
    clients = await people("alice", "bob", "carol", "admin", "nobody?", AUTH_CONFIG_PATH=dev_config)
    alice, bob = clients[0], clients[1]
    ws = await make_workspace(alice, "Team")
    assert (await call(alice, "PUT", f"/workspaces/{ws}/members/dev_stub:bob", {"role": "member"}))[0] == 200
    status, token = await call(alice, "POST", "/users/me/tokens", {"name": "ci", "workspaceId": "project:demo"})
    assert status == 201
    w = World(clients, ws, token["token"])
    for owner, name in ((alice, "alices_tool"), (bob, "bobs_tool")):
        status, doc = await call(owner, "POST", "/agents", body(name), headers={H: ws})
        assert status == 201 and doc["workspaceId"] == ws and doc["ownerId"] == owner_uid(name)
        w.agents[name] = doc
    return w


def owner_uid(name: str) -> str:
    return "dev_stub:alice" if name.startswith("alice") else "dev_stub:bob"


ACTORS = ("alice", "bob", "carol", "admin", "token")


async def test_reading_and_listing_agents_of_a_workspace(world: World) -> None:
    expected_get = {"alice": 200, "bob": 200, "carol": 404, "admin": 200, "token": 404}
    expected_list = {"alice": 200, "bob": 200, "carol": 404, "admin": 200, "token": 404}
    for who in ACTORS:
        client, headers = world.actor(who)
        for name, doc in world.agents.items():
            status, answer = await call(client, "GET", f"/agents/{doc['_id']}", headers=headers)
            assert status == expected_get[who], (who, name, answer)
            if status == 404:  # word for word the answer for an id that does not exist
                _, unknown = await call(client, "GET", "/agents/no-such-agent", headers=headers)
                assert answer["detail"] == unknown["detail"].replace("no-such-agent", doc["_id"])
        status, listed = await call(client, "GET", "/agents", headers=headers)
        assert status == expected_list[who], who
        if status == 200:
            assert sorted(a["name"] for a in listed) == ["alices_tool", "bobs_tool"]
        else:
            assert listed == {"detail": "Workspace not found"}


async def test_without_a_header_nothing_of_the_workspace_shows_in_personal_lists(world: World) -> None:
    for who in ("alice", "bob", "carol"):
        client = getattr(world, who)
        status, listed = await call(client, "GET", "/agents")
        assert status == 200 and listed == [], who  # their agents live in W, not in the personal workspace
    status, everything = await call(world.admin, "GET", "/agents")
    assert sorted(a["name"] for a in everything) == ["alices_tool", "bobs_tool"]  # site admins: as before
    status, mine = await call(world.bob, "POST", "/agents", body("bobs_private"))
    assert status == 201 and "workspaceId" not in mine  # the reference's shape in a personal workspace
    _, in_w = await call(world.bob, "GET", "/agents", headers={H: world.ws})
    assert "bobs_private" not in [a["name"] for a in in_w]
    _, personal = await call(world.bob, "GET", "/agents")
    assert [a["name"] for a in personal] == ["bobs_private"]
    assert (await call(world.alice, "GET", f"/agents/{mine['_id']}", headers={H: world.ws}))[0] == 404


async def test_changing_agents_follows_the_roles(world: World) -> None:
    alices, bobs = world.agents["alices_tool"]["_id"], world.agents["bobs_tool"]["_id"]
    # PUT: a member edits their own; another member's is a 403; outsiders 404.
    expected = {
        ("alice", alices): 200, ("alice", bobs): 200, ("bob", alices): 403, ("bob", bobs): 200,
        ("carol", alices): 404, ("carol", bobs): 404, ("admin", alices): 200, ("admin", bobs): 200,
        ("token", alices): 404, ("token", bobs): 404,
    }
    for (who, agent_id), want in expected.items():
        client, headers = world.actor(who)
        status, answer = await call(client, "PUT", f"/agents/{agent_id}", {"description": f"by {who}"},
                                    headers=headers)
        assert status == want, (who, agent_id, answer)
        if status == 200:
            assert answer["workspaceId"] == world.ws  # an edit keeps the workspace
    # DELETE: same rule; the successful deletes come last.
    for who, agent_id, want in (("bob", alices, 403), ("carol", bobs, 404), ("token", bobs, 404),
                                ("bob", bobs, 204), ("alice", alices, 204)):
        client, headers = world.actor(who)
        assert (await call(client, "DELETE", f"/agents/{agent_id}", headers=headers))[0] == want, (who, agent_id)


async def test_deploying_is_for_workspace_admins_and_calling_for_members(world: World) -> None:
    alices, bobs = world.agents["alices_tool"], world.agents["bobs_tool"]
    deploy = {"alice": 201, "bob": 403, "carol": 404, "admin": 201, "token": 404}
    for who in ("carol", "token", "bob", "alice", "admin"):
        client, headers = world.actor(who)
        status, answer = await call(client, "POST", f"/agents/{alices['_id']}/deploy", headers=headers)
        assert status == deploy[who], (who, answer)
    status, answer = await call(world.bob, "POST", f"/agents/{bobs['_id']}/deploy", headers={H: world.ws})
    assert status == 403 and "admin" in answer["detail"]  # a member cannot publish even their own
    # Status: whoever may read it.
    for who, want in {"alice": 200, "bob": 200, "carol": 404, "admin": 200, "token": 404}.items():
        client, headers = world.actor(who)
        status, answer = await call(client, "GET", f"/agents/{alices['_id']}/deployment", headers=headers)
        assert status == want, who
        if status == 200:
            assert answer == {"is_deployed": True, "friendly_name": "alices_tool"}
    # /rest: the workspace's members (and tokens bound to it); everybody else the 404 of an unknown name.
    calls = {"alice": 200, "bob": 200, "carol": 404, "admin": 200, "token": 404}
    for who, want in calls.items():
        client, headers = world.actor(who)
        status, answer = await call(client, "POST", "/rest/alices_tool", {"inputText": "hi"}, headers=headers)
        assert status == want, (who, answer)
        if status == 200:
            assert answer == {"outputText": "HI"}
        else:
            _, unknown = await call(client, "POST", "/rest/no_such_tool", {"inputText": "hi"}, headers=headers)
            assert answer == unknown
    # Without the header too: membership, not the active workspace, decides who may call it.
    assert (await call(world.bob, "POST", "/rest/alices_tool", {"inputText": "x"}))[0] == 200
    assert (await call(world.carol, "POST", "/rest/alices_tool", {"inputText": "x"}))[0] == 404
    # A token bound to W calls it; a token bound to W cannot reach anything outside W.
    status, bound = await call(world.alice, "POST", "/users/me/tokens", {"name": "w", "workspaceId": world.ws})
    as_w = {"Authorization": f"Bearer {bound['token']}"}
    assert (await call(world.nobody, "POST", "/rest/alices_tool", {"inputText": "x"}, headers=as_w))[0] == 200
    status, listed = await call(world.nobody, "GET", "/agents", headers=as_w)
    assert status == 200 and sorted(a["name"] for a in listed) == ["alices_tool", "bobs_tool"]
    assert (await call(world.nobody, "GET", "/agents", headers={**as_w, H: "project:demo"}))[0] == 404
    # Undeploy: admins only.
    for who, want in (("bob", 403), ("carol", 404), ("token", 404), ("alice", 204)):
        client, headers = world.actor(who)
        assert (await call(client, "DELETE", f"/agents/{alices['_id']}/undeploy", headers=headers))[0] == want, who


async def test_deployments_of_a_workspace_stay_out_of_every_public_list(world: World) -> None:
    alices = world.agents["alices_tool"]
    assert (await call(world.alice, "POST", f"/agents/{alices['_id']}/deploy", headers={H: world.ws}))[0] == 201
    status, public = await call(world.carol, "POST", "/agents", body("carols_public"))
    assert (await call(world.carol, "POST", f"/agents/{public['_id']}/deploy"))[0] == 201
    for who in ("carol", "bob", "alice"):  # the public list, without a workspace
        _, listed = await call(getattr(world, who), "GET", "/deployments")
        assert [d["friendlyName"] for d in listed] == ["carols_public"], who
    for who in ("alice", "bob"):  # the workspace's own list adds its deployments
        _, listed = await call(getattr(world, who), "GET", "/deployments", headers={H: world.ws})
        assert sorted(d["friendlyName"] for d in listed) == ["alices_tool", "carols_public"], who
    assert (await call(world.carol, "GET", "/deployments", headers={H: world.ws}))[0] == 404
    # The catalog's synthetic gofannon provider is public: only public deployments.
    _, providers = await call(world.carol, "GET", "/providers/gofannon")
    assert "alices_tool" not in str(providers) and "carols_public" in str(providers)
    # The reference's "deploying is publishing" still holds for personal deployments: anyone may call.
    assert (await call(world.bob, "POST", "/rest/carols_public", {"inputText": "x"}))[0] == 200
    # The deployment name stays globally unique (a 409 names no workspace).
    status, clash = await call(world.carol, "POST", "/agents", body("alices_tool"))
    status, answer = await call(world.carol, "POST", f"/agents/{clash['_id']}/deploy")
    assert status == 409 and world.ws not in answer["detail"]


async def test_v1_models_lists_the_workspace_agents_a_member_may_call_and_nobody_elses(world: World) -> None:
    """``GET /v1/models`` lists every agent ``/rest`` (and ``/v1`` itself) would run for the caller: acting in
    their personal workspace, a member sees the agents of their shared workspaces too (they could call them by
    name anyway); acting in one workspace, that one's; an outsider never sees them."""
    alices = world.agents["alices_tool"]
    assert (await call(world.alice, "POST", f"/agents/{alices['_id']}/deploy", headers={H: world.ws}))[0] == 201
    status, public = await call(world.carol, "POST", "/agents", body("carols_public"))
    assert (await call(world.carol, "POST", f"/agents/{public['_id']}/deploy"))[0] == 201

    async def agent_models(who: str, headers: dict[str, str] | None = None) -> list[str]:
        status, listed = await call(getattr(world, who), "GET", "/v1/models", headers=headers or {})
        assert status == 200, listed
        return sorted(m["id"] for m in listed["data"] if m["id"].startswith("agent/"))

    for who in ("alice", "bob"):
        assert await agent_models(who) == ["agent/alices_tool", "agent/carols_public"], who
        assert await agent_models(who, {H: world.ws}) == ["agent/alices_tool", "agent/carols_public"], who
        assert await agent_models(who, {H: "project:demo"}) == ["agent/carols_public"], who
    assert await agent_models("carol") == ["agent/carols_public"]
    # What is listed is what can be called, and the outsider's refusal matches its absence from the list.
    chat = {"model": "agent/alices_tool", "messages": [{"role": "user", "content": "x"}]}
    assert (await call(world.bob, "POST", "/v1/chat/completions", chat))[0] == 200
    assert (await call(world.carol, "POST", "/v1/chat/completions", chat))[0] == 404


async def test_moving_an_agent_takes_its_deployment_along(world: World) -> None:
    alices = world.agents["alices_tool"]
    assert (await call(world.alice, "POST", f"/agents/{alices['_id']}/deploy", headers={H: world.ws}))[0] == 201
    other = await make_workspace(world.alice, "Other")
    move = f"/agents/{alices['_id']}/move"
    # bob is a member of W (he sees the agent: 403), even as an admin of Other; carol is in neither; a bound
    # token cannot leave its workspace; alice is not in bob's personal workspace.
    assert (await call(world.bob, "POST", move, {"workspaceId": other}))[0] == 403
    await call(world.alice, "PUT", f"/workspaces/{other}/members/dev_stub:bob", {"role": "admin"})
    assert (await call(world.bob, "POST", move, {"workspaceId": other}))[0] == 403
    assert (await call(world.carol, "POST", move, {"workspaceId": other}))[0] == 404
    client, headers = world.actor("token")
    assert (await call(client, "POST", move, {"workspaceId": other}, headers=headers))[0] == 404
    assert (await call(world.alice, "POST", move, {"workspaceId": "personal:dev_stub:bob"}))[0] == 404
    assert (await call(world.alice, "POST", move, {}))[0] == 422
    status, moved = await call(world.alice, "POST", move, {"workspaceId": other})
    assert status == 200 and moved["workspaceId"] == other
    _, in_w = await call(world.alice, "GET", "/agents", headers={H: world.ws})
    assert [a["name"] for a in in_w] == ["bobs_tool"]
    _, in_other = await call(world.alice, "GET", "/agents", headers={H: other})
    assert [a["name"] for a in in_other] == ["alices_tool"]
    # The deployment went along: W's members who are not in Other cannot call it any more.
    await call(world.alice, "DELETE", f"/workspaces/{other}/members/dev_stub:bob")
    assert (await call(world.bob, "POST", "/rest/alices_tool", {"inputText": "x"}))[0] == 404
    assert (await call(world.alice, "POST", "/rest/alices_tool", {"inputText": "x"}))[0] == 200
    # Into its author's personal workspace: public again, and gone from the workspace's list.
    status, home = await call(world.alice, "POST", move, {"workspaceId": "personal:dev_stub:alice"})
    assert status == 200 and "workspaceId" not in home
    assert (await call(world.bob, "POST", "/rest/alices_tool", {"inputText": "x"}))[0] == 200
    _, personal = await call(world.alice, "GET", "/agents")
    assert [a["name"] for a in personal] == ["alices_tool"]
    # Bob's agent cannot move into alice's personal workspace.
    status, answer = await call(world.alice, "POST", f"/agents/{world.agents['bobs_tool']['_id']}/move",
                                {"workspaceId": "personal:dev_stub:alice"})
    assert status == 409 and "author" in answer["detail"]


async def test_deleting_a_workspace_with_force_removes_its_agents_from_every_list(world: World) -> None:
    _, before = await call(world.admin, "GET", "/agents")
    assert len(before) == 2  # a site admin's list (cached) holds W's agents
    alices = world.agents["alices_tool"]
    assert (await call(world.alice, "POST", f"/agents/{alices['_id']}/deploy", headers={H: world.ws}))[0] == 201
    status, answer = await call(world.alice, "DELETE", f"/workspaces/{world.ws}")
    assert status == 409 and "3 resource(s)" in answer["detail"]  # two agents, one deployment
    assert (await call(world.bob, "DELETE", f"/workspaces/{world.ws}?force=true"))[0] == 403
    assert (await call(world.alice, "DELETE", f"/workspaces/{world.ws}?force=true"))[0] == 204
    _, after = await call(world.admin, "GET", "/agents")
    assert after == []
    assert (await call(world.alice, "POST", "/rest/alices_tool", {"inputText": "x"}))[0] == 404
    assert (await call(world.bob, "GET", "/agents", headers={H: world.ws}))[0] == 404


async def test_demos_of_a_workspace_follow_the_same_roles(world: World) -> None:
    from test_demos import demo_body

    made: dict[str, str] = {}
    for who in ("alice", "bob"):
        status, doc = await call(getattr(world, who), "POST", "/demos", demo_body(name=f"{who} demo"),
                                 headers={H: world.ws})
        assert status == 201 and doc["workspaceId"] == world.ws
        made[who] = doc["_id"]
    status, personal = await call(world.carol, "POST", "/demos", demo_body(name="carol demo"))
    assert status == 201 and "workspaceId" not in personal
    reads = {"alice": 200, "bob": 200, "carol": 404, "admin": 200, "token": 404}
    for who, want in reads.items():
        client, headers = world.actor(who)
        status, listed = await call(client, "GET", "/demos", headers=headers)
        assert status == want, who
        if status == 200:
            assert sorted(d["name"] for d in listed) == ["alice demo", "bob demo"]  # nothing of carol's
        assert (await call(client, "GET", f"/demos/{made['alice']}", headers=headers))[0] == want, who
    for who in ("alice", "bob"):
        _, mine = await call(getattr(world, who), "GET", "/demos")
        assert mine == [], who  # the personal list holds nothing of the workspace
    edits = {("bob", "alice"): 403, ("bob", "bob"): 200, ("alice", "bob"): 200, ("carol", "bob"): 404,
             ("token", "bob"): 404, ("admin", "alice"): 200}
    for (who, whose), want in edits.items():
        client, headers = world.actor(who)
        status, answer = await call(client, "PUT", f"/demos/{made[whose]}", demo_body(name=f"{whose} demo"),
                                    headers=headers)
        assert status == want, (who, whose, answer)
        if status == 200:
            assert answer["workspaceId"] == world.ws
    for who, whose, want in (("bob", "alice", 403), ("carol", "bob", 404), ("token", "bob", 404),
                             ("bob", "bob", 204), ("alice", "alice", 204)):
        client, headers = world.actor(who)
        assert (await call(client, "DELETE", f"/demos/{made[whose]}", headers=headers))[0] == want, (who, whose)


async def test_chat_settings_sessions_of_a_workspace_follow_the_same_roles(world: World) -> None:
    cfg = {"provider": "openai", "model": "gpt-4o", "parameters": {}}
    assert (await call(world.bob, "POST", "/sessions/team_chat/config", cfg, headers={H: world.ws}))[0] == 200
    expected = {  # (read, write, delete) for a session bob made in W
        "alice": (200, 200, None), "bob": (200, 200, None), "carol": (404, 404, 404), "admin": (200, 200, None),
        "token": (404, 404, 404),
    }
    for who, (read, write, delete) in expected.items():
        client, headers = world.actor(who)
        status, got = await call(client, "GET", "/sessions/team_chat/config", headers=headers)
        assert status == read, who
        if status == 404:
            assert got == {"detail": "Document 'team_chat' not found in 'sessions'"}
        assert (await call(client, "POST", "/sessions/team_chat/config", cfg, headers=headers))[0] == write, who
        if delete:
            assert (await call(client, "DELETE", "/sessions/team_chat", headers=headers))[0] == delete, who
    # alice's session in W: bob (a member) may read it but not change or delete it.
    assert (await call(world.alice, "POST", "/sessions/alices_chat/config", cfg, headers={H: world.ws}))[0] == 200
    assert (await call(world.bob, "GET", "/sessions/alices_chat/config"))[0] == 200
    assert (await call(world.bob, "POST", "/sessions/alices_chat/config", cfg))[0] == 403
    assert (await call(world.bob, "DELETE", "/sessions/alices_chat"))[0] == 403
    assert (await call(world.alice, "DELETE", "/sessions/alices_chat"))[0] == 200
    # A personal session stays its owner's, as before.
    assert (await call(world.carol, "POST", "/sessions/carols_chat/config", cfg))[0] == 200
    assert (await call(world.alice, "GET", "/sessions/carols_chat/config", headers={H: world.ws}))[0] == 404


async def test_run_records_of_a_workspace_are_its_members_to_see(world: World) -> None:
    import asyncio

    spec = {"code": CODE, "inputDict": {"inputText": "hi"}, "tools": {}}
    status, started = await call(world.bob, "POST", "/agents/run-code/start", spec, headers={H: world.ws})
    assert status == 202
    run_id = started["runId"]
    for _ in range(300):
        _, record = await call(world.bob, "GET", f"/runs/{run_id}")
        if record["status"] != "running":
            break
        await asyncio.sleep(0.05)
    assert record["status"] == "success" and record["workspaceId"] == world.ws, record
    for who, want in {"alice": 200, "bob": 200, "carol": 404, "admin": 200, "token": 404}.items():
        client, headers = world.actor(who)
        status, got = await call(client, "GET", f"/runs/{run_id}", headers=headers)
        assert status == want, who
        if status == 404:
            assert got == {"detail": "Run not found"}
        status, listed = await call(client, "GET", "/runs", headers=headers)
        if who in ("carol", "token"):
            assert status == 404
        else:
            assert [r["runId"] for r in listed["runs"]] == [run_id], who
    for who in ("alice", "bob"):
        _, personal = await call(getattr(world, who), "GET", "/runs")
        assert personal["runs"] == [], who
    assert (await call(world.carol, "POST", f"/runs/{run_id}/stop"))[0] == 404


async def test_a_workspace_has_one_data_store_shared_by_its_members_and_its_runs(world: World) -> None:
    rec = "/data-store/namespaces/notes/records/plan"
    status, saved = await call(world.bob, "PUT", rec, {"value": {"step": 1}}, headers={H: world.ws})
    assert status == 200
    for who, want in {"alice": 200, "bob": 200, "carol": 404, "admin": 200, "token": 404}.items():
        client, headers = world.actor(who)
        status, got = await call(client, "GET", rec, headers=headers)
        assert status == want, who
        if status == 200:
            assert got["value"] == {"step": 1}
        status, stats = await call(client, "GET", "/data-store/namespaces", headers=headers)
        assert status == want, who
    for who in ("alice", "bob"):  # personal data stores hold nothing of it
        assert (await call(getattr(world, who), "GET", rec))[0] == 404
    # An agent run in the workspace reads and writes the same records.
    code = ("async def run(input_dict, tools):\n"
            "    notes = data_store.use_namespace('notes')\n"
            "    notes.set('seen', True)\n"
            "    return {'plan': notes.get('plan')}\n")
    status, ran = await call(world.alice, "POST", "/agents/run-code",
                             {"code": code, "inputDict": {}, "tools": {}}, headers={H: world.ws})
    assert status == 200 and ran["result"] == {"plan": {"step": 1}}, ran
    assert (await call(world.bob, "GET", "/data-store/namespaces/notes/records/seen", headers={H: world.ws}))[0] == 200
    # So does an agent of the workspace called from a member's personal run: it runs in its workspace.
    noter = {**body("noter"), "code": code.replace("'seen'", "'called'")}
    status, agent = await call(world.alice, "POST", "/agents", noter, headers={H: world.ws})
    assert status == 201
    caller = ("async def run(input_dict, tools):\n"
              "    return await gofannon_client.call(agent_name='noter', input_dict={})\n")
    status, ran = await call(world.bob, "POST", "/agents/run-code",
                             {"code": caller, "inputDict": {}, "tools": {}, "gofannonAgents": [agent["_id"]]})
    assert status == 200 and ran["result"] == {"plan": {"step": 1}}, ran
    assert (await call(world.bob, "GET", "/data-store/namespaces/notes/records/called", headers={H: world.ws}))[0] == 200
    assert (await call(world.bob, "GET", "/data-store/namespaces/notes/records/called"))[0] == 404
    # Clearing a whole namespace is for the workspace's admins.
    assert (await call(world.bob, "DELETE", "/data-store/namespaces/notes", headers={H: world.ws}))[0] == 403
    status, cleared = await call(world.alice, "DELETE", "/data-store/namespaces/notes", headers={H: world.ws})
    assert status == 200 and cleared["deletedCount"] == 3


async def test_the_chain_of_a_workspace_agent_is_drawn_for_its_members(world: World) -> None:
    alices, bobs = world.agents["alices_tool"]["_id"], world.agents["bobs_tool"]["_id"]
    _, carols = await call(world.carol, "POST", "/agents", body("carols_tool"))
    status, _ = await call(world.alice, "PUT", f"/agents/{alices}", {"gofannonAgents": [bobs, carols["_id"]]})
    assert status == 200
    for who, want in {"alice": 200, "bob": 200, "carol": 404, "admin": 200, "token": 404}.items():
        client, headers = world.actor(who)
        status, chain = await call(client, "GET", f"/agents/{alices}/chain", headers=headers)
        assert status == want, who
        if status == 200 and who != "admin":
            assert chain["nodes"][bobs]["missing"] is False
            assert chain["nodes"][carols["_id"]]["missing"] is True  # carol's own agent stays hidden
            assert chain["nodes"][carols["_id"]]["name"] is None


async def test_a_member_cannot_withdraw_a_deployment_by_renaming_or_deleting_the_agent(world: World) -> None:
    bobs = world.agents["bobs_tool"]
    assert (await call(world.alice, "POST", f"/agents/{bobs['_id']}/deploy", headers={H: world.ws}))[0] == 201
    status, answer = await call(world.bob, "PUT", f"/agents/{bobs['_id']}", {"friendlyName": "renamed"})
    assert status == 403 and "admin" in answer["detail"]
    assert (await call(world.bob, "PUT", f"/agents/{bobs['_id']}", {"description": "fine"}))[0] == 200
    assert (await call(world.bob, "DELETE", f"/agents/{bobs['_id']}"))[0] == 403
    assert (await call(world.alice, "POST", "/rest/bobs_tool", {"inputText": "x"}))[0] == 200  # still published
    assert (await call(world.alice, "DELETE", f"/agents/{bobs['_id']}/undeploy"))[0] == 204
    assert (await call(world.bob, "PUT", f"/agents/{bobs['_id']}", {"friendlyName": "renamed"}))[0] == 200
    assert (await call(world.bob, "DELETE", f"/agents/{bobs['_id']}"))[0] == 204
