"""Request bodies of the user, admin and token routes (wire contract §1.4, §1.5, §6.4; DECISIONS.md)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from gofannon.models import WireModel

#: A finite number: NaN or infinity in a budget would poison every later comparison.
Money = Annotated[float, Field(allow_inf_nan=False)]


class MonthlyAllowanceBody(WireModel):
    monthly_allowance: Money


class AllowanceResetDateBody(WireModel):
    allowance_reset_date: Money


class SpendRemainingBody(WireModel):
    spend_remaining: Money


class UsageBody(WireModel):
    # >= 0: users may not add credit to themselves by posting negative usage (DECISIONS.md, Budgets).
    response_cost: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    metadata: dict[str, Any] | None = None


class AdminUserUpdate(WireModel):
    """Any subset; null or absent leaves the field unchanged."""

    monthly_allowance: Money | None = None
    allowance_reset_date: Money | None = None
    spend_remaining: Money | None = None


class ApiKeyBody(BaseModel):
    """The reference's body: snake ``api_key`` only (wire contract §6.4)."""

    model_config = ConfigDict(extra="ignore")

    provider: str
    api_key: Annotated[str, Field(min_length=1, max_length=4096)]


class TokenCreateBody(WireModel):
    name: Annotated[str, Field(min_length=1, max_length=200)]
