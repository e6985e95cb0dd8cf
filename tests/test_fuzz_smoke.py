"""A seeded fuzz pass over every documented route: no answer may be a 5xx the kernel made itself (502-504 name
an upstream's failure). The generated bodies carry what fuzzers found to break handlers (half a surrogate pair in
a ``\\u`` escape, ``1e400``, ``NaN``, times outside UTC's range, control characters, oversized and path-like
strings) inside the fields each route's schema names, as the signed-in user, a token and nobody. A longer run of
the same generator: ``GOFANNON_FUZZ_REQUESTS=20000``."""

from __future__ import annotations

import json
import os
import random
import re
import string
from typing import Any

import aiohttp
from conftest import Client
from test_agents_crud import create

REQUESTS = int(os.environ.get("GOFANNON_FUZZ_REQUESTS", "1500"))
ESCAPES = ["\\ud800", "\\udfff", "\\u0000", "\\ud83d\\ude00", "\\u202e", "\\uffff", "\\\\", "\\n"]
NUMBERS = ["0", "-1", "1e308", "-1e400", "1e999", "1.5", "99999999999999999999999", "NaN", "-Infinity", "true",
           "false", "null"]


class Generator:
    def __init__(self, seed: int, names: list[str]) -> None:
        self.r, self.names = random.Random(seed), names

    def atom(self) -> str:
        r, c = self.r, self.r.random()
        if c < 0.3:
            return '"' + "".join(r.choice(ESCAPES + list("ab/.%:é ")) for _ in range(r.randint(0, 6))) + '"'
        if c < 0.45:
            return r.choice(NUMBERS)
        if c < 0.65:
            return json.dumps(r.choice(self.names + ["", "x" * 300, "http://127.0.0.1:1/x", "project:demo",
                                                     "2026-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "agent/*"]))
        return json.dumps("".join(r.choice(string.printable) for _ in range(r.randint(0, 12))))

    def value(self, keys: list[str], depth: int = 0) -> str:
        c = self.r.random()
        if depth > 3 or c < 0.5:
            return self.atom()
        if c < 0.7:
            return "[" + ",".join(self.value(keys, depth + 1) for _ in range(self.r.randint(0, 3))) + "]"
        return "{" + ",".join(json.dumps(self.r.choice(keys)) + ":" + self.value(keys, depth + 1)
                              for _ in range(self.r.randint(0, 6))) + "}"


def fields(schema: Any, components: dict[str, Any], depth: int = 0) -> set[str]:
    """Every property name a request schema mentions (following $refs a few levels)."""
    if not isinstance(schema, dict) or depth > 4:
        return set()
    if "$ref" in schema:
        return fields(components.get(schema["$ref"].rsplit("/", 1)[-1]), components, depth + 1)
    out = set(schema.get("properties") or {})
    for sub in [*(schema.get("properties") or {}).values(), schema.get("items"), schema.get("additionalProperties"),
                *schema.get("anyOf", []), *schema.get("oneOf", []), *schema.get("allOf", [])]:
        out |= fields(sub, components, depth + 1)
    return out


async def test_no_generated_request_gets_a_5xx_the_kernel_made(serve: Any) -> None:
    client: Client = await serve()
    await client.login("alice")
    agent = await create(client, friendlyName="target")
    async with client.post(f"/agents/{agent['_id']}/deploy") as r:
        assert r.status == 201
    async with client.post("/users/me/tokens", json={"name": "fuzz"}) as r:
        token = (await r.json())["token"]
    async with client.get("/openapi.json") as r:
        spec = await r.json()
    components = spec["components"]["schemas"]
    operations = [(path, method, op) for path, methods in spec["paths"].items() for method, op in methods.items()
                  if not path.startswith(("/auth", "/logout"))]
    gen = Generator(20261130, [agent["_id"], "target", "agent/target"])
    failures: list[str] = []
    async with aiohttp.ClientSession() as anonymous:
        for _ in range(REQUESTS):
            await one(client, anonymous, gen, operations, components, agent["_id"], token, failures)
    assert not failures, "\n".join(failures)


async def one(client: Client, anonymous: aiohttp.ClientSession, gen: Generator, operations: list[Any],
              components: dict[str, Any], agent_id: str, token: str, failures: list[str]) -> None:
    """One generated request to one documented route."""
    path, method, op = gen.r.choice(operations)
    url = re.sub(r"\{[^}]+\}", lambda _: gen.r.choice(
        [agent_id, "target", "0", "%ED%A0%80", "%00", "x" * 300, "..", "agent%2Ftarget", "project:demo"]), path)
    body = None
    if "requestBody" in op:
        schema = op["requestBody"]["content"].get("application/json", {}).get("schema", {})
        body = gen.value(sorted(fields(schema, components)) or ["x"])
    headers = {"Content-Type": "application/json"}
    who = gen.r.random()
    if who < 0.4:
        headers["Authorization"] = f"Bearer {token}"
    elif who < 0.5:
        headers["Authorization"] = "Bearer gft_" + gen.atom().strip('"')[:40]
    session = client.session if who >= 0.5 else anonymous  # the signed-in browser, a token, or nobody
    async with session.request(method.upper(), client.url(url), data=body.encode() if body else None,
                               headers=headers, allow_redirects=False) as r:
        await r.read()
        if r.status >= 500 and r.status not in (502, 503, 504):
            failures.append(f"{method.upper()} {url} {body!r:.200} -> {r.status} {(await r.text())[:200]}")


async def test_json_nested_deeper_than_the_limit_is_a_4xx_that_says_so(serve: Any) -> None:
    """A body nested a thousand levels (2 KB) broke the parser's recursion on every JSON route, even those that
    need no login; it is refused as invalid JSON (MAX_DEPTH levels are accepted)."""
    from gofannon.jsontext import MAX_DEPTH

    client: Client = await serve()
    await client.login("alice")
    deep = "[" * 1000 + "]" * 1000
    bodies = {
        ("POST", "/log/client"): '{"eventType": "x", "message": "m", "metadata": {"a": %s}}',
        ("POST", "/agents"): '{"name": "n", "description": "d", "code": "c", "inputSchema": %s}',
        ("POST", "/v1/chat/completions"): '{"model": "openai/gpt-4o", "messages": %s}',
        ("PUT", "/data-store/namespaces/default/records/k"): '{"value": %s}',
    }
    for (method, path), template in bodies.items():
        async with client.request(method, path, data=template % deep,
                                  headers={"Content-Type": "application/json"}) as r:
            assert 400 <= r.status < 500, (path, r.status, await r.text())
            assert f"nested deeper than {MAX_DEPTH} levels" in await r.text(), path
    async with client.post("/oauth/register", data='{"redirect_uris": %s}' % deep,
                           headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400
    async with client.post("/mcp", data=deep, headers={"Content-Type": "application/json",
                                                      "Accept": "application/json, text/event-stream"}) as r:
        assert r.status in (400, 401)
    # At the limit it is an ordinary body (stored and read back).
    value = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    async with client.put("/data-store/namespaces/default/records/k", data='{"value": %s}' % value,
                          headers={"Content-Type": "application/json"}) as r:
        assert r.status == 200, await r.text()
    async with client.get("/data-store/namespaces/default/records/k") as r:
        assert r.status == 200 and json.dumps((await r.json())["value"], separators=(",", ":")) == value


async def test_a_body_sent_as_text_or_a_form_is_not_taken_for_json(serve: Any) -> None:
    """What a page on another origin can make a browser send with the user's cookie and no CORS preflight is a
    text/plain or form body: with the cookie such a body is refused (415) and changes nothing; JSON with a charset
    or a ``+json`` type is fine, and a script's request (a bearer token, no cookie) may declare any type, as
    ``curl -d`` does."""
    client: Client = await serve()
    await client.login("alice")
    agent = json.dumps({"name": "csrf", "description": "d", "code": "c"})
    for declared in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        async with client.post("/agents", data=agent, headers={"Content-Type": declared}) as r:
            assert r.status == 415, (declared, r.status, await r.text())
            assert "application/json" in (await r.json())["detail"]
    async with client.get("/agents") as r:
        assert await r.json() == []
    for declared in ("application/json; charset=utf-8", "application/merge-patch+json"):
        async with client.post("/agents", data=agent, headers={"Content-Type": declared}) as r:
            assert r.status == 201, (declared, await r.text())
    async with client.post("/users/me/tokens", json={"name": "script"}) as r:
        token = (await r.json())["token"]
    async with aiohttp.ClientSession() as script:  # no cookie: curl -d '{...}' sends a form type
        async with script.post(client.url("/agents"), data=json.dumps({"name": "curl", "description": "d",
                                                                       "code": "c"}),
                               headers={"Authorization": f"Bearer {token}",
                                        "Content-Type": "application/x-www-form-urlencoded"}) as r:
            assert r.status == 201, await r.text()


async def test_a_write_from_another_origin_carrying_the_session_cookie_is_refused(serve: Any) -> None:
    """Whatever the route (one that reads no body included: deploying, resetting an allowance), a write that a
    page of another origin makes the browser send with the user's cookie is refused; the web UI's origin and
    the kernel's own pass, and reads are not affected."""
    client: Client = await serve()
    await client.login("alice")
    async with client.post("/agents", json={"name": "a", "description": "d", "code": "c", "friendlyName": "a"}) as r:
        agent = await r.json()
    evil = {"Origin": "http://127.0.0.1:9999"}
    for path in (f"/agents/{agent['_id']}/deploy", "/users/me/reset-allowance"):
        async with client.post(path, headers={**evil, "Content-Type": "text/plain"}) as r:
            assert r.status == 403 and "Cross-origin" in (await r.json())["detail"], path
    async with client.get("/deployments", headers=evil) as r:
        assert r.status == 200 and await r.json() == []  # not deployed; reading is allowed
    async with client.get("/health") as r:
        own = f"{r.url.scheme}://{r.url.host}:{r.url.port}"
    async with client.post(f"/agents/{agent['_id']}/deploy", headers={"Origin": own}) as r:
        assert r.status == 201, await r.text()
    async with client.delete(f"/agents/{agent['_id']}/undeploy", headers={"Origin": "http://localhost:3000"}) as r:
        assert r.status in (200, 204), await r.text()  # FRONTEND_URL's origin: the web UI
