"""Workspace budgets (docs/workspaces.md): a monthly allowance per shared workspace, charged alongside the
caller's own allowance by ``call_llm`` (``gofannon.llm.service``), atomically per document.

Kept below the other workspace modules: the LLM service asks it on every call made in a workspace, and it needs
only the store and the membership lookups.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from gofannon.errors import Conflict, Forbidden, PaymentRequired, Unprocessable
from gofannon.services.memberships import PERSONAL_PREFIX, effective_role
from gofannon.timeutil import now_iso

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.auth import Identity
    from gofannon.kernel import Kernel

BUDGETS = "workspace_budgets"
#: Below this a remaining allowance counts as exhausted (as for users).
MIN_SPEND = 1e-9


def _now_ms() -> float:
    return datetime.now(timezone.utc).timestamp() * 1000.0


def _month_start_ms(now_ms: float, months_ahead: int) -> float:
    now = datetime.fromtimestamp(now_ms / 1000.0, timezone.utc)
    month0 = now.month - 1 + months_ahead
    return datetime(now.year + month0 // 12, month0 % 12 + 1, 1, tzinfo=timezone.utc).timestamp() * 1000.0


def _new_budget(workspace_id: str, now_ms: float) -> dict[str, Any]:
    return {"workspaceId": workspace_id, "monthlyAllowance": None, "spendRemaining": None, "usage": 0.0,
            "spendByMember": {}, "spendByModel": {}, "periodStart": _month_start_ms(now_ms, 0),
            "allowanceResetDate": _month_start_ms(now_ms, 1)}


def _apply_reset(doc: dict[str, Any], now_ms: float) -> bool:
    """A new calendar month (UTC) starts the count again: spend back to the allowance, tallies emptied."""
    reset_at = doc.get("allowanceResetDate")
    if isinstance(reset_at, (int, float)) and reset_at > now_ms:
        return False
    allowance = doc.get("monthlyAllowance")
    doc.update(spendRemaining=allowance, usage=0.0, spendByMember={}, spendByModel={},
               periodStart=_month_start_ms(now_ms, 0), allowanceResetDate=_month_start_ms(now_ms, 1))
    return True


def _budget_view(workspace_id: str, doc: dict[str, Any] | None) -> dict[str, Any]:
    doc = doc or _new_budget(workspace_id, _now_ms())
    return {"workspaceId": workspace_id, "monthlyAllowance": doc.get("monthlyAllowance"),
            "spendRemaining": doc.get("spendRemaining"), "usage": float(doc.get("usage") or 0.0),
            "allowanceResetDate": doc.get("allowanceResetDate"), "periodStart": doc.get("periodStart"),
            "spendByMember": dict(doc.get("spendByMember") or {}),
            "spendByModel": dict(doc.get("spendByModel") or {})}


async def _budget(kernel: "Kernel", workspace_id: str) -> dict[str, Any] | None:
    doc = await kernel.store.get(BUDGETS, workspace_id)
    if doc is not None and _apply_reset(doc, _now_ms()):
        doc = await kernel.store.update(BUDGETS, workspace_id, _reset_only)
    return doc


def _reset_only(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    if doc is None or not _apply_reset(doc, _now_ms()):
        return None
    return doc


async def set_budget(kernel: "Kernel", ident: "Identity", workspace_id: str, allowance: float | None) -> dict[str, Any]:
    """Set (or with None, remove) a workspace's monthly allowance; what was spent this month counts."""
    if await effective_role(kernel, ident, workspace_id) != "admin":
        raise Forbidden("Only an admin of this workspace may do this")
    if workspace_id.startswith(PERSONAL_PREFIX):
        raise Conflict("A personal workspace has no budget of its own: its owner's allowance applies")
    if allowance is not None and (not math.isfinite(allowance) or allowance < 0):
        raise Unprocessable("monthlyAllowance must be a finite number >= 0, or null")
    now = _now_ms()

    def change(doc: dict[str, Any] | None) -> dict[str, Any]:
        doc = doc or _new_budget(workspace_id, now)
        _apply_reset(doc, now)
        doc["monthlyAllowance"] = allowance
        doc["spendRemaining"] = None if allowance is None else max(0.0, allowance - float(doc.get("usage") or 0.0))
        doc["updatedAt"] = now_iso()
        return doc

    return _budget_view(workspace_id, await kernel.store.update(BUDGETS, workspace_id, change))


async def usage(kernel: "Kernel", ident: "Identity", workspace_id: str) -> dict[str, Any]:
    """This month's allowance, what is left, and the spend per member and per model (members and site admins)."""
    await effective_role(kernel, ident, workspace_id)
    return _budget_view(workspace_id, await _budget(kernel, workspace_id))


def charges_workspace(workspace_id: str | None) -> bool:
    """Calls in a personal workspace (or none) are charged to the user alone, as before workspaces."""
    return bool(workspace_id) and not str(workspace_id).startswith(PERSONAL_PREFIX)


async def require_allowance(kernel: "Kernel", workspace_id: str) -> None:
    """402 when the workspace has an allowance and it is used up (after a due monthly reset)."""
    doc = await _budget(kernel, workspace_id)
    if doc is None or doc.get("monthlyAllowance") is None:
        return
    remaining = doc.get("spendRemaining")
    if not isinstance(remaining, (int, float)) or remaining <= MIN_SPEND:
        kernel.record("budget_refused", "workspace allowance exhausted", metadata={"workspaceId": workspace_id})
        raise PaymentRequired("Insufficient workspace allowance to complete request")


async def charge(kernel: "Kernel", workspace_id: str, uid: str, cost: float, model: str) -> dict[str, Any]:
    """Count ``cost`` against the workspace, atomically (one read-modify-write of its budget document)."""
    cost = float(cost)
    if not math.isfinite(cost) or cost < 0:
        raise Unprocessable("cost must be a finite number >= 0")
    now = _now_ms()

    def change(doc: dict[str, Any] | None) -> dict[str, Any]:
        doc = doc or _new_budget(workspace_id, now)
        _apply_reset(doc, now)
        doc["usage"] = float(doc.get("usage") or 0.0) + cost
        by_member = dict(doc.get("spendByMember") or {})
        by_member[uid] = float(by_member.get(uid) or 0.0) + cost
        by_model = dict(doc.get("spendByModel") or {})
        by_model[model] = float(by_model.get(model) or 0.0) + cost
        doc["spendByMember"], doc["spendByModel"] = by_member, by_model
        if doc.get("monthlyAllowance") is not None:
            doc["spendRemaining"] = max(0.0, float(doc.get("spendRemaining") or 0.0) - cost)
        return doc

    stored = await kernel.store.update(BUDGETS, workspace_id, change)
    assert stored is not None
    return stored
