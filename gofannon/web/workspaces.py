"""``/workspaces``: workspaces made in the platform, their members, invitations and budgets (docs/workspaces.md)."""

from __future__ import annotations

from aiohttp import web

from gofannon.models.workspace import (
    BudgetBody, InvitationBody, MemberRoleBody, MoveBody, WorkspaceCreateBody, WorkspaceUpdateBody,
)
from gofannon.services import workspaces
from gofannon.web.common import api_doc, identity, json_response, kernel_of, no_content, parse_body
from gofannon.web.workspace import active_workspace

routes = web.RouteTableDef()
TAGS = ["workspaces"]


def _ws(request: web.Request) -> str:
    return request.match_info["workspace_id"]


@routes.post("/workspaces")
@api_doc(summary="Create a workspace; the caller becomes its admin", body=WorkspaceCreateBody, status=201, tags=TAGS)
async def create_workspace(request: web.Request) -> web.Response:
    ident = identity(request)
    body = await parse_body(request, WorkspaceCreateBody)
    kernel = kernel_of(request)
    created = await workspaces.create(kernel, ident, body.display_name, body.description)
    kernel.record("workspace_created", f"{ident.uid} created {created['workspaceId']}", user_id=ident.uid)
    return json_response(created, status=201)


@routes.get("/workspaces")
@api_doc(summary="The caller's workspaces, from every membership source, with their role", tags=TAGS)
async def list_workspaces(request: web.Request) -> web.Response:
    return json_response({"workspaces": await workspaces.memberships(kernel_of(request), identity(request))})


@routes.get("/workspaces/active")
@api_doc(summary="The workspace this request acts in (header X-Gofannon-Workspace, query `workspace`, the "
                 "token's bound workspace, else the personal one) and the caller's role there", tags=TAGS)
async def get_active(request: web.Request) -> web.Response:
    workspace_id, _role = await active_workspace(request)
    return json_response(await workspaces.get(kernel_of(request), identity(request), workspace_id))


@routes.get("/workspaces/{workspace_id}")
@api_doc(summary="One workspace as the caller sees it", tags=TAGS)
async def get_workspace(request: web.Request) -> web.Response:
    return json_response(await workspaces.get(kernel_of(request), identity(request), _ws(request)))


@routes.put("/workspaces/{workspace_id}")
@api_doc(summary="Rename or re-describe a workspace (its admins)", body=WorkspaceUpdateBody, tags=TAGS)
async def update_workspace(request: web.Request) -> web.Response:
    body = await parse_body(request, WorkspaceUpdateBody)
    return json_response(await workspaces.update(
        kernel_of(request), identity(request), _ws(request), display_name=body.display_name,
        description=body.description, fields=set(body.model_fields_set)))


@routes.delete("/workspaces/{workspace_id}")
@api_doc(summary="Delete a workspace (its admins); 409 while it holds resources unless ?force=true",
         status=204, tags=TAGS)
async def delete_workspace(request: web.Request) -> web.Response:
    ident = identity(request)
    kernel = kernel_of(request)
    force = request.query.get("force", "").lower() in ("1", "true", "yes", "on")
    await workspaces.delete(kernel, ident, _ws(request), force=force)
    kernel.record("workspace_deleted", f"{ident.uid} deleted {_ws(request)}", user_id=ident.uid,
                  metadata={"force": force})
    return no_content()


@routes.get("/workspaces/{workspace_id}/members")
@api_doc(summary="The workspace's members", tags=TAGS)
async def list_members(request: web.Request) -> web.Response:
    members = await workspaces.list_members(kernel_of(request), identity(request), _ws(request))
    return json_response({"members": members})


@routes.put("/workspaces/{workspace_id}/members/{uid}")
@api_doc(summary="Add a member or change a member's role (the workspace's admins)", body=MemberRoleBody, tags=TAGS)
async def put_member(request: web.Request) -> web.Response:
    body = await parse_body(request, MemberRoleBody)
    return json_response(await workspaces.set_member(
        kernel_of(request), identity(request), _ws(request), request.match_info["uid"], body.role))


@routes.delete("/workspaces/{workspace_id}/members/{uid}")
@api_doc(summary="Remove a member (the workspace's admins), or leave it (yourself)", status=204, tags=TAGS)
async def delete_member(request: web.Request) -> web.Response:
    await workspaces.remove_member(kernel_of(request), identity(request), _ws(request), request.match_info["uid"])
    return no_content()


@routes.post("/workspaces/{workspace_id}/invitations")
@api_doc(summary="Invite an e-mail address: who first signs in with it becomes a member", body=InvitationBody,
         status=201, tags=TAGS)
async def invite(request: web.Request) -> web.Response:
    body = await parse_body(request, InvitationBody)
    created = await workspaces.invite(kernel_of(request), identity(request), _ws(request), body.email, body.role)
    return json_response(created, status=201)


@routes.get("/workspaces/{workspace_id}/invitations")
@api_doc(summary="Open invitations (the workspace's admins)", tags=TAGS)
async def list_invitations(request: web.Request) -> web.Response:
    found = await workspaces.list_invitations(kernel_of(request), identity(request), _ws(request))
    return json_response({"invitations": found})


@routes.delete("/workspaces/{workspace_id}/invitations/{email}")
@api_doc(summary="Withdraw an invitation (the workspace's admins)", status=204, tags=TAGS)
async def revoke_invitation(request: web.Request) -> web.Response:
    await workspaces.revoke_invitation(kernel_of(request), identity(request), _ws(request),
                                       request.match_info["email"])
    return no_content()


@routes.put("/workspaces/{workspace_id}/budget")
@api_doc(summary="Set the workspace's monthly allowance (its admins; site admins)", body=BudgetBody, tags=TAGS)
async def put_budget(request: web.Request) -> web.Response:
    body = await parse_body(request, BudgetBody)
    return json_response(await workspaces.set_budget(kernel_of(request), identity(request), _ws(request),
                                                     body.monthly_allowance))


@routes.get("/workspaces/{workspace_id}/usage")
@api_doc(summary="This month's allowance, spend remaining, and spend per member and per model", tags=TAGS)
async def get_usage(request: web.Request) -> web.Response:
    return json_response(await workspaces.usage(kernel_of(request), identity(request), _ws(request)))


@routes.post("/agents/{agent_id}/move")
@api_doc(summary="Move an agent (and its deployment) to another workspace (an admin of both)", body=MoveBody,
         tags=TAGS)
async def move_agent(request: web.Request) -> web.Response:
    body = await parse_body(request, MoveBody)
    moved = await workspaces.move_agent(kernel_of(request), identity(request), request.match_info["agent_id"],
                                        body.workspace_id)
    return json_response(moved)
