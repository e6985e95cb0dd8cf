"""OAuth 2.1 grants for the kernel's own ``/mcp`` resource: clients, authorization codes, grants; all in the store.

The protocol itself (parameter checks, PKCE, client authentication, response shapes) is authlib's, driven by
the ``mcp_oauth`` auth plugin. authlib is synchronous, so the plugin loads what a request needs from here
first, lets authlib decide, and writes the outcome back through here afterwards: nothing here imports authlib
and nothing blocks the event loop.

Where things live:

- ``oauth_clients/<client_id>``: a dynamically registered client (RFC 7591); its secret, if any, hashed.
- ``oauth_codes/<sha256(code)>``: an authorization code, single use, ten minutes. A used code stays (with
  ``usedBy``) until it expires, so presenting it again revokes the grant it produced (RFC 6749 §4.1.2).
- ``api_tokens/<grant id>``: one document per grant in the personal-token collection, ``kind: "oauth"``, so
  ``GET /users/me/tokens`` lists it and ``DELETE /users/me/tokens/{id}`` ends it (access and refresh
  together). It holds the SHA-256 of the current access token and refresh token, and of the refresh tokens
  it rotated out, to detect a replayed one.

Tokens read ``gfo_<grant id>_<secret>`` (access) and ``gfr_<grant id>_<secret>`` (refresh): the id finds the
one document without a scan, the secret is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import uuid
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from gofannon.auth import Identity
from gofannon.errors import RevisionConflict
from gofannon.services import tokens
from gofannon.timeutil import now_iso

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel

CLIENTS = "oauth_clients"
CODES = "oauth_codes"
GRANTS = tokens.COLLECTION
KIND = "oauth"

ACCESS_PREFIX = "gfo_"
REFRESH_PREFIX = "gfr_"
ACCESS_TTL = timedelta(hours=1)
#: A refresh token lives this long after it was issued; every refresh issues a new one (rotation).
REFRESH_TTL = timedelta(days=30)
CODE_TTL = timedelta(minutes=10)
#: Rotated-out refresh hashes kept per grant for replay detection.
ROTATED_KEPT = 20
#: A used authorization code, or the refresh token a rotation just replaced, presented again this soon is refused
#: without ending the grant: that is a client's concurrent or retried request (one of them won), not a stolen
#: credential coming back. Later, or an older rotated-out token, it ends the whole grant (RFC 6749 §4.1.2, RFC 9700
#: §4.14.2); OAuth servers commonly allow such a window for rotation ("reuse interval").
REPLAY_GRACE = timedelta(seconds=2)
#: Grants one user may hold; the oldest is ended when a new one would exceed it.
MAX_GRANTS_PER_USER = 50
#: A registered client that never obtained a grant is deleted after this long.
UNUSED_CLIENT_TTL = timedelta(days=1)
#: The one scope: access to the user's MCP tools.
SCOPE = "mcp"

_TOKEN_RE = re.compile(r"^(gfo|gfr)_([0-9a-f]{32})_([A-Za-z0-9_\-]{20,128})$")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def parse_token(value: str) -> tuple[str, str, str] | None:
    """``(kind, grant_id, secret)`` with kind ``access`` or ``refresh``; None when it is not one of ours."""
    match = _TOKEN_RE.match(value)
    if match is None:
        return None
    prefix, grant_id, secret = match.groups()
    return ("access" if prefix == "gfo" else "refresh"), grant_id, secret


def looks_like_token(value: str) -> bool:
    return value.startswith((ACCESS_PREFIX, REFRESH_PREFIX))


# -- redirect URIs ----------------------------------------------------------------------------------
def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: Schemes that are never a redirect target: scripts, local files and documents, other protocols.
NEVER_REDIRECT_SCHEMES = frozenset({"javascript", "vbscript", "data", "file", "about", "blob", "filesystem", "view-source",
                                    "ftp", "ws", "wss", "mailto", "tel", "sms", "chrome", "intent"})
_SCHEME_RE = re.compile(r"[a-z][a-z0-9+.\-]*")


def redirect_uri_problem(uri: str, *, dev: bool) -> str | None:
    """Why a redirect URI may not be registered, or None. https anywhere; http only on a loopback host
    (RFC 8252 §7.3), or anywhere in APP_ENV local/dev/test; a native app's private-use scheme; never a
    fragment or user info."""
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return f"{uri!r} is not a valid URL"
    if parts.fragment or "#" in uri:
        return f"{uri!r} must not contain a fragment"
    if parts.scheme not in ("http", "https"):
        # A native app's private-use scheme (RFC 8252 §7.1: "com.example.app:/cb", "cursor://..."); PKCE binds
        # the code to the app that asked. Schemes a browser would run or read locally are never redirects.
        if not _SCHEME_RE.fullmatch(parts.scheme) or parts.scheme in NEVER_REDIRECT_SCHEMES:
            return f"{uri!r} uses a scheme that cannot be a redirect URI"
        return None
    if not parts.hostname or "@" in parts.netloc:
        return f"{uri!r} must be an absolute URL with a host and no user info"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and (dev or is_loopback(parts.hostname)):
        return None
    return f"{uri!r} must use https (http only for a loopback address: 127.0.0.1, [::1] or localhost)"


def redirect_uri_matches(registered: list[str], requested: str) -> bool:
    """Exact match, except that a loopback http redirect may name any port (RFC 8252 §7.3)."""
    if requested in registered:
        return True
    try:
        want = urlsplit(requested)
        if want.scheme != "http" or not is_loopback(want.hostname):
            return False
        want.port  # noqa: B018
    except ValueError:
        return False
    for uri in registered:
        have = urlsplit(uri)
        if (have.scheme, have.hostname, have.path, have.query) == (want.scheme, want.hostname, want.path, want.query):
            return True
    return False


# -- clients ----------------------------------------------------------------------------------------
async def get_client(kernel: "Kernel", client_id: str | None) -> dict[str, Any] | None:
    if not client_id or len(client_id) > 128:
        return None
    return await kernel.store.get(CLIENTS, client_id)


async def save_client(kernel: "Kernel", client_id: str, doc: dict[str, Any]) -> None:
    await kernel.store.put(CLIENTS, client_id, {**doc, "usedAt": None}, rev=None)


async def mark_client_used(kernel: "Kernel", client_id: str) -> None:
    """Note that a client obtained a grant: registrations nobody ever used are swept after a day."""
    if (await kernel.store.get(CLIENTS, client_id) or {}).get("usedAt"):
        return

    def change(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        if doc is None:
            return None
        doc["usedAt"] = now_iso()
        return doc

    await kernel.store.update(CLIENTS, client_id, change)


# -- authorization codes ----------------------------------------------------------------------------
def new_code() -> str:
    return secrets.token_urlsafe(32)


async def save_code(kernel: "Kernel", code: str, doc: dict[str, Any]) -> None:
    doc = {**doc, "createdAt": now_iso(), "expiresAt": _iso(_now() + CODE_TTL), "usedBy": None}
    await kernel.store.put(CODES, digest(code), doc, rev=None)


async def get_code(kernel: "Kernel", code: str | None) -> dict[str, Any] | None:
    if not code or len(code) > 256:
        return None
    return await kernel.store.get(CODES, digest(code))


def code_usable(doc: dict[str, Any] | None) -> bool:
    return doc is not None and not doc.get("usedBy") and not tokens.expired(doc.get("expiresAt"))


async def mark_code_used(kernel: "Kernel", doc: dict[str, Any], grant_id: str) -> bool:
    """Consume a code exactly once (compare-and-set on the revision that was checked)."""
    body = {k: v for k, v in doc.items() if k not in ("_id", "_rev")}
    body["usedBy"] = grant_id
    body["usedAt"] = _iso(_now())
    try:
        await kernel.store.put(CODES, doc["_id"], body, rev=doc["_rev"])
    except RevisionConflict:
        return False
    return True


# -- grants -----------------------------------------------------------------------------------------
def new_grant_id() -> str:
    return uuid.uuid4().hex


def mint(grant_id: str, kind: str) -> str:
    """A fresh token of a grant: ``gfo_``/``gfr_`` + grant id + secret."""
    prefix = ACCESS_PREFIX if kind == "access" else REFRESH_PREFIX
    return f"{prefix}{grant_id}_{secrets.token_urlsafe(32)}"


def secret_hash(token: str) -> str:
    parsed = parse_token(token)
    return digest(parsed[2]) if parsed else ""


def matches(doc: dict[str, Any] | None, field: str, token: str) -> bool:
    return doc is not None and hmac.compare_digest(secret_hash(token), str(doc.get(field) or "x"))


def grant_document(*, code: dict[str, Any], client: dict[str, Any], access: str, refresh: str | None,
                   scope: str | None) -> dict[str, Any]:
    """The stored grant made from an authorization code."""
    now = _now()
    return {
        "ownerId": code["uid"],
        "kind": KIND,
        "name": client.get("client_name") or client["_id"],
        "clientId": client["_id"],
        "clientName": client.get("client_name"),
        "resource": code["resource"],
        "scope": scope,
        "createdAt": _iso(now),
        "lastUsedAt": None,
        "accessHash": secret_hash(access),
        "accessExpiresAt": _iso(now + ACCESS_TTL),
        "refreshHash": secret_hash(refresh) if refresh else None,
        "refreshExpiresAt": _iso(now + REFRESH_TTL) if refresh else None,
        "rotatedHashes": [],
        "identity": code.get("identity") or {},
    }


def rotated_document(doc: dict[str, Any], *, access: str, refresh: str | None) -> dict[str, Any]:
    """The grant after a refresh: new access and refresh token, the old refresh hash kept for replay detection."""
    now = _now()
    body = {k: v for k, v in doc.items() if k not in ("_id", "_rev")}
    body["rotatedHashes"] = ([doc["refreshHash"]] + list(doc.get("rotatedHashes") or []))[:ROTATED_KEPT]
    body["rotatedAt"] = _iso(now)
    body["accessHash"] = secret_hash(access)
    body["accessExpiresAt"] = _iso(now + ACCESS_TTL)
    if refresh:
        body["refreshHash"] = secret_hash(refresh)
        body["refreshExpiresAt"] = _iso(now + REFRESH_TTL)
    return body


async def get_grant(kernel: "Kernel", token: str | None) -> dict[str, Any] | None:
    """The grant a token names (whatever its secret), or None."""
    parsed = parse_token(token or "")
    if parsed is None:
        return None
    doc = await kernel.store.get(GRANTS, parsed[1])
    return doc if doc is not None and doc.get("kind") == KIND else None


async def save_new_grant(kernel: "Kernel", grant_id: str, doc: dict[str, Any]) -> None:
    """Store a new grant; the user's oldest grants go when they hold more than ``MAX_GRANTS_PER_USER``."""
    await kernel.store.put(GRANTS, grant_id, doc, rev=None)
    mine = await kernel.store.find(GRANTS, {"ownerId": doc["ownerId"], "kind": KIND})
    if len(mine) > MAX_GRANTS_PER_USER:
        mine.sort(key=lambda d: (d.get("createdAt") or "", d["_id"]))
        await kernel.store.delete_many(GRANTS, [d["_id"] for d in mine[: len(mine) - MAX_GRANTS_PER_USER]])


async def replace_grant(kernel: "Kernel", doc: dict[str, Any], body: dict[str, Any]) -> bool:
    """Write a rotated grant if nobody rotated it first (compare-and-set)."""
    try:
        await kernel.store.put(GRANTS, doc["_id"], body, rev=doc["_rev"])
    except RevisionConflict:
        return False
    return True


async def end_grant(kernel: "Kernel", grant_id: str) -> None:
    doc = await kernel.store.get(GRANTS, grant_id)
    if doc is not None and doc.get("kind") == KIND:
        await kernel.store.delete(GRANTS, grant_id)


async def revoke_access(kernel: "Kernel", grant_id: str, access_hash: str) -> None:
    """End one access token, keeping the grant's refresh token (RFC 7009 lets either be revoked alone)."""

    def change(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        if doc is None or doc.get("accessHash") != access_hash:
            return None
        doc["accessHash"] = None
        return doc

    await kernel.store.update(GRANTS, grant_id, change)


def _within_grace(stamp: Any) -> bool:
    try:
        return _now() - datetime.fromisoformat(str(stamp)) < REPLAY_GRACE
    except ValueError:
        return False


def replayed(doc: dict[str, Any], refresh_token: str) -> bool:
    """Whether a refresh token that does not match the grant is a rotated-out one coming back (the grant must end),
    rather than the one the latest rotation replaced, presented again within ``REPLAY_GRACE``."""
    hashed = secret_hash(refresh_token)
    rotated = list(doc.get("rotatedHashes") or [])
    if hashed not in rotated:
        return False
    return not (rotated[0] == hashed and _within_grace(doc.get("rotatedAt")))


def code_replayed(doc: dict[str, Any]) -> bool:
    """Whether a used authorization code presented again is a replay (its grant must end), rather than a
    concurrent or retried exchange within ``REPLAY_GRACE`` of the one that used it."""
    return not _within_grace(doc.get("usedAt"))


def refresh_live(doc: dict[str, Any]) -> bool:
    return bool(doc.get("refreshHash")) and not tokens.expired(doc.get("refreshExpiresAt"))


# -- resolving access tokens ------------------------------------------------------------------------
async def resolve(kernel: "Kernel", token: str) -> Identity | None:
    """The owner of a live access token, or None (unknown, revoked, expired, refresh token, wrong secret)."""
    parsed = parse_token(token)
    if parsed is None or parsed[0] != "access":
        return None
    doc = await kernel.store.get(GRANTS, parsed[1])
    if doc is None or doc.get("kind") != KIND or not matches(doc, "accessHash", token):
        return None
    if tokens.expired(doc.get("accessExpiresAt") or "1970-01-01T00:00:00"):
        return None
    await _touch(kernel, doc)
    return tokens.identity_of(kernel, doc, {
        "id": doc["_id"], "kind": KIND, "resource": doc.get("resource"), "clientId": doc.get("clientId"),
        "clientName": doc.get("clientName"), "expiresAt": doc.get("accessExpiresAt"), "scope": doc.get("scope")})


async def _touch(kernel: "Kernel", doc: dict[str, Any]) -> None:
    now = _now()
    try:
        if doc.get("lastUsedAt") and now - datetime.fromisoformat(doc["lastUsedAt"]) < tokens.LAST_USED_RESOLUTION:
            return
    except (TypeError, ValueError):
        pass

    def change(current: dict[str, Any] | None) -> dict[str, Any] | None:
        if current is None:
            return None  # ended meanwhile
        current["lastUsedAt"] = _iso(now)
        return current

    await kernel.store.update(GRANTS, doc["_id"], change)


# -- housekeeping -----------------------------------------------------------------------------------
async def sweep(kernel: "Kernel") -> int:
    """Delete expired codes, grants whose refresh token (and access token) have expired, and client
    registrations that never obtained a grant within ``UNUSED_CLIENT_TTL`` (registration is open)."""
    stale_codes = [d["_id"] for d in await kernel.store.list(CODES) if tokens.expired(d.get("expiresAt") or "x")]
    deleted = await kernel.store.delete_many(CODES, stale_codes) if stale_codes else 0
    oldest = (datetime.now(timezone.utc) - UNUSED_CLIENT_TTL).timestamp()
    unused = [d["_id"] for d in await kernel.store.list(CLIENTS)
              if not d.get("usedAt") and float(d.get("client_id_issued_at") or 0) < oldest]
    if unused:
        deleted += await kernel.store.delete_many(CLIENTS, unused)
    dead = [
        d["_id"] for d in await kernel.store.find(GRANTS, {"kind": KIND})
        if not refresh_live(d) and tokens.expired(d.get("accessExpiresAt") or "x")
    ]
    if dead:
        deleted += await kernel.store.delete_many(GRANTS, dead)
    return deleted
