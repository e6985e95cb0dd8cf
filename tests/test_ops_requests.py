"""Request ids and logs: ``X-Request-Id`` on every answer, in log lines, events and 500 details; JSON logs;
secrets never reach a log line."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from typing import Any, AsyncIterator, Callable, Iterator

import aiohttp
import pytest
import yarl
from aiohttp import web
from aiohttp.test_utils import TestServer

from conftest import Client, free_port
from gofannon import hookimpl
from gofannon.app import create_app
from gofannon.kernel import Kernel
from gofannon.observability import configure_logging
from gofannon.services.identity import SESSION_COOKIE
from gofannon.settings import Settings
from gofannon.web.keys import KERNEL

GENERATED = re.compile(r"[0-9a-f]{24}")
log = logging.getLogger("gofannon.test_ops")


class Throwaway:
    """Routes the app has none of on purpose: one that fails, one that streams, one that logs and records."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    @hookimpl
    def register_routes(self, register: Callable[..., None], settings: Settings) -> None:
        async def boom(request: web.Request) -> web.Response:
            raise RuntimeError("the test route failed on purpose")

        async def stream(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
            await resp.prepare(request)
            await resp.write(b"one\n")
            await resp.write(b"two\n")
            await resp.write_eof()
            return resp

        async def chatty(request: web.Request) -> web.Response:
            log.warning("incoming headers %s", dict(request.headers))
            request.app[KERNEL].record("test_ops_event", "something happened", metadata={"n": 1})
            return web.json_response({"ok": True})

        async def leak(request: web.Request) -> web.Response:
            raise RuntimeError(f"careless code quoting {request.headers.get('Authorization')}")

        register("GET", "/test-ops/boom", boom, public=True)
        register("GET", "/test-ops/leak", leak)
        register("GET", "/test-ops/stream", stream, public=True)
        register("GET", "/test-ops/chatty", chatty)

    @hookimpl
    def record_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)


@pytest.fixture
def captured_logs(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., io.StringIO]]:
    """``stream = capture(**env)`` routes the root logger through the kernel's log set-up into a buffer."""
    root = logging.getLogger()
    level = root.level
    installed: list[logging.Handler] = []

    def capture(**env: str) -> io.StringIO:
        buf = io.StringIO()
        installed.append(configure_logging(make_settings(**env), stream=buf))
        return buf

    yield capture
    for handler in installed:
        root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
async def ops_app(make_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., Any]]:
    """``client, plugin = await ops_app(**env)``: the real app with the throwaway plugin, on a real port."""
    started: list[tuple[TestServer, aiohttp.ClientSession]] = []

    async def start(**env: str) -> tuple[Client, Throwaway]:
        plugin = Throwaway()
        kernel = Kernel(make_settings(**env))
        kernel.pm.register(plugin, name="test-ops")
        app = create_app(kernel=kernel)
        server = TestServer(app, host="127.0.0.1", port=free_port())
        await server.start_server()
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        started.append((server, session))
        return Client(server, session), plugin

    yield start
    for server, session in reversed(started):
        await session.close()
        await server.close()


async def test_every_answer_carries_a_request_id(ops_app: Any) -> None:
    client, _ = await ops_app()
    seen = set()
    for path in ("/health", "/no/such/route", "/agents", "/test-ops/stream"):
        async with client.get(path) as r:
            rid = r.headers.get("X-Request-Id")
            assert rid is not None and GENERATED.fullmatch(rid), (path, r.status, rid)
            seen.add(rid)
            if path == "/test-ops/stream":
                assert await r.text() == "one\ntwo\n"
    assert len(seen) == 4  # a new id per request
    async with client.get("/health/") as r:  # a redirect raised past the handler
        assert r.status == 307 and GENERATED.fullmatch(r.headers["X-Request-Id"])
    async with client.request("OPTIONS", "/agents", headers={
            "Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET"}) as r:
        assert r.status == 200 and GENERATED.fullmatch(r.headers["X-Request-Id"])


async def test_a_well_formed_request_id_is_kept_and_a_bad_one_replaced(ops_app: Any) -> None:
    client, _ = await ops_app()
    async with client.get("/health", headers={"X-Request-Id": "lb-7f3a.42:retry=1"}) as r:
        assert r.headers["X-Request-Id"] == "lb-7f3a.42:retry=1"
    for bad in ("x" * 129, "<script>alert(1)</script>", "has space", "-leading-dash"):
        async with client.get("/health", headers={"X-Request-Id": bad}) as r:
            assert r.status == 200
            assert GENERATED.fullmatch(r.headers["X-Request-Id"]), bad


async def test_a_500_names_its_request_id_and_the_log_line_carries_it(ops_app: Any, captured_logs: Any) -> None:
    logs = captured_logs()
    client, plugin = await ops_app()
    async with client.get("/test-ops/boom", headers={"X-Request-Id": "quote-me-123"}) as r:
        assert r.status == 500
        assert r.headers["X-Request-Id"] == "quote-me-123"
        assert (await r.json())["detail"] == "An internal server error occurred. (request id: quote-me-123)"
    lines = [line for line in logs.getvalue().splitlines() if "uncaught exception" in line]
    assert lines and "[request_id=quote-me-123]" in lines[0]
    event = next(e for e in plugin.events if e["eventType"] == "uncaught_api_exception")
    assert event["requestId"] == "quote-me-123"


async def test_json_logs_one_object_per_line_with_request_user_and_route(ops_app: Any, captured_logs: Any) -> None:
    logs = captured_logs(GOFANNON_LOG_FORMAT="json")
    client, plugin = await ops_app()
    await client.login("alice")
    async with client.get("/test-ops/chatty", headers={"X-Request-Id": "json-1"}) as r:
        assert r.status == 200
    records = [json.loads(line) for line in logs.getvalue().splitlines()]  # every line parses
    mine = [rec for rec in records if rec["request_id"] == "json-1"]
    warning = next(rec for rec in mine if rec["logger"] == "gofannon.test_ops")
    assert warning["level"] == "WARNING" and warning["user_id"] == "dev_stub:alice"
    assert warning["route"] == "/test-ops/chatty" and warning["message"].startswith("incoming headers")
    assert set(warning) >= {"time", "level", "logger", "message", "request_id", "user_id", "route"}
    event = next(e for e in plugin.events if e["eventType"] == "test_ops_event")
    assert event["requestId"] == "json-1" and event["userId"] == "dev_stub:alice"
    assert any(rec["logger"] == "gofannon.events" and "test_ops_event" in rec["message"] for rec in mine)


async def test_tokens_and_keys_never_reach_the_log(ops_app: Any, captured_logs: Any) -> None:
    secret_key = "sk-ant-configured-provider-key-0123456789"
    admin_password = "correct horse battery staple"
    env = {"ANTHROPIC_API_KEY": secret_key, "ADMIN_PANEL_PASSWORD": admin_password}
    logs = captured_logs(**env)
    client, _ = await ops_app(**env)
    await client.login("alice")
    async with client.post("/users/me/tokens", json={"name": "script"}) as r:
        assert r.status == 201
        token = (await r.json())["token"]
    session_cookie = next(c.value for c in client.session.cookie_jar if c.key == SESSION_COOKIE)
    async with aiohttp.ClientSession() as bare:
        async with bare.get(client.url("/test-ops/chatty"), headers={
                "Authorization": f"Bearer {token}", "X-Admin-Password": admin_password,
                "X-Request-Id": "secret-test"}) as r:
            assert r.status == 200
    async with client.get("/test-ops/chatty") as r:  # a browser: the session cookie
        assert r.status == 200
    async with aiohttp.ClientSession() as bare:  # a traceback quoting the token
        async with bare.get(client.url("/test-ops/leak"), headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 500
    log.error("config dump: key=%s and %s", secret_key, admin_password)
    log.warning("connecting to %s", "postgresql://gofannon:db-pass-8f2k@db.internal:5432/gofannon")
    text = logs.getvalue()
    assert "secret-test" in text and "incoming headers" in text  # the headers were logged ...
    assert "careless code quoting" in text  # ... and the traceback ...
    assert token not in text and token.split("_")[-1] not in text  # ... without the token
    assert secret_key not in text and admin_password not in text
    assert "db-pass-8f2k" not in text and "postgresql://gofannon:[REDACTED]@db.internal" in text
    assert session_cookie not in text


async def test_an_event_is_redacted_field_by_field_and_its_line_needs_no_second_pass(ops_app: Any,
                                                                                      captured_logs: Any) -> None:
    """An event's fields go through the log handler's whole redaction one by one (its line is then written as is):
    what the handler would hide in the line is hidden in the line, and in what ``record_event`` sinks get."""
    from gofannon.observability import Redactor, configured_secrets

    configured = "configured-secret-value-42"
    env = {"MY_VENDOR_API_KEY": configured}
    logs = captured_logs(**env)
    client, plugin = await ops_app(**env)
    kernel = client.server.app[KERNEL]
    secrets = {
        "configured": configured, "bearer": "abcdefghijklmnopqrst", "basic": "dXNlcjpwYXNzd29yZA",
        "url": "db-pass-8f2k", "openai": "sk-proj-ABCDEFGHIJKLMNOPQRST", "token": "hunter2hunter2",
        "cookie": "sid-0123456789", "key": "sk-proj-KEYKEYKEYKEYKEYKEYKEY",
    }
    metadata = {
        "Authorization": f"Basic {secrets['basic']}",  # a credential header's value, whatever its shape
        "Cookie": secrets["cookie"],
        "dsn": f"postgresql://app:{secrets['url']}@db.internal/app",
        "note": f"sent Bearer {secrets['bearer']} with token={secrets['token']}",
        "nested": {"list": [f"vendor said {secrets['openai']}", 3, None], "x-api-key": 12345678},
        secrets["key"]: "a key that is itself a secret",
        "inputTokens": 9, "cost": 1.5e-08, "model": "bench/m",
    }
    kernel.record("test_redaction", f"calling with {configured}", metadata=metadata)
    event = plugin.events[-1]
    line = next(line for line in logs.getvalue().splitlines() if "test_redaction" in line)
    for name, secret in secrets.items():
        assert secret not in line, (name, line)
        assert secret not in json.dumps(event), (name, event)
    md = event["metadata"]
    assert md["Authorization"] == md["Cookie"] == md["nested"]["x-api-key"] == "[REDACTED]"
    assert md["inputTokens"] == 9 and md["cost"] == 1.5e-08 and md["model"] == "bench/m"
    assert "[REDACTED:configured]" in event["message"]
    # Searching the line again (what the handler does to every other line) changes nothing.
    text = line.split(": ", 1)[1]
    assert Redactor(configured_secrets(kernel.settings))(text) == text


async def test_an_events_log_line_reads_as_any_other_logged_line(ops_app: Any, captured_logs: Any) -> None:
    """The event's record is built without ``Logger.log`` (no caller lookup): the line still has the handler's
    format, the request id of the request, and the level the event asked for."""
    logs = captured_logs()
    client, plugin = await ops_app()
    await client.login("alice")
    async with client.get("/test-ops/chatty", headers={"X-Request-Id": "evt-line-1"}) as r:
        assert r.status == 200
    client.server.app[KERNEL].record("test_warning_event", "a warning", level="WARNING")
    lines = logs.getvalue().splitlines()
    line = next(line for line in lines if "test_ops_event" in line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO gofannon.events \[request_id=evt-line-1\]: "
                        r"test_ops_event \{.*\}", line), line
    body = json.loads(line.split(": test_ops_event ", 1)[1])
    assert body["requestId"] == "evt-line-1" and body["userId"] == "dev_stub:alice" and body["metadata"] == {"n": 1}
    warning = next(line for line in lines if "test_warning_event" in line)
    assert " WARNING gofannon.events: test_warning_event {" in warning


async def test_every_event_sink_gets_the_event_even_when_one_fails(ops_app: Any, captured_logs: Any) -> None:
    """``record_event`` plugins are called directly (not through pluggy's dispatch) while they are plain ones: a
    sink that raises is logged and the others still get the event; a plugin added later, or a hook wrapper, is
    honoured at once."""
    logs = captured_logs()
    client, plugin = await ops_app()
    kernel = client.server.app[KERNEL]

    class Broken:
        @hookimpl
        def record_event(self, event: dict[str, Any]) -> None:
            raise RuntimeError("this sink is broken")

    class Wrapper:
        seen: list[str] = []

        @hookimpl(wrapper=True)
        def record_event(self, event: dict[str, Any]) -> Any:
            self.seen.append(event["eventType"])
            return (yield)

    kernel.record("before_broken")
    kernel.pm.pm.register(Broken(), name="test-broken-sink")
    kernel.record("with_broken")
    assert [e["eventType"] for e in plugin.events][-2:] == ["before_broken", "with_broken"]
    assert "record_event plugin failed" in logs.getvalue() and "this sink is broken" in logs.getvalue()
    kernel.pm.pm.register(Wrapper(), name="test-wrapper-sink")
    kernel.record("with_wrapper")
    assert Wrapper.seen == ["with_wrapper"]
    kernel.pm.pm.unregister(name="test-broken-sink")
    kernel.pm.pm.unregister(name="test-wrapper-sink")
    kernel.record("after")
    assert plugin.events[-1]["eventType"] == "after" and Wrapper.seen == ["with_wrapper"]


async def test_a_malformed_request_is_a_400_and_one_quiet_log_line_without_its_bytes(ops_app: Any,
                                                                                      captured_logs: Any) -> None:
    """aiohttp would log it at ERROR with a traceback quoting the offending header: any client could flood the
    operator's log that way, and the bytes may be a credential."""
    logs = captured_logs()
    client, _ = await ops_app()
    url = yarl.URL(client.url("/health"))
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Api-Key: sk-live-\x00-private-9f3a\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")
    # The answer is the kernel's like any other (JSON detail, a request id) and does not quote the bytes back.
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"private-9f3a" not in answer and json.loads(body) == {"detail": "Bad Request: malformed HTTP request"}
    assert GENERATED.fullmatch(next(line.split(b": ", 1)[1].decode() for line in head.split(b"\r\n")
                                    if line.lower().startswith(b"x-request-id:")))
    await asyncio.sleep(0.05)
    text = logs.getvalue()
    assert "Traceback" not in text and "private-9f3a" not in text
    lines = [line for line in text.splitlines() if "malformed request" in line]
    assert len(lines) == 1 and " INFO " in lines[0] and "BadHttpMessage" in lines[0], text


async def test_a_request_line_over_the_limit_is_told_so_without_being_quoted(ops_app: Any,
                                                                             captured_logs: Any) -> None:
    logs = captured_logs()
    client, _ = await ops_app()
    async with client.get("/agents/" + "secret" * 2000) as r:
        assert r.status == 400 and r.headers.get("X-Request-Id")
        assert await r.json() == {"detail": "Bad Request: a request line or header is too long"}
    await asyncio.sleep(0.05)
    assert "secretsecret" not in logs.getvalue()


async def test_unrouted_requests_answer_404_405_and_the_trailing_slash_redirect(ops_app: Any) -> None:
    client, _ = await ops_app()
    async with client.get("/no/such/route/") as r:  # no route with or without the slash: 404, not a redirect
        assert r.status == 404 and (await r.json()) == {"detail": "Not Found"}
    async with client.get("/no/such/route", headers={"Authorization": "Bearer not-a-token"}) as r:
        assert r.status == 404  # what does not exist is a 404 before any credentials are looked at
    async with client.request("PATCH", "/health") as r:
        assert r.status == 405 and (await r.json()) == {"detail": "Method Not Allowed"}
        assert GENERATED.fullmatch(r.headers["X-Request-Id"])
        assert r.headers["Allow"] == "GET, HEAD"  # RFC 9110: what the path does take
    async with client.request("TRACE", "/agents") as r:
        assert r.status == 405 and set(r.headers["Allow"].split(", ")) == {"GET", "HEAD", "POST"}
    async with client.get("/health/", allow_redirects=False) as r:
        assert r.status == 307 and r.headers["Location"] == "/health"
    async with client.get("/v1/no-such") as r:  # under /v1, in OpenAI's error shape
        assert r.status == 404 and (await r.json())["error"]["message"]


def test_every_kind_of_secret_is_redacted_and_plain_text_passes_untouched() -> None:
    from gofannon.observability import _PATTERNS, redact

    samples = {
        "api_token": "gft_" + "0123456789abcdef" * 2 + "_" + "S3cr3t-part_of-the-token",
        "github_token": "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1",
        "anthropic_key": "sk-ant-api03-abcdefghijkl",
        "openai_key": "sk-proj-ABCDEFGHIJKLMNOPQRST",
        "aws_key_id": "AKIAABCDEFGHIJKLMNOP",
        "google_key": "AIza" + "x" * 35,
        "slack_token": "xoxb-1234567890-abc",
        "stripe_key": "sk_live_" + "q" * 20,
        "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLWhlcmU",
        "private_key": "-----BEGIN RSA PRIVATE KEY-----MIIEpAIBAAKCAQEA-----END RSA PRIVATE KEY-----",
        "secret": "Password = hunter2hunter2",
    }
    assert {kind for kind, _ in _PATTERNS} == set(samples)  # a new pattern needs a sample here
    for kind, secret in samples.items():
        text = f"while calling the vendor with {secret} it failed"
        cleaned = redact(text)
        assert f"[REDACTED:{kind}]" in cleaned, (kind, cleaned)
        value = secret.split("= ")[-1]
        assert value not in cleaned, (kind, cleaned)
    for plain in ("", "openai/gpt-4o", "bench/m", "a perfectly ordinary sentence about agents and models",
                  "llm_request 2026-11-30T05:00:00.123456", "tokens: 12 in, 4 out"):
        assert redact(plain) == plain


def test_the_redaction_prefilter_never_lets_a_secret_through() -> None:
    """``redact`` skips its patterns when a quick scan finds none of their starts: it must answer exactly as
    running every pattern would, for secrets written every which way and for the events' ordinary text."""
    from gofannon.observability import _PATTERNS, redact

    def every_pattern(text: str) -> str:
        for kind, pattern in _PATTERNS:
            if kind == "secret":
                text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}[REDACTED:{kind}]", text)
            else:
                text = pattern.sub(f"[REDACTED:{kind}]", text)
        return text

    names = ("password", "PASSWD", "Secret", "token", "TOKEN", "api_key", "Api-Key", "apikey")
    gaps = ("=", ": ", " = ", "\t:\t", ":")
    texts = [f"{prefix}{name}{gap}s3cr3tvalue{suffix}" for name in names for gap in gaps
             for prefix in ("", "x ", "the ") for suffix in ("", " and more", ",next")]
    texts += ['{"inputTokens": 9, "outputTokens": 3, "cost": 1.5e-08}', "my_token=abcdefgh", "tokens=abcdefgh",
              "passwords: none given", "api key: abcdefgh", "secret_value=abcdefgh", "sk-short", "eyJ.eyJ.x",
              "\u017fecret=abcdefgh (a long s)", "\u0130token=abcdefgh", "t\u00f6ken=abcdefgh token=abcdefgh",
              "TOKEN\u00a0=\u00a0abcdefgh", "x" * 40 + "token\x1c=abcdefgh"]
    for text in texts:
        assert redact(text) == every_pattern(text), text


def test_the_log_redactor_skips_only_patterns_that_cannot_match() -> None:
    from gofannon.observability import _BEARER, _HEADER_SECRET, _URL_PASSWORD, Redactor, redact

    def every_pattern(text: str) -> str:
        text = _HEADER_SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3) or ''}[REDACTED]", text)
        text = _BEARER.sub(lambda m: f"{m.group(1)} [REDACTED]", text)
        text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}[REDACTED]{m.group(3)}", text)
        return redact(text)

    texts = ["Authorization: Bearer abcdefghijk", "PROXY-AUTHORIZATION=Basic dXNlcjpwYXNz", "set-cookie: sid=xyz123",
             "X-Api-Key: abcdefgh", "x-admin-password = hunter2", "sent bearer abcdefghijklmnop to the vendor",
             "postgresql://user:s3cret@db.internal/app", "redis://:pw@127.0.0.1:6379/0",
             "\u212authorization... a Kelvin sign", "Cookie: a=b; \u00e9t\u00e9", "llm_request {\"inputTokens\": 9}",
             "nothing to hide in this line at all", "0123456789abcdef" * 3, "deadbeef", "DEADBEEF0123",
             "abc123 token=abcdefgh"]
    redactor = Redactor([])
    for text in texts:
        assert redactor(text) == every_pattern(text), text
