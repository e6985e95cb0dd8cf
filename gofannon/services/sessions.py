"""Login sessions (``user_sessions``): created at login, looked up per request, revoked at logout.

Sessions live in the document store, so every API process sees the same ones. Expiry is a hard wall
(``expiresAt``); an expired or corrupt session is deleted when it is looked up.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from gofannon.auth import ExternalIdentity, Identity
from gofannon.timeutil import now_iso

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel

COLLECTION = "user_sessions"
LOGIN_STATES = "auth_login_states"
LOGIN_STATE_TTL_S = 600
#: How often expired sessions and abandoned login states are deleted (they are also dropped on lookup).
SWEEP_INTERVAL_S = 900.0

log = logging.getLogger("gofannon.sessions")


def naive_utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def personal_workspace(provider_type: str, external_id: str) -> dict[str, Any]:
    return {"workspaceId": f"personal:{provider_type}:{external_id}", "role": "admin", "displayName": "Personal",
            "source": "auto_personal", "description": None}


async def create(kernel: "Kernel", ext: ExternalIdentity, *, ttl_hours: float, is_site_admin: bool) -> tuple[str, dict[str, Any]]:
    sid = secrets.token_urlsafe(32)
    now = naive_utc_now()
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
    if expires <= naive_utc_now():
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


def expired(stamp: object, now: datetime, *, older_than: timedelta = timedelta(0)) -> bool:
    try:
        when = datetime.fromisoformat(str(stamp))
    except ValueError:
        return True
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return when + older_than <= now


async def sweep(kernel: "Kernel") -> int:
    """Delete expired sessions and login states nobody came back for; returns how many were deleted."""
    now = naive_utc_now()
    stale = [d["_id"] for d in await kernel.store.list(COLLECTION) if expired(d.get("expiresAt"), now)]
    deleted = await kernel.store.delete_many(COLLECTION, stale) if stale else 0
    old_states = [d["_id"] for d in await kernel.store.list(LOGIN_STATES)
                  if expired(d.get("createdAt"), now, older_than=timedelta(seconds=LOGIN_STATE_TTL_S))]
    if old_states:
        deleted += await kernel.store.delete_many(LOGIN_STATES, old_states)
    return deleted


async def _sweep_forever(kernel: "Kernel") -> None:
    while True:
        await asyncio.sleep(SWEEP_INTERVAL_S)
        try:
            await sweep(kernel)
        except Exception:  # noqa: BLE001 - try again next time
            log.exception("session sweep failed")


async def start(kernel: "Kernel") -> None:
    if kernel.role == "api":
        kernel.spawn(_sweep_forever(kernel), name="session-sweeper")
