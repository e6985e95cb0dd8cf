"""Ownership and workspaces: may this identity do this verb on this document?

A document belongs to a workspace: its ``workspaceId``, or — without one — its owner's personal workspace
(every document written before workspaces existed). In a personal workspace only the owner acts (site admins
act everywhere). In a shared workspace (docs/workspaces.md) a member reads, runs and creates, and edits and
deletes what they made; an admin also edits and deletes anything and deploys. A token bound to one workspace
acts only there.

What the caller may not even see answers exactly like an unknown id (404 with the same detail), so ids do
not leak; what a member can see but may not change answers 403.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gofannon.errors import DocumentNotFound, Forbidden, GofannonError

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.auth import Identity
    from gofannon.kernel import Kernel

OWNER_FIELD = "ownerId"
WORKSPACE_FIELD = "workspaceId"
PERSONAL_PREFIX = "personal:"

READ, RUN, EDIT, DELETE, DEPLOY = "read", "run", "edit", "delete", "deploy"
#: Verbs a member may do to what another member made.
MEMBER_VERBS = frozenset({READ, RUN})


def owns(ident: "Identity", doc: dict[str, Any]) -> bool:
    """The personal-workspace rule (the owner, or a site admin), for documents that never carry a workspace."""
    return ident.is_site_admin or doc.get(OWNER_FIELD) == ident.uid


def visible_filter(ident: "Identity") -> dict[str, Any]:
    """The ``find`` filter of what a user may list."""
    return {} if ident.is_site_admin else {OWNER_FIELD: ident.uid}


async def load_owned(kernel: "Kernel", ident: "Identity", collection: str, doc_id: str) -> dict[str, Any]:
    doc = await kernel.store.get(collection, doc_id)
    if doc is None or not owns(ident, doc):
        raise DocumentNotFound(collection, doc_id)
    return doc


def shared_workspace(doc: dict[str, Any]) -> str | None:
    """The document's shared workspace, or None when it lives in its owner's personal workspace."""
    ws = doc.get(WORKSPACE_FIELD)
    if not ws or str(ws) == PERSONAL_PREFIX + str(doc.get(OWNER_FIELD)):
        return None
    return str(ws)


def workspace_of(doc: dict[str, Any]) -> str:
    return shared_workspace(doc) or PERSONAL_PREFIX + str(doc.get(OWNER_FIELD))


def in_personal(workspace_id: str) -> bool:
    return workspace_id.startswith(PERSONAL_PREFIX)


async def authorize(kernel: "Kernel", ident: "Identity", doc: dict[str, Any], verb: str, *,
                    not_found: GofannonError) -> str | None:
    """Raise ``not_found`` (outside the caller's reach) or 403 (visible but not theirs to change) unless
    ``ident`` may ``verb`` the document. Returns the caller's role in the document's shared workspace (None
    for a personal one). Costs a store read only for a document of a workspace made in the platform."""
    from gofannon.services.memberships import bound_workspace, role_in

    bound = bound_workspace(ident)
    if bound is not None and workspace_of(doc) != bound:
        raise not_found
    ws = shared_workspace(doc)
    if ws is None:
        if owns(ident, doc):
            return None
        raise not_found
    role = "admin" if ident.is_site_admin else await role_in(kernel, ident, ws)
    if role is None:
        raise not_found
    if role == "admin" or verb in MEMBER_VERBS:
        return role
    if verb in (EDIT, DELETE) and doc.get(OWNER_FIELD) == ident.uid:
        return role
    if verb == DEPLOY:
        raise Forbidden("Only an admin of this workspace may deploy or undeploy")
    raise Forbidden(f"Only its author or an admin of this workspace may {verb} this")


async def may(kernel: "Kernel", ident: "Identity", doc: dict[str, Any], verb: str) -> bool:
    try:
        await authorize(kernel, ident, doc, verb, not_found=DocumentNotFound("", ""))
    except GofannonError:
        return False
    return True


def stamp_workspace(doc: dict[str, Any], ident: "Identity", workspace_id: str | None) -> dict[str, Any]:
    """Put a new document of ``ident`` in ``workspace_id`` (the active workspace, already checked): a shared
    one is recorded as ``workspaceId``; the caller's own personal one leaves the document as before
    workspaces. Someone else's personal workspace is refused (403)."""
    if workspace_id and workspace_id != PERSONAL_PREFIX + ident.uid:
        if in_personal(workspace_id):
            raise Forbidden("New documents go to your own personal workspace or to a shared one")
        doc[WORKSPACE_FIELD] = workspace_id
    return doc


async def list_in_workspace(kernel: "Kernel", collection: str, ident: "Identity",
                            workspace_id: str | None) -> list[dict[str, Any]]:
    """The documents of ``collection`` in a workspace (the active one, already checked; None = the caller's
    personal). A site admin in their own personal workspace sees every document, as before workspaces."""
    own = PERSONAL_PREFIX + ident.uid
    workspace_id = workspace_id or own
    if workspace_id == own and ident.is_site_admin:
        return await kernel.store.find(collection, {})  # type: ignore[no-any-return]
    if in_personal(workspace_id):
        owner = workspace_id[len(PERSONAL_PREFIX):]
        return [d for d in await kernel.store.find(collection, {OWNER_FIELD: owner}) if shared_workspace(d) is None]
    return await kernel.store.find(collection, {WORKSPACE_FIELD: workspace_id})  # type: ignore[no-any-return]


async def load_for(kernel: "Kernel", ident: "Identity", collection: str, doc_id: str, verb: str, *,
                   not_found: GofannonError | None = None) -> dict[str, Any]:
    """``load_owned`` with workspaces: the document if ``ident`` may ``verb`` it."""
    missing = not_found or DocumentNotFound(collection, doc_id)
    doc = await kernel.store.get(collection, doc_id)
    if doc is None:
        raise missing
    await authorize(kernel, ident, doc, verb, not_found=missing)
    return doc
