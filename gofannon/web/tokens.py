"""Personal API tokens: ``/users/me/tokens`` (DECISIONS.md "Personal API tokens")."""

from __future__ import annotations

from aiohttp import web

from gofannon.auth import Identity
from gofannon.errors import Forbidden
from gofannon.models.user import TokenCreateBody
from gofannon.services import tokens
from gofannon.web.common import api_doc, identity, json_response, kernel_of, no_content, parse_body

routes = web.RouteTableDef()


def _may_manage_tokens(ident: Identity) -> None:
    """A token with limits (models, spend, expiry, rate, a workspace) cannot make or revoke tokens: a new one
    would not carry its limits, and revoking would let it remove its owner's other tokens. A session or an
    unscoped token can."""
    if ident.token is not None:
        raise Forbidden("A scoped API token cannot create or revoke API tokens; sign in, or use a token without "
                        "limits.")


@routes.post("/users/me/tokens")
@api_doc(summary="Create a personal API token, optionally scoped (models, maxSpend, expiresAt, rpm, "
                 "workspaceId); `token` is shown in this answer only", body=TokenCreateBody, status=201, tags=["tokens"])
async def create_token(request: web.Request) -> web.Response:
    ident = identity(request)
    _may_manage_tokens(ident)
    body = await parse_body(request, TokenCreateBody)
    kernel = kernel_of(request)
    scope = tokens.scope_fields(models=body.models, max_spend=body.max_spend, expires_at=body.expires_at,
                                rpm=body.rpm, workspace_id=body.workspace_id)
    created = await tokens.create(kernel, ident, body.name, scope)
    kernel.record("api_token_created", f"{ident.uid} created API token {created['id']}", user_id=ident.uid,
                  metadata={"tokenId": created["id"], "name": body.name, **scope})
    return json_response(created, status=201)


@routes.get("/users/me/tokens")
@api_doc(summary="The caller's API tokens with their scope and spend (never the token itself)", tags=["tokens"])
async def list_tokens(request: web.Request) -> web.Response:
    ident = identity(request)
    return json_response({"tokens": await tokens.list_for(kernel_of(request), ident.uid)})


@routes.delete("/users/me/tokens/{token_id}")
@api_doc(summary="Revoke an API token; it answers 401 everywhere afterwards", status=204, tags=["tokens"])
async def revoke_token(request: web.Request) -> web.Response:
    ident = identity(request)
    _may_manage_tokens(ident)
    kernel = kernel_of(request)
    token_id = request.match_info["token_id"]
    await tokens.revoke(kernel, ident.uid, token_id)
    kernel.record("api_token_revoked", f"{ident.uid} revoked API token {token_id}", user_id=ident.uid,
                  metadata={"tokenId": token_id})
    return no_content()
