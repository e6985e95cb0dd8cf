"""Verify signed ID tokens against a provider's published keys (JWKS or Google's x509 certificate map).

Keys are cached; a token whose ``kid`` is not in the cache triggers one refetch (providers rotate keys),
rate-limited so a stream of forged ``kid`` values cannot make us hammer the key endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any, Collection

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey, import_key

DEFAULT_ALGORITHMS = ("RS256",)
LEEWAY_S = 60


class TokenRejected(Exception):
    """The token is not valid for us: bad signature, unknown key, wrong claims, expired."""


def unverified_header(token: str) -> dict[str, Any]:
    try:
        head = token.split(".", 1)[0]
        data = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, IndexError) as exc:
        raise TokenRejected("malformed token") from exc
    if not isinstance(data, dict):
        raise TokenRejected("malformed token header")
    return data


def parse_key_document(data: Any) -> KeySet:
    """A JWKS (``{"keys": [...]}``) or Google's ``{kid: PEM certificate}`` map, as a key set."""
    if isinstance(data, dict) and isinstance(data.get("keys"), list):
        keys = []
        for entry in data["keys"]:
            try:
                keys.append(import_key(entry))
            except (JoseError, ValueError, TypeError, KeyError):
                continue  # a key type we do not use; skip it rather than reject the whole set
        return KeySet(keys)
    if isinstance(data, dict):
        keys = []
        for kid, pem in data.items():
            if not isinstance(pem, str):
                continue
            try:
                cert = x509.load_pem_x509_certificate(pem.encode())
                public = cert.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                keys.append(RSAKey.import_key(public, parameters={"kid": kid}))
            except (ValueError, TypeError, JoseError):
                continue
        return KeySet(keys)
    raise ValueError("key document is neither a JWKS nor a certificate map")


class RemoteKeys:
    """The keys at one URL, fetched lazily, refetched on an unknown ``kid`` or after ``ttl_s``."""

    def __init__(self, url: str, *, ttl_s: float = 3600.0, min_refetch_s: float = 10.0, timeout_s: float = 10.0) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self.min_refetch_s = min_refetch_s
        self.timeout_s = timeout_s
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def _fetch(self) -> KeySet:
        async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=True) as client:
            response = await client.get(self.url, headers={"Accept": "application/json"})
        response.raise_for_status()
        keys = parse_key_document(response.json())
        self._keys, self._fetched_at = keys, time.monotonic()
        return keys

    async def keys(self, *, want_kid: str | None = None) -> KeySet:
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            if self._keys is None or age > self.ttl_s:
                return await self._fetch()
            known = {k.kid for k in self._keys.keys}
            if want_kid is not None and want_kid not in known and age > self.min_refetch_s:
                return await self._fetch()
            return self._keys

    async def verify(self, token: str, *, claims: dict[str, Any],
                     algorithms: Collection[str] = DEFAULT_ALGORITHMS) -> dict[str, Any]:
        """The token's claims after checking signature, ``exp``/``iat`` and the ``claims`` options
        (joserfc's ``{"iss": {"essential": True, "value": ...}, ...}``)."""
        header = unverified_header(token)
        if header.get("alg") not in algorithms:
            raise TokenRejected(f"algorithm {header.get('alg')!r} not allowed")
        kid = header.get("kid")
        try:
            keys = await self.keys(want_kid=kid if isinstance(kid, str) else None)
        except (httpx.HTTPError, ValueError) as exc:
            raise RuntimeError(f"could not fetch signing keys from {self.url}: {exc}") from exc
        try:
            decoded = jwt.decode(token, keys, algorithms=list(algorithms))
            registry = jwt.JWTClaimsRegistry(leeway=LEEWAY_S, exp={"essential": True}, **claims)
            registry.validate(decoded.claims)
        except (JoseError, ValueError, TypeError) as exc:
            raise TokenRejected(str(exc) or type(exc).__name__) from exc
        return dict(decoded.claims)
