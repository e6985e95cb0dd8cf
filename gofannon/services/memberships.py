"""Workspace memberships and the active workspace (docs/workspaces.md): who is a member of what with which
role, and which workspace a request acts in.

The lowest workspace module: it reads the store and the caller's identity only, so the ownership service,
tokens and every other service may ask it. Workspaces made in the platform, members, invitations and cascades
live in ``gofannon.services.workspaces``; budgets in ``gofannon.services.workspace_budgets``.

Memberships come from two places:

- the login: the personal workspace ``personal:<uid>`` (always, role admin) and whatever the login backend
  reported (dev_stub config, ASF projects, OIDC groups claim, GitHub organisations, ...). They travel with the
  session (or the token's snapshot) and are refreshed as sessions are;
- the store: workspaces made here (``workspaces/<ws:...>``, source ``manual``) and one membership document per
  member (``workspace_members/<workspaceId>|<uid>``). These are read when they are needed — when a request
  names a workspace, lists memberships or touches a document of such a workspace — never cached, so a change
  applies to the member's next request without a new login.

Ids of workspaces made here start with ``ws:``, which no login backend produces, so they never collide with
provider-derived ids. A request that names no workspace acts in the caller's personal workspace and costs no
store read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gofannon.errors import NotFound

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.auth import Identity
    from gofannon.kernel import Kernel

COLLECTION = "workspaces"
MEMBERS = "workspace_members"
HEADER = "X-Gofannon-Workspace"
QUERY = "workspace"
MANUAL_PREFIX = "ws:"
PERSONAL_PREFIX = "personal:"
ROLES = ("member", "admin")
MAX_ID_LENGTH = 256
NOT_FOUND = "Workspace not found"

# -- ids and shapes ------------------------------------------------------------------------------------
def personal_id(ident: "Identity") -> str:
    """``personal:<provider>:<externalId>``; the uid is ``<provider>:<externalId>``."""
    return PERSONAL_PREFIX + ident.uid


def is_manual(workspace_id: str) -> bool:
    return workspace_id.startswith(MANUAL_PREFIX)


def member_id(workspace_id: str, uid: str) -> str:
    return f"{workspace_id}|{uid}"


def membership(workspace_id: str, role: str, display_name: str | None, source: str,
               description: str | None = None) -> dict[str, Any]:
    """The ``WorkspaceMembership`` wire shape (wire contract §2.7)."""
    return {"workspaceId": workspace_id, "role": role, "displayName": display_name, "source": source,
            "description": description}


def manual_view(ws: dict[str, Any], role: str) -> dict[str, Any]:
    return membership(ws["_id"], role, ws.get("displayName"), "manual", ws.get("description"))


def derived(ident: "Identity") -> list[dict[str, Any]]:
    """The login's memberships, personal first (it is always there, even for a token made before)."""
    own = personal_id(ident)
    found = [w for w in ident.workspaces if isinstance(w, dict) and w.get("workspaceId")]
    personal = next((w for w in found if w["workspaceId"] == own), None)
    rest = [w for w in found if w["workspaceId"] != own and not is_manual(str(w["workspaceId"]))]
    return [personal or membership(own, "admin", "Personal", "auto_personal"), *rest]


# -- memberships --------------------------------------------------------------------------------------
async def memberships(kernel: "Kernel", ident: "Identity") -> list[dict[str, Any]]:
    """Every workspace the caller is a member of: the login's (personal first), then those made here."""
    result = derived(ident)
    docs = await kernel.store.find(MEMBERS, {"uid": ident.uid})
    if docs:
        ids = [d["workspaceId"] for d in docs]
        spaces = await kernel.store.get_many(COLLECTION, ids)
        for d in sorted(docs, key=lambda d: d["workspaceId"]):
            ws = spaces.get(d["workspaceId"])
            if ws is not None:
                result.append(manual_view(ws, d.get("role") or "member"))
    return result


async def has_manual_membership(kernel: "Kernel", uid: str) -> bool:
    """Whether ``uid`` is a member of any workspace made here (which grants access to the platform even when
    the login backend reported no membership)."""
    return bool(await kernel.store.find(MEMBERS, {"uid": uid}, limit=1))


async def role_in(kernel: "Kernel", ident: "Identity", workspace_id: str) -> str | None:
    """The caller's own role in a workspace (None: not a member). Site-admin rights are not counted here."""
    for w in derived(ident):
        if w["workspaceId"] == workspace_id:
            return str(w.get("role") or "member")
    if is_manual(workspace_id) and len(workspace_id) <= MAX_ID_LENGTH:
        doc = await kernel.store.get(MEMBERS, member_id(workspace_id, ident.uid))
        if doc is not None:
            return str(doc.get("role") or "member")
    return None


async def exists(kernel: "Kernel", workspace_id: str) -> bool:
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
    if ident.is_site_admin and await exists(kernel, workspace_id):
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

