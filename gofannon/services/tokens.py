"""Personal API tokens (DECISIONS.md "Personal API tokens"): created, listed, revoked; stored hashed.

A token reads ``gft_<id>_<secret>``: the id finds the one stored document (``api_tokens/<id>``) without a
scan, and the secret is checked against its SHA-256 in constant time. The plaintext is returned once, at
creation. A token acts as its owner with the identity captured when it was made (name, email,
workspaces); site-admin rights are re-checked against the auth config on every use.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from gofannon.auth import Identity
from gofannon.errors import Conflict, NotFound
from gofannon.timeutil import now_iso

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel

COLLECTION = "api_tokens"
PREFIX = "gft_"
#: ``lastUsedAt`` is written at most this often per token, so a busy script does not write on every call.
LAST_USED_RESOLUTION = timedelta(seconds=60)
MAX_TOKENS_PER_USER = 100
_TOKEN_RE = re.compile(r"^gft_([0-9a-f]{32})_([A-Za-z0-9_\-]{20,128})$")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def public_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {"id": doc["_id"], "name": doc.get("name"), "createdAt": doc.get("createdAt"),
            "lastUsedAt": doc.get("lastUsedAt")}


async def create(kernel: "Kernel", ident: Identity, name: str) -> dict[str, Any]:
    """A new token for the caller: ``{id, name, token, createdAt}`` (the only time ``token`` is shown)."""
    if await kernel.store.count(COLLECTION, {"ownerId": ident.uid}) >= MAX_TOKENS_PER_USER:
        raise Conflict(f"At most {MAX_TOKENS_PER_USER} tokens per user; revoke one first")
    token_id = uuid.uuid4().hex
    secret = secrets.token_urlsafe(32)
    doc = {
        "ownerId": ident.uid,
        "name": name,
        "tokenHash": _hash(secret),
        "createdAt": now_iso(),
        "lastUsedAt": None,
        "identity": {"providerType": ident.provider_type, "displayName": ident.display_name, "email": ident.email,
                     "workspaces": ident.workspaces},
    }
    await kernel.store.put(COLLECTION, token_id, doc, rev=None)
    return {"id": token_id, "name": name, "token": f"{PREFIX}{token_id}_{secret}", "createdAt": doc["createdAt"]}


async def list_for(kernel: "Kernel", uid: str) -> list[dict[str, Any]]:
    docs = await kernel.store.find(COLLECTION, {"ownerId": uid})
    return [public_view(d) for d in sorted(docs, key=lambda d: (d.get("createdAt") or "", d["_id"]))]


async def revoke(kernel: "Kernel", uid: str, token_id: str) -> None:
    """Delete the caller's token; an unknown id and another user's id are the same 404."""
    doc = await kernel.store.get(COLLECTION, token_id) if len(token_id) <= 64 else None
    if doc is None or doc.get("ownerId") != uid:
        raise NotFound("Token not found")
    await kernel.store.delete(COLLECTION, token_id)


def looks_like_token(value: str) -> bool:
    return value.startswith(PREFIX)


async def resolve(kernel: "Kernel", token: str) -> Identity | None:
    """The owner of a live token, or None (malformed, unknown, revoked or wrong secret)."""
    match = _TOKEN_RE.match(token)
    if match is None:
        return None
    token_id, secret = match.groups()
    doc = await kernel.store.get(COLLECTION, token_id)
    if doc is None or not hmac.compare_digest(_hash(secret), str(doc.get("tokenHash") or "")):
        return None
    await _touch(kernel, token_id, doc)
    from gofannon.services.auth_config import auth_state

    uid = doc["ownerId"]
    snap = doc.get("identity") or {}
    return Identity(
        uid=uid,
        provider_type=snap.get("providerType") or uid.split(":", 1)[0],
        email=snap.get("email"),
        display_name=snap.get("displayName"),
        workspaces=list(snap.get("workspaces") or []),
        is_site_admin=auth_state(kernel).is_site_admin(uid),
        auth_mode="token",
    )


async def _touch(kernel: "Kernel", token_id: str, doc: dict[str, Any]) -> None:
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    last = doc.get("lastUsedAt")
    try:
        if last and now - datetime.fromisoformat(last) < LAST_USED_RESOLUTION:
            return
    except (TypeError, ValueError):
        pass
    stamp = now.isoformat(timespec="microseconds")

    def change(current: dict[str, Any] | None) -> dict[str, Any] | None:
        if current is None:
            return None  # revoked meanwhile: do not resurrect it
        current["lastUsedAt"] = stamp
        return current

    await kernel.store.update(COLLECTION, token_id, change)
