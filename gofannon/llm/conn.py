"""Keep-alive HTTP/1.1 connections to LLM vendors, on aiohttp's parser.

``LlmHttp`` sends every provider call through this client. It is aiohttp's HTTP machinery without its
general-purpose session: the response is parsed by aiohttp's ``HttpResponseParser`` (llhttp, with chunked
transfer and gzip/deflate decoding) into aiohttp's ``StreamReader`` (so ``sse_events`` and plugins read a body
as they read an aiohttp response's ``content``), and a request is one write of bytes built here. What the
session does per request and a vendor call does not need — cookie jars, redirects, proxies, tracing, URL
objects, per-request timer objects — is not done, which makes a call about four times cheaper in CPU.

What it does do: one pool of idle connections per origin (``limit_per_origin`` in use at once, further calls
wait), TLS with the system's trust store (SNI, ALPN ``http/1.1``), a connect timeout, header values checked
for line breaks (a stored API key cannot inject a header), and one immediate retry on a fresh connection when
a pooled one turns out to have been closed by the vendor before it answered anything.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import ClientPayloadError
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import HttpResponseParser

#: The read buffer of a response (aiohttp's default): reading pauses at twice this much unread.
READ_BUFSIZE = 2 ** 16
#: Idle connections kept per origin, and for how long: a connection idle longer is closed rather than reused
#: (a NAT or load balancer on the way may have forgotten it without a word; aiohttp's client keeps 15 s too).
IDLE_MAX = 64
IDLE_S = 15.0
_FORBIDDEN = frozenset("\r\n\0")
_NAME_FORBIDDEN = frozenset("\r\n\0: \t")
#: Statuses whose responses never have a body (a payload is not awaited for them).
_NO_BODY = frozenset({204, 304})


class ConnectError(ConnectionError):
    """The vendor could not be reached, or closed the connection before answering."""


class Unreachable(ConnectError):
    """No connection could be made at all (refused, no route, a name that does not resolve, connect timeout)."""


class BadUrl(ValueError):
    """A provider URL the client cannot send to (the operator's configuration)."""


class BadHeader(ValueError):
    """A header that cannot go on the wire as it is (a line break in a stored key, say)."""


class _Conn(BaseProtocol):
    """One connection: a parser, the response being awaited, and whether it may be reused."""

    __slots__ = ("origin", "parser", "waiter", "payload", "should_close", "answered", "idle_since")

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: "_Origin") -> None:
        super().__init__(loop)
        self.origin = origin
        self.parser = HttpResponseParser(self, loop, READ_BUFSIZE, payload_exception=ClientPayloadError,
                                         response_with_body=True, read_until_eof=True, auto_decompress=True)
        self._parser = self.parser  # BaseProtocol pauses it when the reader falls behind
        self.waiter: asyncio.Future[Any] | None = None
        self.payload: Any = None
        self.should_close = False
        self.answered = False  # any byte of a response arrived on this connection
        self.idle_since: float | None = None  # set while it waits in the pool

    def data_received(self, data: bytes) -> None:
        if self.idle_since is not None:  # bytes nobody asked for: this connection cannot be trusted with a request
            if data:
                self.close()
            return
        self.answered = True
        try:
            messages, _upgraded, _tail = self.parser.feed_data(data)
        except Exception as exc:  # noqa: BLE001 - a malformed response: this connection is done
            self.should_close = True
            if self.transport is not None:
                self.transport.close()
            self._fail(ClientPayloadError(f"the provider's response could not be parsed: {exc}"))
            return
        for message, payload in messages:
            if 100 <= message.code < 200:  # informational (103 Early Hints, a stray 100): the answer follows
                continue
            if message.should_close:
                self.should_close = True
            self.payload = payload
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result((message, payload))

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self.should_close = True
        try:
            self.parser.feed_eof()  # ends a body read until the connection closes; fails a cut-off one
        except Exception as cut:  # noqa: BLE001
            if self.payload is not None and not self.payload.is_eof():
                self.payload.set_exception(ClientPayloadError(f"the provider's response was cut off: {cut!r}"))
        self._fail(ConnectError(f"the provider closed the connection: {exc}" if exc else
                                "the provider closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        payload = self.payload
        if payload is not None and not payload.is_eof() and payload.exception() is None:
            payload.set_exception(exc)

    @property
    def reusable(self) -> bool:
        return (not self.should_close and not self._reading_paused and self.transport is not None
                and not self.transport.is_closing())

    def close(self) -> None:
        self.should_close = True
        if self.transport is not None:
            self.transport.close()


class VendorResponse:
    """A vendor's answer: ``status``, ``reason``, ``headers`` (case-insensitive), ``content`` (aiohttp's
    ``StreamReader``: ``read``, ``readline``, ``async for line in ...``, ``at_eof``), and ``read``/``text``/
    ``release``/``close`` as on an aiohttp response. ``read`` gives the connection back to the pool."""

    __slots__ = ("status", "reason", "headers", "content", "_conn")

    def __init__(self, conn: _Conn, message: Any, payload: Any) -> None:
        self.status: int = message.code
        self.reason: str = message.reason
        self.headers = message.headers
        self.content = payload
        self._conn: _Conn | None = conn

    async def read(self) -> bytes:
        if self.status in _NO_BODY:
            self.release()
            return b""
        try:
            body = await self.content.read()
        except BaseException:
            self.close()
            raise
        self.release()
        return body

    async def text(self, encoding: str = "utf-8", errors: str = "replace") -> str:
        return (await self.read()).decode(encoding, errors)

    def release(self) -> None:
        """Done with it: a fully read response gives its connection back to the pool, any other closes it."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if (self.status in _NO_BODY or self.content.is_eof()) and conn.reusable:
            conn.origin.put_back(conn)
        else:
            conn.close()
            conn.origin.done(conn)

    def close(self) -> None:
        """Hang up on the vendor (a stream the caller stopped reading)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            conn.origin.done(conn)

    @property
    def closed(self) -> bool:
        return self._conn is None


class _Origin:
    """The connections to one ``scheme://host:port``."""

    __slots__ = ("client", "host", "port", "ssl", "idle", "slots")

    def __init__(self, client: "VendorClient", host: str, port: int, tls: bool, limit: int) -> None:
        self.client = client
        self.host = host
        self.port = port
        self.ssl = tls
        self.idle: list[_Conn] = []
        self.slots = asyncio.Semaphore(limit)

    async def checkout(self, connect_timeout: float) -> tuple[_Conn, bool]:
        """A connection to send on (reused when one is idle), and whether it was reused."""
        await self.slots.acquire()
        try:
            loop = asyncio.get_running_loop()
            while self.idle:
                conn = self.idle.pop()
                if conn.reusable and loop.time() - (conn.idle_since or 0.0) < IDLE_S:
                    conn.idle_since = None
                    return conn, True
                conn.close()
            ctx = self.client.ssl_context() if self.ssl else None
            async with asyncio.timeout(connect_timeout):
                _transport, conn = await loop.create_connection(
                    lambda: _Conn(loop, self), self.host, self.port, ssl=ctx,
                    server_hostname=self.host if ctx is not None else None)
            return conn, False
        except BaseException:
            self.slots.release()
            raise

    def put_back(self, conn: _Conn) -> None:
        conn.payload = None
        conn.answered = False
        now = conn._loop.time()
        idle = self.idle
        while idle and now - (idle[0].idle_since or 0.0) >= IDLE_S:  # the longest idle first: let them go
            idle.pop(0).close()
        if len(idle) < IDLE_MAX and not self.client.closed:
            conn.idle_since = now
            idle.append(conn)
        else:
            conn.close()
        self.slots.release()

    def done(self, conn: _Conn) -> None:
        self.slots.release()

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


class _Target:
    """What a URL string means to the client (parsed once per distinct URL)."""

    __slots__ = ("origin_key", "host_header", "path", "tls", "host", "port")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadUrl("the provider's base URL is not an http(s) URL")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.origin_key = (self.tls, self.host, self.port)
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        self.host_header = host if self.port == default else f"{host}:{self.port}"
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if _FORBIDDEN & set(self.path) or " " in self.path:
            raise BadUrl("the provider's URL has characters a request line cannot carry")


def _check_header(name: str, value: str) -> None:
    if not name or _NAME_FORBIDDEN & set(name) or _FORBIDDEN & set(value):
        raise BadHeader(f"the header {name!r} has a character HTTP does not allow in it (a line break?)")


class VendorClient:
    """Pools of keep-alive connections, one per origin."""

    def __init__(self, *, limit_per_origin: int = 128, user_agent: str = "gofannon") -> None:
        self.limit = limit_per_origin
        self.user_agent = user_agent
        self.closed = False
        self._origins: dict[tuple[bool, str, int], _Origin] = {}
        self._targets: dict[str, _Target] = {}
        self._ssl: ssl.SSLContext | None = None
        self._headers: dict[tuple[tuple[str, str], ...], bytes] = {}

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            ctx = ssl.create_default_context()
            ctx.set_alpn_protocols(["http/1.1"])
            self._ssl = ctx
        return self._ssl

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            target = _Target(url)
            if len(self._targets) > 1024:
                self._targets.clear()
            self._targets[url] = target
        return target

    def _head(self, method: str, target: _Target, path: str, headers: dict[str, str], length: int | None) -> bytes:
        """The request line and headers (the caller's headers encoded once per distinct set)."""
        key = tuple(headers.items())
        block = self._headers.get(key)
        if block is None:
            lines = []
            names = set()
            for name, value in headers.items():
                value = str(value)
                _check_header(name, value)
                names.add(name.lower())
                lines.append(f"{name}: {value}\r\n")
            if "user-agent" not in names:
                lines.append(f"User-Agent: {self.user_agent}\r\n")
            if "accept" not in names:
                lines.append("Accept: */*\r\n")
            if "accept-encoding" not in names:
                lines.append("Accept-Encoding: gzip, deflate\r\n")
            block = "".join(lines).encode("utf-8")
            if len(self._headers) > 1024:
                self._headers.clear()
            self._headers[key] = block
        first = f"{method} {path} HTTP/1.1\r\nHost: {target.host_header}\r\n".encode("utf-8")
        if length is None:
            return first + block + b"\r\n"
        return first + block + b"Content-Length: %d\r\n\r\n" % length

    async def request(self, method: str, url: str, *, headers: dict[str, str], data: bytes | None = None,
                      params: dict[str, str] | None = None, connect_timeout: float = 30.0) -> VendorResponse:
        """Send one request and wait for the response's status and headers (the body is read from it)."""
        if self.closed:
            raise ConnectError("the client is closed")
        target = self._target(url)
        path = target.path
        if params:
            path += ("&" if "?" in path else "?") + urlencode(params)
        head = self._head(method, target, path, headers, len(data) if data is not None else
                          (0 if method in ("POST", "PUT", "PATCH") else None))
        wire = head + data if data else head
        origin = self._origins.get(target.origin_key)
        if origin is None:
            origin = self._origins[target.origin_key] = _Origin(self, target.host, target.port, target.tls,
                                                                self.limit)
        for _ in range(2):
            try:
                conn, reused = await origin.checkout(connect_timeout)
            except OSError as exc:
                raise Unreachable(f"cannot connect to {target.host_header}: {str(exc) or type(exc).__name__}") \
                    from exc
            waiter = conn.waiter = conn._loop.create_future()
            try:
                conn.transport.write(wire)  # type: ignore[union-attr]
                message, payload = await waiter
            except ConnectError:
                conn.close()
                origin.done(conn)
                if reused and not conn.answered:  # the vendor had closed this idle connection: once more, anew
                    continue
                raise
            except BaseException:
                conn.close()
                origin.done(conn)
                raise
            return VendorResponse(conn, message, payload)
        raise ConnectError("the provider closed the connection")  # pragma: no cover - the loop returns or raises

    async def close(self) -> None:
        self.closed = True
        for origin in self._origins.values():
            origin.close()
        self._origins.clear()
