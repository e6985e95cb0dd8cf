"""Firebase bearer mode (APP_ENV=firebase): ID tokens verified against keys a local server publishes."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from conftest import free_port

PROJECT = "demo-proj"


def _self_signed(private: rsa.RSAPrivateKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "securetoken.system.gserviceaccount.com")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1)).sign(private, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class KeyServer:
    """Publishes signing keys the way Google does (x509 map) or as a JWKS."""

    def __init__(self) -> None:
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = self.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
        self.key = RSAKey.import_key(pem, parameters={"kid": "fb-1"})
        self.server: TestServer | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/x509", lambda r: web.json_response({"fb-1": _self_signed(self.private)}))
        app.router.add_get("/jwks", lambda r: web.json_response(KeySet([self.key]).as_dict(private=False)))
        return app

    def url(self, path: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    def token(self, *, key: RSAKey | None = None, **overrides: Any) -> str:
        now = int(time.time())
        claims = {"iss": f"https://securetoken.google.com/{PROJECT}", "aud": PROJECT, "sub": "fb-user-1",
                  "user_id": "fb-user-1", "iat": now, "exp": now + 600, "auth_time": now,
                  "email": "fb@example.org", "name": "Fire Base"}
        claims.update(overrides)
        signer = key or self.key
        return jwt.encode({"alg": "RS256", "kid": signer.kid}, claims, signer)


@pytest.fixture
async def keys() -> AsyncIterator[KeyServer]:
    ks = KeyServer()
    ks.server = TestServer(ks.app(), host="127.0.0.1", port=free_port())
    await ks.server.start_server()
    yield ks
    await ks.server.close()


async def _call(client: Any, path: str, token: str | None, method: str = "GET", **kw: Any) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s:
        async with s.request(method, client.url(path), headers=headers, **kw) as r:
            return r.status, await r.json(content_type=None), r.headers


@pytest.mark.parametrize("fmt", ["x509", "jwks"])
async def test_a_valid_firebase_id_token_signs_the_user_in(serve: Any, keys: KeyServer, fmt: str) -> None:
    client = await serve(APP_ENV="firebase", FIREBASE_PROJECT_ID=PROJECT, GOFANNON_FIREBASE_KEYS_URL=keys.url(f"/{fmt}"))
    status, user, _ = await _call(client, "/users/me", keys.token())
    assert status == 200
    assert user["_id"] == "fb-user-1" and user["basicInfo"] == {"displayName": "Fire Base", "email": "fb@example.org"}


async def test_without_a_bearer_token_firebase_mode_answers_plain_401(serve: Any, keys: KeyServer) -> None:
    client = await serve(APP_ENV="firebase", FIREBASE_PROJECT_ID=PROJECT, GOFANNON_FIREBASE_KEYS_URL=keys.url("/x509"))
    status, body, headers = await _call(client, "/users/me", None)
    assert status == 401 and body == {"detail": "Not authenticated"} and "X-Auth-Reason" not in headers


@pytest.mark.parametrize("bad", ["audience", "issuer", "expired", "foreign_key", "garbage"])
async def test_a_token_that_fails_verification_is_refused(serve: Any, keys: KeyServer, bad: str) -> None:
    client = await serve(APP_ENV="firebase", FIREBASE_PROJECT_ID=PROJECT, GOFANNON_FIREBASE_KEYS_URL=keys.url("/x509"))
    now = int(time.time())
    token = {
        "audience": lambda: keys.token(aud="someone-else"),
        "issuer": lambda: keys.token(iss="https://securetoken.google.com/someone-else"),
        "expired": lambda: keys.token(iat=now - 7200, exp=now - 3600),
        "foreign_key": lambda: keys.token(key=RSAKey.generate_key(2048, parameters={"kid": "fb-1"})),
        "garbage": lambda: "not.a.jwt",
    }[bad]()
    status, body, _ = await _call(client, "/users/me", token)
    assert status == 401 and body == {"detail": "Invalid authentication token"}


async def test_firebase_tokens_are_ignored_outside_firebase_mode(serve: Any, keys: KeyServer) -> None:
    client = await serve(FIREBASE_PROJECT_ID=PROJECT, GOFANNON_FIREBASE_KEYS_URL=keys.url("/x509"))
    status, _body, headers = await _call(client, "/users/me", keys.token())
    assert status == 401 and headers["X-Auth-Reason"] == "not_authenticated"


async def test_a_firebase_user_can_mint_a_personal_token_and_use_it(serve: Any, keys: KeyServer) -> None:
    client = await serve(APP_ENV="firebase", FIREBASE_PROJECT_ID=PROJECT, GOFANNON_FIREBASE_KEYS_URL=keys.url("/jwks"))
    status, created, _ = await _call(client, "/users/me/tokens", keys.token(), method="POST", json={"name": "cli"})
    assert status == 201
    status, user, _ = await _call(client, "/users/me", created["token"])
    assert status == 200 and user["_id"] == "fb-user-1"
