"""Workspaces made in the platform (issue 14, docs/workspaces.md): create, rename, delete (with its resources),
members, invitations, moving agents between workspaces, and ``gofannon store migrate``.

The membership lookups and the active workspace live below, in ``gofannon.services.memberships``; budgets in
``gofannon.services.workspace_budgets``. Both are re-exported here, so ``workspaces.<name>`` is the one place
handlers look; lower services import those modules directly (this one imports agents and deployments).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import unicodedata
from typing import TYPE_CHECKING, Any

from gofannon.errors import Conflict, Forbidden, NotFound, Unprocessable
from gofannon.services.memberships import (  # noqa: F401 - re-exported for handlers and other services
    COLLECTION, HEADER, MANUAL_PREFIX, MAX_ID_LENGTH, MEMBERS, NOT_FOUND, PERSONAL_PREFIX, QUERY, ROLES,
    bound_workspace, derived, effective_role, exists, has_manual_membership, is_manual,
    manual_view, member_id, membership, memberships, personal_id, resolve_active, role_in,
)
from gofannon.services.workspace_budgets import (  # noqa: F401 - re-exported
    BUDGETS, MIN_SPEND, charge, charges_workspace, require_allowance, set_budget, usage,
)
from gofannon.timeutil import now_iso

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.auth import Identity
    from gofannon.kernel import Kernel

INVITATIONS = "workspace_invitations"
#: How many workspaces one user may create; bounds what one account can make the store hold.
MAX_CREATED_PER_USER = 100
MAX_MEMBERS = 1000
MAX_INVITATIONS = 200
#: Resource collections whose documents carry ``workspaceId``; a workspace holding any cannot be deleted
#: without ``force``.
RESOURCE_COLLECTIONS = ("agents", "deployments", "demos", "agent_data_store", "gofannon_runs", "sessions")
DERIVED_READ_ONLY = ("This workspace's memberships come from the login provider; they are managed there, "
                     "not here")


def _invitation_id(workspace_id: str, email: str) -> str:
    return f"{workspace_id}|{email.lower()}"


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:40].strip("-")
    return slug or "workspace"


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

    stored = await kernel.store.update(MEMBERS, member_id(workspace_id, uid), change)
    assert stored is not None
    return stored


async def get(kernel: "Kernel", ident: "Identity", workspace_id: str) -> dict[str, Any]:
    """The workspace as the caller sees it (with their role); 404 for non-members."""
    role = await effective_role(kernel, ident, workspace_id)
    if is_manual(workspace_id):
        return manual_view(await _load_manual(kernel, workspace_id), role)
    for w in derived(ident):
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
    return manual_view(stored, "admin")


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


async def move_agent(kernel: "Kernel", ident: "Identity", agent_id: str, target: str) -> dict[str, Any]:
    """``POST /agents/{id}/move``: move an agent (and its deployment) to another workspace. The caller must be
    an admin of both (the owner, for a personal one); an agent moves into a personal workspace only if it is
    its author's; a token bound to a workspace moves nothing out of it. Returns the moved agent."""
    from gofannon.services import agents, deployments
    from gofannon.services.ownership import DEPLOY, OWNER_FIELD, workspace_of

    doc = await agents.get_agent(kernel, ident, agent_id, DEPLOY)
    bound = bound_workspace(ident)
    if bound is not None and target != bound:
        raise NotFound(NOT_FOUND)
    if await effective_role(kernel, ident, target) != "admin":
        raise Forbidden("Only an admin of the target workspace may move an agent into it")
    if target.startswith(PERSONAL_PREFIX) and target != PERSONAL_PREFIX + str(doc.get(OWNER_FIELD)):
        raise Conflict("An agent can move into a personal workspace only if it is its author's")
    if workspace_of(doc) == target:
        return agents.ordered(doc)
    moved, deployment_moved = await agents.move_to(kernel, doc, target)
    if deployment_moved:
        await deployments.changed(kernel)
    return moved


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
        source = next((str(w.get("source") or "") for w in derived(ident) if w["workspaceId"] == workspace_id), "")
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
    current = await kernel.store.get(MEMBERS, member_id(workspace_id, uid))
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
    await kernel.store.put(MEMBERS, member_id(workspace_id, str(restore["uid"])), doc)
    raise Conflict("A workspace needs at least one admin; make someone else admin first")


async def remove_member(kernel: "Kernel", ident: "Identity", workspace_id: str, uid: str) -> None:
    """Remove a member (the workspace's admins), or leave (anyone, for themselves)."""
    if uid != ident.uid:
        await _require_manual_admin(kernel, ident, workspace_id)
    else:
        await effective_role(kernel, ident, workspace_id)
        if not is_manual(workspace_id):
            raise Conflict(DERIVED_READ_ONLY)
    current = await kernel.store.get(MEMBERS, member_id(workspace_id, uid))
    if current is None:
        raise NotFound("Member not found")
    if current.get("role") == "admin" and await _admins(kernel, workspace_id) == [uid]:
        raise Conflict("A workspace needs at least one admin; make someone else admin first")
    await kernel.store.delete(MEMBERS, member_id(workspace_id, uid))
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
            if await kernel.store.get(MEMBERS, member_id(workspace_id, uid)) is None:
                await _put_member(kernel, workspace_id, uid, inv.get("role") or "member", display_name,
                                  str(inv.get("invitedBy") or ""))
            joined.append(workspace_id)
        await kernel.store.delete(INVITATIONS, inv["_id"])
    return joined


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
