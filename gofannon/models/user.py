"""Request bodies of the user, admin and token routes (wire contract §1.4, §1.5, §6.4; DECISIONS.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from gofannon.models import Count, Money, WireModel


#: A monthly allowance: USD, not negative, at most a billion (the same bound as a workspace's).
Allowance = Annotated[Money, Field(ge=0, le=1e9)]


class MonthlyAllowanceBody(WireModel):
    monthly_allowance: Allowance


class AllowanceResetDateBody(WireModel):
    allowance_reset_date: Money


class SpendRemainingBody(WireModel):
    spend_remaining: Money


class UsageBody(WireModel):
    # >= 0: users may not add credit to themselves by posting negative usage (DECISIONS.md, Budgets).
    response_cost: Annotated[Money, Field(ge=0)]
    metadata: dict[str, Any] | None = None


class AdminUserUpdate(WireModel):
    """Any subset; null or absent leaves the field unchanged."""

    monthly_allowance: Allowance | None = None
    allowance_reset_date: Money | None = None
    spend_remaining: Money | None = None


class ApiKeyBody(BaseModel):
    """The reference's body: snake ``api_key`` only (wire contract §6.4)."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    provider: str
    api_key: Annotated[str, Field(min_length=1, max_length=4096)]


class TokenCreateBody(WireModel):
    """A personal API token; the optional fields scope it (docs/gateway.md "Scoped tokens")."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    #: Model ids the token may use (``openai/gpt-5``, ``agent/summarise``); a trailing ``*`` matches a prefix.
    models: Annotated[list[Annotated[str, Field(min_length=1, max_length=300)]], Field(max_length=200)] | None = None
    #: USD this token may spend in total, charged atomically besides the owner's allowance.
    max_spend: Annotated[Money, Field(ge=0)] | None = None
    #: ISO 8601; naive times are UTC. After it the token answers 401.
    expires_at: datetime | None = None
    #: Requests per minute, counted in the shared store (so across API processes).
    rpm: Annotated[Count, Field(ge=1, le=1_000_000)] | None = None
    #: The workspace the token is bound to (enforced by the workspaces service).
    workspace_id: Annotated[str, Field(min_length=1, max_length=300)] | None = None
