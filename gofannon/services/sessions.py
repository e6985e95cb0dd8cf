"""Login sessions (``user_sessions``): created at login, looked up per request, revoked at logout.

Sessions live in the document store, so every API process sees the same ones. Expiry is a hard wall
(``expiresAt``); an expired or corrupt session is deleted when it is looked up.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from gofannon.auth import ExternalIdentity, Identity
from gofannon.timeutil import now_iso

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel

COLLECTION = "user_sessions"


def _naive_utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def personal_workspace(provider_type: str, external_id: str) -> dict[str, Any]:
    return {"workspaceId": f"personal:{provider_type}:{external_id}", "role": "admin", "displayName": "Personal",
            "source": "auto_personal", "description": None}


async def create(kernel: "Kernel", ext: ExternalIdentity, *, ttl_hours: float, is_site_admin: bool) -> tuple[str, dict[str, Any]]:
    sid = secrets.token_urlsafe(32)
    now = _naive_utc_now()
    doc = {
        "userUid": ext.uid,
        "providerType": ext.provider_type,
        "displayName": ext.display_name,
        "email": ext.email,
        "workspaces": [personal_workspace(ext.provider_type, ext.external_id), *ext.workspaces],
        "isSiteAdmin": is_site_admin,
        "createdAt": now.isoformat(timespec="microseconds"),
        "updatedAt": now.isoformat(timespec="microseconds"),
        "expiresAt": (now + timedelta(hours=ttl_hours)).isoformat(timespec="microseconds"),
        "lastRefreshAt": now.isoformat(timespec="microseconds"),
    }
    await kernel.store.put(COLLECTION, sid, doc, rev=None)
    return sid, doc


def identity_from(doc: dict[str, Any], sid: str) -> Identity:
    return Identity(
        uid=doc["userUid"],
        provider_type=doc.get("providerType") or doc["userUid"].split(":", 1)[0],
        email=doc.get("email"),
        display_name=doc.get("displayName"),
        workspaces=list(doc.get("workspaces") or []),
        is_site_admin=bool(doc.get("isSiteAdmin")),
        auth_mode="session",
        session_id=sid,
    )


async def load(kernel: "Kernel", sid: str) -> dict[str, Any] | None:
    if not sid or len(sid) > 256:
        return None
    doc = await kernel.store.get(COLLECTION, sid)
    if doc is None:
        return None
    try:
        expires = datetime.fromisoformat(doc["expiresAt"])
        if expires.tzinfo is not None:
            expires = expires.astimezone(timezone.utc).replace(tzinfo=None)
        doc["userUid"]  # noqa: B018 - a session without a user is corrupt
    except (KeyError, TypeError, ValueError):
        await kernel.store.delete(COLLECTION, sid)
        return None
    if expires <= _naive_utc_now():
        await kernel.store.delete(COLLECTION, sid)
        return None
    return doc


async def lookup(kernel: "Kernel", sid: str) -> Identity | None:
    """The identity of a live session, or None (missing, corrupt or expired: those are deleted)."""
    doc = await load(kernel, sid)
    return identity_from(doc, sid) if doc is not None else None


async def revoke(kernel: "Kernel", sid: str) -> bool:
    return await kernel.store.delete(COLLECTION, sid)


async def save_workspaces(kernel: "Kernel", sid: str, workspaces: list[dict[str, Any]], is_site_admin: bool) -> None:
    def change(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        if doc is None:
            return None
        doc["workspaces"] = workspaces
        doc["isSiteAdmin"] = is_site_admin
        doc["updatedAt"] = doc["lastRefreshAt"] = now_iso()
        return doc

    await kernel.store.update(COLLECTION, sid, change)
