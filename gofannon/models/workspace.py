"""Wire models of workspaces (issue 14): bodies of ``/workspaces`` routes."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from gofannon.models import Money, WireModel

Role = Literal["member", "admin"]


class WorkspaceCreateBody(WireModel):
    display_name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=4000)


class WorkspaceUpdateBody(WireModel):
    """``PUT /workspaces/{id}``: the fields given are changed, the others kept."""

    display_name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=4000)


class MemberRoleBody(WireModel):
    role: Role


class InvitationBody(WireModel):
    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    role: Role = "member"


class BudgetBody(WireModel):
    """``monthlyAllowance`` in USD; null removes the limit (spend is still counted)."""

    monthly_allowance: Annotated[Money, Field(ge=0, le=1e9)] | None = Field()


class MoveBody(WireModel):
    """``POST /agents/{id}/move``."""

    workspace_id: str = Field(min_length=1, max_length=300)
