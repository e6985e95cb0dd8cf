"""The kernel's HTTP client for vendors (``gofannon.llm.conn`` under ``LlmHttp``), against real loopback servers:
connection reuse and idle expiry, a vendor closing connections, TLS, compressed and chunked answers, a long stream
read slowly (flow control), informational, cut-off and malformed answers, misconfigured URLs, header injection,
the per-origin connection limit, and server-sent events cut at any byte."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import ssl
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import local_site
from gofannon.llm import VendorError
from gofannon.llm.conn import VendorClient
from gofannon.llm.http import LlmHttp

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
ANSWER = {"choices": [{"message": {"role": "assistant", "content": "hello"}}]}


@pytest.fixture
async def http() -> AsyncIterator[LlmHttp]:
    client = LlmHttp(retries=0, backoff_cap=0)  # no retries: what succeeds, succeeds without them
    yield client
    await client.close()


def _vendor_app(seen: list[Any]) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        seen.append(request.transport.get_extra_info("peername") if request.transport else None)
        body = await request.json()
        if request.query.get("style") == "gzip":
            resp = web.Response(body=json.dumps({**ANSWER, "echo": body}).encode(), content_type="application/json")
            resp.enable_compression(force=web.ContentCoding.gzip)
            return resp
        if request.query.get("style") == "chunked":
            stream = web.StreamResponse(headers={"Content-Type": "application/json"})
            stream.enable_chunked_encoding()
            await stream.prepare(request)
            text = json.dumps({**ANSWER, "echo": body}).encode()
            for i in range(0, len(text), 7):
                await stream.write(text[i:i + 7])
            await stream.write_eof()
            return stream
        return web.json_response({**ANSWER, "echo": body, "ua": request.headers.get("User-Agent")})

    app = web.Application()
    app.router.add_post("/v1/chat", chat)
    return app


async def test_calls_share_one_kept_alive_connection(http: LlmHttp) -> None:
    seen: list[Any] = []
    async with local_site(_vendor_app(seen), "/v1/chat") as url:
        for i in range(5):
            data = await http.request_json("POST", url, headers={"Authorization": "Bearer k"},
                                           body={**BODY, "n": i}, timeout=10)
            assert data["echo"]["n"] == i and data["choices"][0]["message"]["content"] == "hello"
        assert data["ua"].startswith("gofannon/")
    assert len(seen) == 5 and len(set(seen)) == 1  # one TCP connection for all five calls


async def test_a_connection_idle_too_long_is_not_reused(http: LlmHttp, monkeypatch: pytest.MonkeyPatch) -> None:
    from gofannon.llm import conn

    seen: list[Any] = []
    async with local_site(_vendor_app(seen), "/v1/chat") as url:
        monkeypatch.setattr(conn, "IDLE_S", 0.0)  # a middlebox may have dropped it silently: start afresh
        for _ in range(3):
            await http.request_json("POST", url, headers={}, body=BODY, timeout=10)
        monkeypatch.setattr(conn, "IDLE_S", 60.0)
        for _ in range(3):
            await http.request_json("POST", url, headers={}, body=BODY, timeout=10)
    assert len(set(seen)) == 3  # a fresh connection for each of the first three, the third kept for the rest


async def test_gzip_and_chunked_answers_are_decoded(http: LlmHttp) -> None:
    seen: list[Any] = []
    async with local_site(_vendor_app(seen), "/v1/chat") as url:
        for style in ("gzip", "chunked", "gzip"):
            data = await http.request_json("POST", url, headers={}, body=BODY, timeout=10, params={"style": style})
            assert data["echo"] == BODY
    assert len(set(seen)) == 1


async def test_a_long_stream_is_read_whole_with_flow_control_and_its_connection_reused(
        http: LlmHttp, monkeypatch: pytest.MonkeyPatch) -> None:
    from gofannon.llm import conn
    from gofannon.llm.http import sse_events

    pauses: list[bool] = []
    pause = conn._Conn.pause_reading
    monkeypatch.setattr(conn._Conn, "pause_reading", lambda self: (pauses.append(True), pause(self))[1])
    seen: list[Any] = []
    piece = "x" * 1000

    async def stream(request: web.Request) -> web.StreamResponse:
        seen.append(request.transport.get_extra_info("peername") if request.transport else None)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(2000):  # ~2 MB: far over the read buffer, so reading pauses and resumes on the way
            await resp.write(f"data: {json.dumps({'i': i, 'text': piece})}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/stream", stream)
    async with local_site(app, "/v1/stream") as url:
        for _ in range(2):
            got = []
            async with http.open("POST", url, headers={}, body=BODY, timeout=30) as resp:
                assert resp.status == 200 and resp.headers["content-type"].startswith("text/event-stream")
                async for _name, data in sse_events(resp):
                    if data == "[DONE]":
                        continue  # read on to the body's end: the connection is then free at once
                    got.append(json.loads(data)["i"])
                    if len(got) % 500 == 0:
                        await asyncio.sleep(0.01)  # a slow reader: the vendor's writes back up meanwhile
            assert got == list(range(2000))
    assert len(seen) == 2 and len(set(seen)) == 1
    assert pauses  # the slow reader did hold the vendor back


# -- a raw vendor, to misbehave on purpose ---------------------------------------------------------------
Handler = Callable[[int, int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


class RawVendor:
    """A TCP server speaking just enough HTTP/1.1; ``handler(connection_no, request_no, reader, writer)`` answers
    each request (after its head and body were read) and returns whether to keep the connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.AbstractServer | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number, count = self.connections, 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                self.requests.append(head + await reader.readexactly(length))
                count += 1
                if not await self.handler(number, count, reader, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/chat"

    async def __aexit__(self, *exc: Any) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def _ok(body: bytes = b'{"ok": true}', *, close: bool = False) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
            % (len(body), b"Connection: close\r\n" if close else b"")) + body


def answering(data: bytes, *, keep: bool) -> Handler:
    """A vendor that answers every request with ``data`` (and keeps the connection or not)."""
    async def handler(conn: int, count: int, reader: Any, writer: asyncio.StreamWriter) -> bool:
        writer.write(data)
        await writer.drain()
        return keep

    return handler


async def test_server_sent_events_split_anywhere_across_packets_read_the_same(http: LlmHttp) -> None:
    """``sse_events`` splits the bytes it is given itself: events cut in the middle of a line, of a CRLF, of a
    multi-byte character, several in one packet, comments, multi-line data, an event name, and a last event
    without its blank line, read as the SSE rules say."""
    from gofannon.llm.http import sse_events

    stream = ("data: {\"a\": \"héllo wörld ✓\"}\r\n\r\n: a comment\n\nevent: delta\ndata: one\ndata: two\n\n"
              "data:no-space\r\n\r\ndata: [DONE]").encode()
    expected = [(None, '{"a": "héllo wörld ✓"}'), ("delta", "one\ntwo"), (None, "no-space"), (None, "[DONE]")]
    cuts = [[len(stream)], [1, 5, 9, 12, 13, 14, 20, 31, 33], list(range(1, len(stream)))]
    for points in cuts:
        async def handler(conn: int, count: int, reader: Any, writer: asyncio.StreamWriter,
                          points: list[int] = points) -> bool:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n"
                         % len(stream))
            start = 0
            for end in [*points, len(stream)]:
                writer.write(stream[start:end])
                await writer.drain()
                await asyncio.sleep(0.002)  # its own packet
                start = end
            return True

        async with RawVendor(handler) as url:
            async with http.open("POST", url, headers={}, body=BODY, timeout=10) as resp:
                got = [item async for item in sse_events(resp)]
        assert got == expected, points


async def test_a_kept_connection_the_vendor_drops_unanswered_is_retried_at_once_on_a_new_one(http: LlmHttp) -> None:
    async def handler(conn: int, count: int, reader: Any, writer: asyncio.StreamWriter) -> bool:
        if conn == 1 and count == 2:
            return False  # the vendor's keep-alive ran out just as the second request came: closed, unanswered
        writer.write(_ok())
        await writer.drain()
        return True

    async with RawVendor(handler) as url:
        assert await http.request_json("POST", url, headers={}, body=BODY, timeout=10) == {"ok": True}
        assert await http.request_json("POST", url, headers={}, body=BODY, timeout=10) == {"ok": True}


async def test_a_vendor_that_hangs_up_on_a_new_connection_is_a_503(http: LlmHttp) -> None:
    async def handler(conn: int, count: int, reader: Any, writer: Any) -> bool:
        return False

    vendor = RawVendor(handler)
    async with vendor as url:
        with pytest.raises(VendorError) as info:
            await http.request_json("POST", url, headers={}, body=BODY, timeout=10)
    assert info.value.status == 503 and "could not reach the provider" in info.value.message
    assert vendor.connections == 1  # a fresh connection's failure is not retried without a retry budget


async def test_a_provider_nothing_listens_for_fails_at_once_not_after_the_retry_budget() -> None:
    """Retries with backoff are for a provider that answers "busy" (429/5xx); when no connection can be made at
    all (a local model server that is not running), one quick second try, then a 503 that says so. (With the
    retry budget spent on it, a caller waited ~40 s for this answer.)"""
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = LlmHttp(retries=5, backoff_cap=60)  # the old schedule would sleep past the 5 s deadline
    try:
        with pytest.raises(VendorError) as info:
            await client.request_json("POST", f"http://127.0.0.1:{port}/v1/chat/completions", headers={},
                                      body=BODY, timeout=5)
    finally:
        await client.close()
    assert info.value.status == 503 and info.value.code == "unreachable"
    assert f"cannot connect to 127.0.0.1:{port}" in info.value.message


async def test_an_informational_answer_before_the_real_one_is_skipped(http: LlmHttp) -> None:
    vendor = RawVendor(answering(b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n" + _ok(), keep=True))
    async with vendor as url:
        for _ in range(2):
            assert await http.request_json("POST", url, headers={}, body=BODY, timeout=10) == {"ok": True}
    assert vendor.connections == 1


async def test_connection_close_is_honoured(http: LlmHttp) -> None:
    vendor = RawVendor(answering(_ok(close=True), keep=False))
    async with vendor as url:
        for _ in range(3):
            assert await http.request_json("POST", url, headers={}, body=BODY, timeout=10) == {"ok": True}
    assert vendor.connections == 3


@pytest.mark.parametrize("answer, says", [
    (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"ok\":", "cut off"),
    (b"SMTP ready\r\n\r\n", "could not be read"),
], ids=["cut-off", "not-http"])
async def test_a_cut_off_or_malformed_answer_is_a_clear_502(http: LlmHttp, answer: bytes, says: str) -> None:
    async with RawVendor(answering(answer, keep=False)) as url:
        with pytest.raises(VendorError) as info:
            await http.request_json("POST", url, headers={}, body=BODY, timeout=10)
    assert info.value.status == 502 and says in info.value.message


async def test_a_line_break_in_a_header_never_reaches_the_vendor(http: LlmHttp) -> None:
    vendor = RawVendor(answering(_ok(), keep=True))
    async with vendor as url:
        for value in ("sk-1\r\nX-Injected: yes", "sk-1\nX-Injected: yes", "sk\x00"):
            with pytest.raises(VendorError) as info:
                await http.request_json("POST", url, headers={"Authorization": f"Bearer {value}"}, body=BODY,
                                        timeout=10)
            assert info.value.status == 400 and "sk-1" not in info.value.message
        assert await http.request_json("POST", url, headers={"Authorization": "Bearer sk-1"}, body=BODY,
                                       timeout=10) == {"ok": True}
    assert len(vendor.requests) == 1 and b"X-Injected" not in vendor.requests[0]


async def test_a_provider_url_that_is_not_http_is_the_operators_502_not_the_callers_400(http: LlmHttp) -> None:
    for url in ("ftp://vendor.example/v1/chat", "http:///no-host", "http://127.0.0.1:9/a b"):
        with pytest.raises(VendorError) as info:
            await http.request_json("POST", url, headers={}, body=BODY, timeout=10)
        assert info.value.status == 502 and "misconfigured" in info.value.message


async def test_connections_per_vendor_are_limited_and_calls_wait_their_turn() -> None:
    busy = peak = 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal busy, peak
        busy += 1
        peak = max(peak, busy)
        await asyncio.sleep(0.05)
        busy -= 1
        return web.json_response({"n": (await request.json())["n"]})

    app = web.Application()
    app.router.add_post("/v1/chat", slow)
    client = VendorClient(limit_per_origin=3)
    try:
        async with local_site(app, "/v1/chat") as url:
            async def call(n: int) -> int:
                resp = await client.request("POST", url, headers={"Content-Type": "application/json"},
                                            data=json.dumps({"n": n}).encode())
                return int(json.loads(await resp.read())["n"])

            assert await asyncio.gather(*(call(n) for n in range(12))) == list(range(12))
    finally:
        await client.close()
    assert peak == 3


# -- TLS ----------------------------------------------------------------------------------------------------
def _certificate(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "local vendor")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp / "vendor.pem", tmp / "vendor.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


async def test_https_vendors_are_verified_against_the_trust_store(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cert_file, key_file = _certificate(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_file, key_file)
    seen: list[Any] = []
    runner = web.AppRunner(_vendor_app(seen))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    url = f"https://127.0.0.1:{port}/v1/chat"
    try:
        untrusting = LlmHttp(retries=0, backoff_cap=0)
        try:
            with pytest.raises(VendorError) as info:
                await untrusting.request_json("POST", url, headers={}, body=BODY, timeout=10)
            assert info.value.status == 503 and "CERTIFICATE_VERIFY_FAILED" in info.value.message
        finally:
            await untrusting.close()
        assert seen == []

        monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # the operator's trust store names the vendor's CA
        trusting = LlmHttp(retries=0, backoff_cap=0)
        try:
            for _ in range(2):
                data = await trusting.request_json("POST", url, headers={}, body=BODY, timeout=10)
                assert data["echo"] == BODY
        finally:
            await trusting.close()
        assert len(seen) == 2 and len(set(seen)) == 1
    finally:
        await runner.cleanup()
