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
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from gofannon.auth import Identity
from gofannon.errors import Conflict, NotFound, Unauthorized, Unprocessable
from gofannon.services.auth_config import auth_state
from gofannon.timeutil import now_iso

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel

COLLECTION = "api_tokens"
PREFIX = "gft_"
#: ``lastUsedAt`` is written at most this often per token, so a busy script does not write on every call.
LAST_USED_RESOLUTION = timedelta(seconds=60)
MAX_TOKENS_PER_USER = 100
#: A token document this process read may be reused while the store's stamp of it holds (``resolve``), and for
#: at most this long: the bound, should a process die between a write's commit and its stamp.
CACHE_TTL_S = 10.0
CACHE_MAX = 10_000
_TOKEN_RE = re.compile(r"^gft_([0-9a-f]{32})_([A-Za-z0-9_\-]{20,128})$")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


#: The optional scope of a token (docs/gateway.md): stored on its document under these names, and copied
#: into ``Identity.token`` when it is used. A token with none of them behaves as an unscoped token.
SCOPE_FIELDS = ("models", "maxSpend", "expiresAt", "rpm", "workspaceId")


def public_view(doc: dict[str, Any]) -> dict[str, Any]:
    view = {"id": doc["_id"], "name": doc.get("name"), "createdAt": doc.get("createdAt"),
            "lastUsedAt": doc.get("lastUsedAt")}
    scope = {k: doc[k] for k in SCOPE_FIELDS if doc.get(k) is not None}
    if scope:
        view.update(scope)
        view["spend"] = float(doc.get("spend") or 0.0)
    if doc.get("kind") == "oauth":  # a grant of the /mcp OAuth server (gofannon/services/oauth_server.py)
        view.update(kind="oauth", clientId=doc.get("clientId"), clientName=doc.get("clientName"),
                    resource=doc.get("resource"), expiresAt=doc.get("refreshExpiresAt") or doc.get("accessExpiresAt"))
    return view


def _utc_naive(value: datetime) -> datetime:
    """Aware times converted to UTC; naive ones are taken as UTC (the store's convention)."""
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo is not None else value


def expired(expires_at: Any, now: datetime | None = None) -> bool:
    """Whether a stored ``expiresAt`` (naive UTC ISO) has passed; an unreadable one counts as expired."""
    if not expires_at:
        return False
    try:
        moment = _utc_naive(datetime.fromisoformat(str(expires_at)))
    except (ValueError, OverflowError):
        return True
    return moment <= (now or datetime.now(timezone.utc).replace(tzinfo=None))


def scope_fields(*, models: list[str] | None = None, max_spend: float | None = None,
                 expires_at: datetime | None = None, rpm: int | None = None,
                 workspace_id: str | None = None) -> dict[str, Any]:
    """The stored form of a token's scope (only what was given); 422 for an ``expiresAt`` already past."""
    scope: dict[str, Any] = {}
    if models is not None:
        scope["models"] = list(dict.fromkeys(m.strip() for m in models))
        if any(not m for m in scope["models"]):
            raise Unprocessable("models: a model id cannot be blank")
    if max_spend is not None:
        scope["maxSpend"] = float(max_spend)
    if expires_at is not None:
        try:
            moment = _utc_naive(expires_at)
        except OverflowError:  # 0001-01-01T00:00+14:00, say: before the first representable UTC moment
            raise Unprocessable("expiresAt is out of range") from None
        if moment <= datetime.now(timezone.utc).replace(tzinfo=None):
            raise Unprocessable("expiresAt must be in the future")
        scope["expiresAt"] = moment.isoformat(timespec="microseconds")
    if rpm is not None:
        scope["rpm"] = int(rpm)
    if workspace_id is not None:
        scope["workspaceId"] = workspace_id
    return scope


async def create(kernel: "Kernel", ident: Identity, name: str, scope: dict[str, Any] | None = None) -> dict[str, Any]:
    """A new token for the caller: ``{id, name, token, createdAt}`` plus its scope (see ``scope_fields``);
    the only time ``token`` is shown."""
    if await kernel.store.count(COLLECTION, {"ownerId": ident.uid}) >= MAX_TOKENS_PER_USER:
        raise Conflict(f"At most {MAX_TOKENS_PER_USER} tokens per user; revoke one first")
    scope = {k: v for k, v in (scope or {}).items() if k in SCOPE_FIELDS and v is not None}
    if scope.get("workspaceId") is not None:
        from gofannon.services.memberships import effective_role

        # Only a workspace the caller may act in (404 as for a non-member otherwise).
        await effective_role(kernel, ident, str(scope["workspaceId"]))
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
        **scope,
    }
    if scope:
        doc["spend"] = 0.0
    await kernel.store.put(COLLECTION, token_id, doc, rev=None)
    return {"id": token_id, "name": name, "token": f"{PREFIX}{token_id}_{secret}", "createdAt": doc["createdAt"],
            **scope}


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
    doc = await _read(kernel, token_id)
    if doc is None or not hmac.compare_digest(_hash(secret), str(doc.get("tokenHash") or "")):
        return None
    if expired(doc.get("expiresAt")):
        raise Unauthorized("API token expired", reason="token_expired")
    await _touch(kernel, token_id, doc)
    ident = identity_of(kernel, doc, token_scope(token_id, doc))
    bound = doc.get("workspaceId")
    if bound:
        from gofannon.services.memberships import effective_role, personal_id

        if bound != personal_id(ident):
            try:
                await effective_role(kernel, ident, str(bound))
            except NotFound:  # its owner left the workspace (or it was deleted): the token acts nowhere
                raise Unauthorized("This API token is bound to a workspace its owner is no longer a member of",
                                   reason="token_workspace_gone") from None
    return ident


async def _read(kernel: "Kernel", token_id: str) -> dict[str, Any] | None:
    """The token's document: the one this process read last while the store says it has not changed since
    (``DocumentStore.stamp``: on SQLite, shared memory every process on the database sees, so a revocation made
    by any process holds at once), else read now. Callers must not modify it."""
    store = kernel.store
    stamp = store.stamp(COLLECTION, token_id)  # before the read: a write after it moves it, and we read again
    if stamp is None:
        return await store.get(COLLECTION, token_id)  # type: ignore[no-any-return]
    cache: dict[str, tuple[int, float, dict[str, Any]]] = kernel.component(_CACHE, dict)
    hit = cache.get(token_id)
    now = time.monotonic()
    if hit is not None and hit[0] == stamp and hit[1] > now:
        return hit[2]
    doc = await store.get(COLLECTION, token_id)
    if doc is None:
        cache.pop(token_id, None)
        return None
    if len(cache) >= CACHE_MAX:
        cache.clear()
    cache[token_id] = (stamp, now + CACHE_TTL_S, doc)
    return doc  # type: ignore[no-any-return]


_CACHE = "tokens.cache"
_TOUCH_DUE = "tokens.touch_due"


def identity_of(kernel: "Kernel", doc: dict[str, Any], scope: dict[str, Any] | None) -> Identity:
    """The owner of a token document of the token store (personal or OAuth), as the identity it captured when
    it was made; site-admin rights are re-checked against the auth config on every use."""
    uid = doc["ownerId"]
    snap = doc.get("identity") or {}
    return Identity(
        uid=uid,
        provider_type=snap.get("providerType") or uid.split(":", 1)[0],
        email=snap.get("email"),
        display_name=snap.get("displayName"),
        workspaces=[dict(w) if isinstance(w, dict) else w for w in snap.get("workspaces") or []],
        is_site_admin=auth_state(kernel).is_site_admin(uid),
        auth_mode="token",
        token=scope,
    )


def token_scope(token_id: str, doc: dict[str, Any]) -> dict[str, Any] | None:
    """``Identity.token`` for a token document: its id, kind and scope; None when it has no scope."""
    scope = {k: doc[k] for k in SCOPE_FIELDS if doc.get(k) is not None}
    if not scope:
        return None
    return {"id": token_id, "kind": doc.get("kind") or "personal", **scope}


async def _touch(kernel: "Kernel", token_id: str, doc: dict[str, Any]) -> None:
    due: dict[str, float] = kernel.component(_TOUCH_DUE, dict)  # token id -> when this process may write it next
    clock = time.monotonic()
    if due.get(token_id, 0.0) > clock:
        return
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    last = doc.get("lastUsedAt")
    try:
        if last and (age := now - datetime.fromisoformat(last)) < LAST_USED_RESOLUTION:
            due[token_id] = clock + (LAST_USED_RESOLUTION - age).total_seconds()
            return
    except (TypeError, ValueError):
        pass
    if len(due) >= CACHE_MAX:
        due.clear()
    due[token_id] = clock + LAST_USED_RESOLUTION.total_seconds()
    stamp = now.isoformat(timespec="microseconds")

    def change(current: dict[str, Any] | None) -> dict[str, Any] | None:
        if current is None:
            return None  # revoked meanwhile: do not resurrect it
        current["lastUsedAt"] = stamp
        return current

    await kernel.store.update(COLLECTION, token_id, change)
