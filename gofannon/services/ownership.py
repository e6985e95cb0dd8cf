"""Ownership: a user sees and changes only their own documents; site admins see all.

Another user's id answers exactly like an unknown id (404 with the same detail), so ids do not leak.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gofannon.errors import DocumentNotFound

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.auth import Identity
    from gofannon.kernel import Kernel

OWNER_FIELD = "ownerId"


def owns(ident: "Identity", doc: dict[str, Any]) -> bool:
    return ident.is_site_admin or doc.get(OWNER_FIELD) == ident.uid


def visible_filter(ident: "Identity") -> dict[str, Any]:
    """The ``find`` filter of what a user may list."""
    return {} if ident.is_site_admin else {OWNER_FIELD: ident.uid}


async def load_owned(kernel: "Kernel", ident: "Identity", collection: str, doc_id: str) -> dict[str, Any]:
    doc = await kernel.store.get(collection, doc_id)
    if doc is None or not owns(ident, doc):
        raise DocumentNotFound(collection, doc_id)
    return doc
