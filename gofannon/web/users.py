"""The caller's profile, budget and provider keys: ``/users/me`` and ``/users/me/*`` (wire contract §1.4, §6.4)."""

from __future__ import annotations

from aiohttp import web

from gofannon.auth import Identity
from gofannon.errors import Forbidden, Unprocessable
from gofannon.models.user import (
    AllowanceResetDateBody,
    ApiKeyBody,
    MonthlyAllowanceBody,
    SpendRemainingBody,
    UsageBody,
)
from gofannon.services import users
from gofannon.web.common import api_doc, identity, json_response, kernel_of, parse_body

routes = web.RouteTableDef()

_SELF_SERVICE_OFF = "Editing your own allowance is disabled on this server; ask an administrator"


def _budget_editor(request: web.Request) -> Identity:
    """The caller, when they may edit their own budget (DECISIONS.md: self_service_budget, admins always)."""
    ident = identity(request)
    if not kernel_of(request).settings.self_service_budget_on and not ident.is_site_admin:
        raise Forbidden(_SELF_SERVICE_OFF)
    return ident


@routes.get("/users/me")
@api_doc(summary="The caller's User (created on first access)", tags=["users"])
async def get_me(request: web.Request) -> web.Response:
    return json_response(await users.get_or_create_user(kernel_of(request), identity(request)))


@routes.put("/users/me/monthly-allowance")
@api_doc(summary="Set the monthly allowance (spendRemaining is clamped to it)", body=MonthlyAllowanceBody,
         tags=["users"])
async def put_monthly_allowance(request: web.Request) -> web.Response:
    ident = _budget_editor(request)
    body = await parse_body(request, MonthlyAllowanceBody)
    return json_response(await users.set_monthly_allowance(kernel_of(request), ident, body.monthly_allowance))


@routes.put("/users/me/allowance-reset-date")
@api_doc(summary="Set when the allowance resets next (epoch milliseconds)", body=AllowanceResetDateBody,
         tags=["users"])
async def put_allowance_reset_date(request: web.Request) -> web.Response:
    ident = _budget_editor(request)
    body = await parse_body(request, AllowanceResetDateBody)
    return json_response(await users.set_allowance_reset_date(kernel_of(request), ident, body.allowance_reset_date))


@routes.put("/users/me/spend-remaining")
@api_doc(summary="Set the remaining spend", body=SpendRemainingBody, tags=["users"])
async def put_spend_remaining(request: web.Request) -> web.Response:
    ident = _budget_editor(request)
    body = await parse_body(request, SpendRemainingBody)
    return json_response(await users.set_spend_remaining(kernel_of(request), ident, body.spend_remaining))


@routes.post("/users/me/usage")
@api_doc(summary="Record usage: appends an entry and lowers spendRemaining (cost must be >= 0)", body=UsageBody,
         tags=["users"])
async def post_usage(request: web.Request) -> web.Response:
    ident = identity(request)
    body = await parse_body(request, UsageBody)
    kernel = kernel_of(request)
    await users.get_or_create_user(kernel, ident)  # seed basicInfo from the identity on first use
    return json_response(await users.record_usage(kernel, ident.uid, body.response_cost, body.metadata))


@routes.get("/users/me/usage")
@api_doc(summary="The caller's full usage history, most recent `limit` entries (default 100, max 1000)",
         tags=["users"])
async def get_usage(request: web.Request) -> web.Response:
    ident = identity(request)
    raw = request.query.get("limit", "100")
    try:
        limit = int(raw)
    except ValueError:
        limit = -1
    if not 1 <= limit <= 1000:
        raise Unprocessable([{"type": "int_parsing" if limit == -1 else "less_than_equal", "loc": ["query", "limit"],
                              "msg": "limit must be an integer from 1 to 1000", "input": raw}])
    return json_response({"usage": await users.usage_history(kernel_of(request), ident.uid, limit=limit)})


@routes.post("/users/me/reset-allowance")
@api_doc(summary="Restore spendRemaining to the monthly allowance and clear recent usage", tags=["users"])
async def post_reset_allowance(request: web.Request) -> web.Response:
    ident = _budget_editor(request)
    return json_response(await users.reset_allowance(kernel_of(request), ident))


# -- provider keys ----------------------------------------------------------------------------------------
@routes.get("/users/me/api-keys")
@api_doc(summary="The caller's stored provider keys, masked (null when none)", tags=["users"])
async def get_api_keys(request: web.Request) -> web.Response:
    user = await users.get_or_create_user(kernel_of(request), identity(request))
    return json_response(user["apiKeys"])


@routes.put("/users/me/api-keys")
@api_doc(summary="Store a provider key (encrypted at rest; answers the User with the key masked)", body=ApiKeyBody,
         tags=["users"])
async def put_api_key(request: web.Request) -> web.Response:
    ident = identity(request)
    body = await parse_body(request, ApiKeyBody)
    return json_response(await users.set_api_key(kernel_of(request), ident, body.provider, body.api_key))


@routes.delete("/users/me/api-keys/{provider}")
@api_doc(summary="Remove a stored provider key", tags=["users"])
async def delete_api_key(request: web.Request) -> web.Response:
    ident = identity(request)
    return json_response(await users.delete_api_key(kernel_of(request), ident, request.match_info["provider"]))


@routes.get("/users/me/api-keys/{provider}/effective")
@api_doc(summary="Whether a key is available for a provider and where it comes from (user, env or none)",
         tags=["users"])
async def get_effective_key(request: web.Request) -> web.Response:
    ident = identity(request)
    return json_response(await users.effective_key_source(kernel_of(request), ident, request.match_info["provider"]))
