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


async def refresh(kernel: "Kernel", ident: Identity) -> dict[str, Any]:
    """Re-read the session's memberships from its backend and the site-admin flag from the auth config.

    A backend that cannot tell (None) keeps the current memberships. Returns what changed, in the shape of
    ``POST /auth/refresh-workspaces``.
    """
    from gofannon.services.auth_config import auth_state

    assert ident.session_id is not None
    state = auth_state(kernel)
    backend = state.backends.get(ident.provider_type)
    old = {w.get("workspaceId"): w.get("role") for w in ident.workspaces}
    fresh = await backend.refresh(kernel, ident) if backend is not None else None
    if fresh is None:
        workspaces = ident.workspaces
    else:
        workspaces = [ident.workspaces[0], *fresh] if ident.workspaces else fresh
    new = {w.get("workspaceId"): w.get("role") for w in workspaces}
    is_admin = state.is_site_admin(ident.uid)
    await save_workspaces(kernel, ident.session_id, workspaces, is_admin)
    return {
        "added": sorted(k for k in new if k not in old),
        "removed": sorted(k for k in old if k not in new),
        "roleChanges": sorted(k for k in new if k in old and new[k] != old[k]),
        "siteAdminChanged": is_admin != ident.is_site_admin,
    }


def refresh_due(kernel: "Kernel", doc: dict[str, Any]) -> bool:
    from gofannon.services.auth_config import auth_state

    minutes = auth_state(kernel).config.workspace_refresh_minutes
    if minutes <= 0:
        return False
    return expired(doc.get("lastRefreshAt"), naive_utc_now(), older_than=timedelta(minutes=minutes))


def refresh_in_background(kernel: "Kernel", ident: Identity) -> None:
    """Start one background refresh of a session whose memberships are older than
    ``workspace_refresh_minutes``; the request that noticed it does not wait."""
    busy: set[str] = kernel.component("sessions_refreshing", set)
    sid = ident.session_id
    if sid is None or sid in busy:
        return
    busy.add(sid)

    async def run() -> None:
        try:
            await refresh(kernel, ident)
        except Exception:  # noqa: BLE001 - the next request tries again
            log.warning("background workspace refresh of a %s session failed", ident.provider_type, exc_info=True)
        finally:
            busy.discard(sid)

    kernel.spawn(run(), name="session-refresh")
