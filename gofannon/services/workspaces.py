"""Workspaces (issue 14): who is a member of what with which role, the workspace a request acts in,
workspaces made in the platform, invitations and workspace budgets.

Memberships come from two places:

- the login: the personal workspace ``personal:<uid>`` (always, role admin) and whatever the login backend
  reported (dev_stub config, ASF projects, OIDC groups claim, GitHub organisations, ...). They travel with the
  session (or the token's snapshot) and are refreshed as sessions are;
- the store: workspaces made here (``workspaces/<ws:...>``, source ``manual``) and one membership document per
  member (``workspace_members/<workspaceId>|<uid>``). These are read when they are needed — when a request
  names a workspace, lists memberships or manages one — never cached, so a change applies to the member's next
  request without a new login.

Ids of workspaces made here start with ``ws:``, which no login backend produces, so they never collide with
provider-derived ids. A request that names no workspace acts in the caller's personal workspace and costs no
store read.
"""

from __future__ import annotations

import asyncio
import math
import re
import secrets
import unicodedata
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from gofannon.errors import Conflict, Forbidden, NotFound, PaymentRequired, Unprocessable
from gofannon.timeutil import now_iso

if TYPE_CHECKING:  # pragma: no cover
    from aiohttp import web

    from gofannon.auth import Identity
    from gofannon.kernel import Kernel

COLLECTION = "workspaces"
MEMBERS = "workspace_members"
INVITATIONS = "workspace_invitations"
BUDGETS = "workspace_budgets"
HEADER = "X-Gofannon-Workspace"
QUERY = "workspace"
MANUAL_PREFIX = "ws:"
PERSONAL_PREFIX = "personal:"
ROLES = ("member", "admin")
#: How many workspaces one user may create; bounds what one account can make the store hold.
MAX_CREATED_PER_USER = 100
MAX_MEMBERS = 1000
MAX_INVITATIONS = 200
MAX_ID_LENGTH = 256
#: Below this a remaining allowance counts as exhausted (as for users).
MIN_SPEND = 1e-9
#: Resource collections whose documents carry ``workspaceId``; a workspace holding any cannot be deleted
#: without ``force``.
RESOURCE_COLLECTIONS = ("agents", "deployments", "demos", "agent_data_store", "gofannon_runs", "sessions")

NOT_FOUND = "Workspace not found"
DERIVED_READ_ONLY = ("This workspace's memberships come from the login provider; they are managed there, "
                     "not here")

try:
    from aiohttp import web as _web

    ACTIVE_KEY: Any = _web.RequestKey("gofannon_workspace", object)
except AttributeError:  # pragma: no cover - aiohttp < 3.14
    ACTIVE_KEY = "gofannon_workspace"


# -- ids and shapes ------------------------------------------------------------------------------------
def personal_id(ident: "Identity") -> str:
    """``personal:<provider>:<externalId>``; the uid is ``<provider>:<externalId>``."""
    return PERSONAL_PREFIX + ident.uid


def is_manual(workspace_id: str) -> bool:
    return workspace_id.startswith(MANUAL_PREFIX)


def _member_id(workspace_id: str, uid: str) -> str:
    return f"{workspace_id}|{uid}"


def _invitation_id(workspace_id: str, email: str) -> str:
    return f"{workspace_id}|{email.lower()}"


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:40].strip("-")
    return slug or "workspace"


def membership(workspace_id: str, role: str, display_name: str | None, source: str,
               description: str | None = None) -> dict[str, Any]:
    """The ``WorkspaceMembership`` wire shape (wire contract §2.7)."""
    return {"workspaceId": workspace_id, "role": role, "displayName": display_name, "source": source,
            "description": description}


def _manual_view(ws: dict[str, Any], role: str) -> dict[str, Any]:
    return membership(ws["_id"], role, ws.get("displayName"), "manual", ws.get("description"))


def _derived(ident: "Identity") -> list[dict[str, Any]]:
    """The login's memberships, personal first (it is always there, even for a token made before)."""
    own = personal_id(ident)
    found = [w for w in ident.workspaces if isinstance(w, dict) and w.get("workspaceId")]
    personal = next((w for w in found if w["workspaceId"] == own), None)
    rest = [w for w in found if w["workspaceId"] != own and not is_manual(str(w["workspaceId"]))]
    return [personal or membership(own, "admin", "Personal", "auto_personal"), *rest]


# -- memberships --------------------------------------------------------------------------------------
async def memberships(kernel: "Kernel", ident: "Identity") -> list[dict[str, Any]]:
    """Every workspace the caller is a member of: the login's (personal first), then those made here."""
    result = _derived(ident)
    docs = await kernel.store.find(MEMBERS, {"uid": ident.uid})
    if docs:
        ids = [d["workspaceId"] for d in docs]
        spaces = await kernel.store.get_many(COLLECTION, ids)
        for d in sorted(docs, key=lambda d: d["workspaceId"]):
            ws = spaces.get(d["workspaceId"])
            if ws is not None:
                result.append(_manual_view(ws, d.get("role") or "member"))
    return result


async def has_manual_membership(kernel: "Kernel", uid: str) -> bool:
    """Whether ``uid`` is a member of any workspace made here (which grants access to the platform even when
    the login backend reported no membership)."""
    return bool(await kernel.store.find(MEMBERS, {"uid": uid}, limit=1))


async def role_in(kernel: "Kernel", ident: "Identity", workspace_id: str) -> str | None:
    """The caller's own role in a workspace (None: not a member). Site-admin rights are not counted here."""
    for w in _derived(ident):
        if w["workspaceId"] == workspace_id:
            return str(w.get("role") or "member")
    if is_manual(workspace_id) and len(workspace_id) <= MAX_ID_LENGTH:
        doc = await kernel.store.get(MEMBERS, _member_id(workspace_id, ident.uid))
        if doc is not None:
            return str(doc.get("role") or "member")
    return None


async def _exists(kernel: "Kernel", workspace_id: str) -> bool:
    """Whether a site admin may act in ``workspace_id``: a workspace made here must exist; a
    provider-derived one cannot be checked (its members are at the provider), so its form is enough."""
    if len(workspace_id) > MAX_ID_LENGTH or ":" not in workspace_id:
        return False
    if is_manual(workspace_id):
        return await kernel.store.get(COLLECTION, workspace_id) is not None
    return True


async def effective_role(kernel: "Kernel", ident: "Identity", workspace_id: str) -> str:
    """The caller's role, site admins acting as admins anywhere; 404 for everybody else who is not a member
    (the same answer as an unknown workspace, so ids do not leak)."""
    role = await role_in(kernel, ident, workspace_id)
    if role is not None:
        return "admin" if ident.is_site_admin else role
    if ident.is_site_admin and await _exists(kernel, workspace_id):
        return "admin"
    raise NotFound(NOT_FOUND)


# -- the active workspace -------------------------------------------------------------------------------
def bound_workspace(ident: "Identity") -> str | None:
    """The workspace the caller's token is bound to, if any."""
    bound = (ident.token or {}).get("workspaceId")
    return str(bound) if bound else None


async def resolve_active(kernel: "Kernel", ident: "Identity", named: str | None) -> tuple[str, str]:
    """``(workspaceId, role)`` of a request that named ``named`` (or nothing).

    Without a name: the token's bound workspace, else the personal one (no store read). A token bound to one
    workspace cannot act in another (404, as for a non-member).
    """
    named = (named or "").strip() or None
    bound = bound_workspace(ident)
    if named is None:
        named = bound or personal_id(ident)
    elif bound is not None and named != bound:
        raise NotFound(NOT_FOUND)
    if named == personal_id(ident):
        return named, "admin"
    return named, await effective_role(kernel, ident, named)


async def active_workspace(request: "web.Request") -> tuple[str, str]:
    """The workspace this request acts in and the caller's role there, from the header
    ``X-Gofannon-Workspace`` or the query parameter ``workspace``; computed once per request."""
    cached = request.get(ACTIVE_KEY)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    from gofannon.web.common import identity, kernel_of

    named = request.headers.get(HEADER) or request.query.get(QUERY)
    result = await resolve_active(kernel_of(request), identity(request), named)
    request[ACTIVE_KEY] = result
    return result


# -- workspaces made here ----------------------------------------------------------------------------------
async def _load_manual(kernel: "Kernel", workspace_id: str) -> dict[str, Any]:
    doc = await kernel.store.get(COLLECTION, workspace_id) if len(workspace_id) <= MAX_ID_LENGTH else None
    if doc is None:
        raise NotFound(NOT_FOUND)
    return doc


async def create(kernel: "Kernel", ident: "Identity", display_name: str, description: str | None) -> dict[str, Any]:
    """A new workspace; the creator is its admin. Its id is ``ws:<slug of the name>-<8 hex>``."""
    display_name = display_name.strip()
    if not display_name:
        raise Unprocessable("displayName must not be blank")
    if await kernel.store.count(COLLECTION, {"createdBy": ident.uid}) >= MAX_CREATED_PER_USER:
        raise Conflict(f"At most {MAX_CREATED_PER_USER} workspaces per user; delete one first")
    now = now_iso()
    for _ in range(5):
        workspace_id = f"{MANUAL_PREFIX}{_slug(display_name)}-{secrets.token_hex(4)}"
        try:
            await kernel.store.put(COLLECTION, workspace_id, {
                "displayName": display_name, "description": description, "createdBy": ident.uid,
                "createdAt": now, "updatedAt": now,
            }, rev=None)
            break
        except Conflict:
            continue
    else:  # pragma: no cover - 2**32 ids per name
        raise Conflict("Could not allocate a workspace id; try again")
    await _put_member(kernel, workspace_id, ident.uid, "admin", ident.display_name, ident.uid)
    return membership(workspace_id, "admin", display_name, "manual", description)


async def _put_member(kernel: "Kernel", workspace_id: str, uid: str, role: str, display_name: str | None,
                      by: str) -> dict[str, Any]:
    now = now_iso()

    def change(doc: dict[str, Any] | None) -> dict[str, Any]:
        doc = doc or {"workspaceId": workspace_id, "uid": uid, "addedAt": now, "addedBy": by}
        doc["role"] = role
        if display_name:
            doc["displayName"] = display_name
        doc["updatedAt"] = now
        return doc

    stored = await kernel.store.update(MEMBERS, _member_id(workspace_id, uid), change)
    assert stored is not None
    return stored


async def get(kernel: "Kernel", ident: "Identity", workspace_id: str) -> dict[str, Any]:
    """The workspace as the caller sees it (with their role); 404 for non-members."""
    role = await effective_role(kernel, ident, workspace_id)
    if is_manual(workspace_id):
        return _manual_view(await _load_manual(kernel, workspace_id), role)
    for w in _derived(ident):
        if w["workspaceId"] == workspace_id:
            return {**membership(workspace_id, role, w.get("displayName"), str(w.get("source") or "")),
                    "description": w.get("description")}
    return membership(workspace_id, role, workspace_id, "provider")  # a site admin looking at another's


async def _require_admin(kernel: "Kernel", ident: "Identity", workspace_id: str) -> None:
    if await effective_role(kernel, ident, workspace_id) != "admin":
        raise Forbidden("Only an admin of this workspace may do this")


async def _require_manual_admin(kernel: "Kernel", ident: "Identity", workspace_id: str) -> None:
    await _require_admin(kernel, ident, workspace_id)
    if not is_manual(workspace_id):
        raise Conflict(DERIVED_READ_ONLY)


async def update(kernel: "Kernel", ident: "Identity", workspace_id: str, *, display_name: str | None,
                 description: str | None, fields: set[str]) -> dict[str, Any]:
    """Rename or re-describe a workspace made here (its admins); ``fields`` = the keys the body set."""
    await _require_manual_admin(kernel, ident, workspace_id)
    if display_name is not None and not display_name.strip():
        raise Unprocessable("displayName must not be blank")

    def change(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        if doc is None:
            return None
        if "display_name" in fields and display_name is not None:
            doc["displayName"] = display_name.strip()
        if "description" in fields:
            doc["description"] = description
        doc["updatedAt"] = now_iso()
        return doc

    stored = await kernel.store.update(COLLECTION, workspace_id, change)
    if stored is None:
        raise NotFound(NOT_FOUND)
    return _manual_view(stored, "admin")


#: The data store keys a shared workspace's records by the workspace id where a user's are keyed by uid.
DATA_STORE = ("agent_data_store", "userId")


async def resource_count(kernel: "Kernel", workspace_id: str) -> int:
    counts = await asyncio.gather(*[kernel.store.count(c, {"workspaceId": workspace_id})
                                    for c in RESOURCE_COLLECTIONS],
                                  kernel.store.count(DATA_STORE[0], {DATA_STORE[1]: workspace_id}))
    return sum(counts)


async def delete(kernel: "Kernel", ident: "Identity", workspace_id: str, *, force: bool) -> None:
    """Delete a workspace made here, its memberships, invitations and budget; 409 while it still holds
    resources unless ``force`` (then they are deleted too)."""
    await _require_manual_admin(kernel, ident, workspace_id)
    held = await resource_count(kernel, workspace_id)
    if held and not force:
        raise Conflict(f"The workspace still holds {held} resource(s); move or delete them, or delete with "
                       "?force=true to delete them too")
    if held:
        for collection in RESOURCE_COLLECTIONS:
            ids = [d["_id"] for d in await kernel.store.find(collection, {"workspaceId": workspace_id})]
            if ids:
                await kernel.store.delete_many(collection, ids)
        records = [d["_id"] for d in await kernel.store.find(DATA_STORE[0], {DATA_STORE[1]: workspace_id})]
        if records:
            await kernel.store.delete_many(DATA_STORE[0], records)
        from gofannon.services import agents, deployments

        await agents.lists_changed(kernel)
        await deployments.changed(kernel)
    # The workspace document goes first: once it is gone, leftover memberships grant nothing.
    await kernel.store.delete(COLLECTION, workspace_id)
    for collection in (MEMBERS, INVITATIONS):
        ids = [d["_id"] for d in await kernel.store.find(collection, {"workspaceId": workspace_id})]
        if ids:
            await kernel.store.delete_many(collection, ids)
    await kernel.store.delete(BUDGETS, workspace_id)


# -- members ---------------------------------------------------------------------------------------------
def _member_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {"uid": doc["uid"], "displayName": doc.get("displayName"), "role": doc.get("role") or "member",
            "source": "manual"}


async def list_members(kernel: "Kernel", ident: "Identity", workspace_id: str) -> list[dict[str, Any]]:
    """Members of a workspace made here. Of a provider-derived one the kernel knows only the caller: its
    member list lives at the provider."""
    await effective_role(kernel, ident, workspace_id)
    if not is_manual(workspace_id):
        own = await role_in(kernel, ident, workspace_id)
        if own is None:
            return []
        source = next((str(w.get("source") or "") for w in _derived(ident) if w["workspaceId"] == workspace_id), "")
        return [{"uid": ident.uid, "displayName": ident.display_name, "role": own, "source": source}]
    await _load_manual(kernel, workspace_id)
    docs = await kernel.store.find(MEMBERS, {"workspaceId": workspace_id})
    unnamed = [d["uid"] for d in docs if not d.get("displayName")]
    if unnamed:  # added before they ever signed in: their name is known once they have
        users = await kernel.store.get_many("users", unnamed)
        for d in docs:
            if not d.get("displayName"):
                d["displayName"] = ((users.get(d["uid"]) or {}).get("basicInfo") or {}).get("displayName")
    return [_member_view(d) for d in sorted(docs, key=lambda d: d["uid"])]


async def _admins(kernel: "Kernel", workspace_id: str) -> list[str]:
    return [d["uid"] for d in await kernel.store.find(MEMBERS, {"workspaceId": workspace_id, "role": "admin"})]


async def set_member(kernel: "Kernel", ident: "Identity", workspace_id: str, uid: str, role: str) -> dict[str, Any]:
    """Add a member or change a member's role (the workspace's admins). The last admin cannot step down."""
    await _require_manual_admin(kernel, ident, workspace_id)
    await _load_manual(kernel, workspace_id)
    if role not in ROLES:
        raise Unprocessable(f"role must be one of {', '.join(ROLES)}")
    if ":" not in uid or len(uid) > MAX_ID_LENGTH:
        raise Unprocessable("uid must be a user id as /auth/me reports it (<provider>:<id>)")
    current = await kernel.store.get(MEMBERS, _member_id(workspace_id, uid))
    if current is None and await kernel.store.count(MEMBERS, {"workspaceId": workspace_id}) >= MAX_MEMBERS:
        raise Conflict(f"At most {MAX_MEMBERS} members per workspace")
    if current is not None and current.get("role") == "admin" and role != "admin" \
            and await _admins(kernel, workspace_id) == [uid]:
        raise Conflict("A workspace needs at least one admin; make someone else admin first")
    display_name = None
    if current is None:
        user = await kernel.store.get("users", uid)
        display_name = ((user or {}).get("basicInfo") or {}).get("displayName")
    stored = await _put_member(kernel, workspace_id, uid, role, display_name, ident.uid)
    if current is not None and current.get("role") == "admin" and role != "admin":
        await _keep_an_admin(kernel, workspace_id, restore=current)
    return _member_view(stored)


async def _keep_an_admin(kernel: "Kernel", workspace_id: str, *, restore: dict[str, Any]) -> None:
    """After a demotion or removal: if two ran at once and left no admin, put this one back and refuse (409)."""
    if await _admins(kernel, workspace_id):
        return
    doc = {k: v for k, v in restore.items() if k not in ("_id", "_rev")}
    await kernel.store.put(MEMBERS, _member_id(workspace_id, str(restore["uid"])), doc)
    raise Conflict("A workspace needs at least one admin; make someone else admin first")


async def remove_member(kernel: "Kernel", ident: "Identity", workspace_id: str, uid: str) -> None:
    """Remove a member (the workspace's admins), or leave (anyone, for themselves)."""
    if uid != ident.uid:
        await _require_manual_admin(kernel, ident, workspace_id)
    else:
        await effective_role(kernel, ident, workspace_id)
        if not is_manual(workspace_id):
            raise Conflict(DERIVED_READ_ONLY)
    current = await kernel.store.get(MEMBERS, _member_id(workspace_id, uid))
    if current is None:
        raise NotFound("Member not found")
    if current.get("role") == "admin" and await _admins(kernel, workspace_id) == [uid]:
        raise Conflict("A workspace needs at least one admin; make someone else admin first")
    await kernel.store.delete(MEMBERS, _member_id(workspace_id, uid))
    if current.get("role") == "admin":
        await _keep_an_admin(kernel, workspace_id, restore=current)


# -- invitations ---------------------------------------------------------------------------------------
def _invitation_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {"workspaceId": doc["workspaceId"], "email": doc["email"], "role": doc["role"],
            "invitedBy": doc.get("invitedBy"), "createdAt": doc.get("createdAt")}


async def invite(kernel: "Kernel", ident: "Identity", workspace_id: str, email: str, role: str) -> dict[str, Any]:
    """Invite an e-mail address: whoever first signs in with it becomes a member with ``role``."""
    await _require_manual_admin(kernel, ident, workspace_id)
    await _load_manual(kernel, workspace_id)
    if role not in ROLES:
        raise Unprocessable(f"role must be one of {', '.join(ROLES)}")
    email = email.strip().lower()
    doc_id = _invitation_id(workspace_id, email)
    if await kernel.store.get(INVITATIONS, doc_id) is None and \
            await kernel.store.count(INVITATIONS, {"workspaceId": workspace_id}) >= MAX_INVITATIONS:
        raise Conflict(f"At most {MAX_INVITATIONS} open invitations per workspace")
    doc = {"workspaceId": workspace_id, "email": email, "role": role, "invitedBy": ident.uid, "createdAt": now_iso()}
    await kernel.store.put(INVITATIONS, doc_id, doc)
    return _invitation_view(doc)


async def list_invitations(kernel: "Kernel", ident: "Identity", workspace_id: str) -> list[dict[str, Any]]:
    await _require_manual_admin(kernel, ident, workspace_id)
    docs = await kernel.store.find(INVITATIONS, {"workspaceId": workspace_id})
    return [_invitation_view(d) for d in sorted(docs, key=lambda d: d["email"])]


async def revoke_invitation(kernel: "Kernel", ident: "Identity", workspace_id: str, email: str) -> None:
    await _require_manual_admin(kernel, ident, workspace_id)
    if not await kernel.store.delete(INVITATIONS, _invitation_id(workspace_id, email.strip())):
        raise NotFound("Invitation not found")


async def accept_invitations(kernel: "Kernel", uid: str, email: str | None, display_name: str | None) -> list[str]:
    """Turn the open invitations for ``email`` into memberships of ``uid`` (called at login). Returns the
    workspace ids joined. An existing membership keeps its role."""
    if not email:
        return []
    invitations = await kernel.store.find(INVITATIONS, {"email": email.strip().lower()})
    joined: list[str] = []
    for inv in invitations:
        workspace_id = inv["workspaceId"]
        if await kernel.store.get(COLLECTION, workspace_id) is not None:
            if await kernel.store.get(MEMBERS, _member_id(workspace_id, uid)) is None:
                await _put_member(kernel, workspace_id, uid, inv.get("role") or "member", display_name,
                                  str(inv.get("invitedBy") or ""))
            joined.append(workspace_id)
        await kernel.store.delete(INVITATIONS, inv["_id"])
    return joined


# -- budgets ---------------------------------------------------------------------------------------------
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
    await _require_admin(kernel, ident, workspace_id)
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


# -- migration -------------------------------------------------------------------------------------------
#: Collections whose documents belong to a workspace, made explicit by ``gofannon store migrate``.
MIGRATED_COLLECTIONS = ("agents", "deployments", "demos", "gofannon_runs", "sessions")


async def migrate_store(store: Any, *, dry_run: bool = False) -> dict[str, int]:
    """``gofannon store migrate``: write ``workspaceId`` = the owner's personal workspace on every document
    of ``MIGRATED_COLLECTIONS`` that has an owner and no workspace (what the kernel assumes anyway). Each
    document goes through ``update``, so it is safe while the service runs; running it again changes
    nothing. Returns how many documents of each collection were (or, with ``dry_run``, would be) changed."""
    changed: dict[str, int] = {}
    for collection in MIGRATED_COLLECTIONS:
        count = 0
        for doc in await store.list(collection):
            owner = doc.get("ownerId")
            if doc.get("workspaceId") or not isinstance(owner, str) or not owner:
                continue
            count += 1
            if dry_run:
                continue

            def change(current: dict[str, Any] | None) -> dict[str, Any] | None:
                if current is None or current.get("workspaceId") or not current.get("ownerId"):
                    return None
                current["workspaceId"] = PERSONAL_PREFIX + str(current["ownerId"])
                return current

            await store.update(collection, doc["_id"], change)
        changed[collection] = count
    return changed
