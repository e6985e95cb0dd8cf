"""HTTP for provider plugins: pooled keep-alive connections, retries with backoff on 429/5xx, timeouts, SSE.

Requests go through ``gofannon.llm.conn`` (aiohttp's parser and stream reader under a lean client). Vendor
base URLs are operator configuration (never user input), so this does not go through the
outbound SSRF guard of ``gofannon.net``; plugins must not take URLs from requests.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, AsyncIterator

from aiohttp import ClientPayloadError

from gofannon import __version__
from gofannon.jsontext import encoder
from gofannon.llm import VendorError
from gofannon.llm.conn import BadHeader, BadUrl, ConnectError, Unreachable, VendorClient, VendorResponse

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel

#: Request bodies: compact, non-ASCII escaped (so a lone surrogate from a caller's JSON cannot fail the encoding).
_encode_json = encoder(ensure_ascii=True)
#: When (``time.monotonic()``) the ``call_llm`` this request serves times out: a request whose own timeout would
#: end no sooner is already bounded by it, and sets no timer of its own (a timer is a fast call's largest cost).
CALL_DEADLINE: ContextVar[float] = ContextVar("gofannon_llm_call_deadline", default=math.inf)
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
#: What may be left unread of a finished stream and still be read so its connection is reused.
DRAIN_LIMIT = 64 * 1024
DRAIN_TIMEOUT_S = 2.0
#: A provider no connection can be made to (nothing listens there, the name does not resolve) is tried once more
#: after this pause, not ``retries`` times with backoff: that is for a provider that answers "busy" (429/5xx).
UNREACHABLE_RETRY_S = 0.25


def _message_of(status: int, text: str) -> tuple[str, str | None]:
    """The vendor's error message and code out of whatever error body it sent."""
    try:
        body = json.loads(text)
    except ValueError:
        return (text.strip()[:500] or f"HTTP {status}"), None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        code = err.get("code") or err.get("type") or err.get("status")
        return str(err.get("message") or text[:500]), (str(code) if code is not None else None)
    if isinstance(err, str):
        return err, None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"]), None
    return text[:500], None


class LlmHttp:
    """The kernel's HTTP client for LLM vendors (a kernel component)."""

    def __init__(self, *, retries: int, backoff_cap: float) -> None:
        self.retries = max(0, retries)
        self.backoff_cap = max(0.0, backoff_cap)
        self._client: VendorClient | None = None
        self._finishing: set[asyncio.Future[None]] = set()

    @property
    def client(self) -> VendorClient:
        if self._client is None or self._client.closed:
            self._client = VendorClient(limit_per_origin=128, user_agent=f"gofannon/{__version__}")
        return self._client

    async def close(self) -> None:
        for task in list(self._finishing):
            task.cancel()
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _finish_later(self, resp: VendorResponse) -> None:
        """Read what is left of a response the caller finished with (a stream's closing bytes after its
        ``[DONE]``) without holding the caller up, so its connection goes back to the pool instead of being
        closed and the next call skips a TCP (and TLS) handshake. Bounded: more than ``DRAIN_LIMIT`` bytes or
        ``DRAIN_TIMEOUT_S`` and the connection is closed instead."""
        async def finish() -> None:
            try:
                async with asyncio.timeout(DRAIN_TIMEOUT_S):
                    left = DRAIN_LIMIT
                    while left > 0 and not resp.content.at_eof():
                        left -= len(await resp.content.read(left))
                if resp.content.at_eof():
                    resp.release()
                    return
            except (Exception, asyncio.CancelledError):  # noqa: BLE001 - any trouble: just close it
                pass
            resp.close()

        task = asyncio.ensure_future(finish())
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    def backoff(self, attempt: int, retry_after: str | None) -> float:
        """The reference's schedule: ``min(cap, 2^n + U(0, n+1))``, or the vendor's Retry-After if shorter."""
        wait = min(self.backoff_cap, 2 ** attempt + random.uniform(0, attempt + 1))
        if retry_after:
            try:
                wait = min(self.backoff_cap, max(0.0, float(retry_after)))
            except ValueError:
                pass
        return wait

    async def request_json(self, method: str, url: str, *, headers: dict[str, str], body: Any = None,
                           timeout: float, params: dict[str, str] | None = None) -> Any:
        """Send, retrying 429/5xx and connection failures; the decoded JSON answer or ``VendorError``. ``timeout``
        bounds the whole call, retries and the reading of the body included (``TimeoutError``); inside
        ``call_llm``, whose own deadline comes first, no second timer is set."""
        data, headers = _payload(body, headers)
        if CALL_DEADLINE.get() <= time.monotonic() + timeout:
            raw = await self._read(method, url, headers, data, params, timeout)
        else:
            async with asyncio.timeout(timeout):
                raw = await self._read(method, url, headers, data, params, timeout)
        try:
            return json.loads(raw)  # JSON is UTF-8 (json.loads also reads UTF-16/32)
        except ValueError:
            text = raw[:200].decode("utf-8", errors="replace")
            raise VendorError(502, f"the provider answered something that is not JSON: {text!r}") from None

    async def _read(self, method: str, url: str, headers: dict[str, str], data: bytes | None,
                    params: dict[str, str] | None, timeout: float) -> bytes:
        resp = await self._respond(method, url, headers, data, params, timeout)
        try:
            raw = await resp.read()
        except (ClientPayloadError, ConnectError) as exc:
            resp.close()
            raise VendorError(502, f"the provider's answer was cut off: {exc}") from None
        except BaseException:
            resp.close()
            raise
        if resp.closed or resp.content.at_eof():
            resp.release()
        else:  # pragma: no cover - read() reads to the end
            self._finish_later(resp)
        return raw

    @asynccontextmanager
    async def open(self, method: str, url: str, *, headers: dict[str, str], body: Any = None, timeout: float,
                   params: dict[str, str] | None = None) -> AsyncIterator[VendorResponse]:
        """A successful (2xx) response, after retries; the caller reads it (JSON or a stream). ``timeout``
        bounds the whole call, retries and the reading of the body included (``TimeoutError``)."""
        data, headers = _payload(body, headers)
        async with asyncio.timeout(timeout):
            resp = await self._respond(method, url, headers, data, params, timeout)
            try:
                yield resp
            except BaseException:
                resp.close()  # stopped early (the caller went away, an error): drop the vendor's connection
                raise
            if resp.closed or resp.content.at_eof():
                resp.release()
            else:  # the reader stopped at the stream's end marker; the body's last bytes are still due
                self._finish_later(resp)

    async def _respond(self, method: str, url: str, headers: dict[str, str], data: bytes | None,
                       params: dict[str, str] | None, timeout: float) -> VendorResponse:
        """The first successful (2xx) response, its body not read yet; retries 429/5xx and connection failures
        (``retries`` times, with backoff); ``VendorError`` otherwise."""
        attempt = 0
        while True:
            try:
                resp = await self.client.request(method, url, headers=headers, data=data, params=params,
                                                 connect_timeout=min(timeout, 30.0))
            except Unreachable as exc:
                if attempt >= min(1, self.retries):
                    raise VendorError(503, f"could not reach the provider: {exc}", code="unreachable") from None
                await asyncio.sleep(UNREACHABLE_RETRY_S)
                attempt += 1
                continue
            except (OSError, ClientPayloadError) as exc:  # ConnectError is an OSError
                if attempt >= self.retries:
                    if isinstance(exc, ClientPayloadError):
                        raise VendorError(502, f"the provider's answer could not be read: {exc}") from None
                    raise VendorError(503, f"could not reach the provider: {exc}") from None
                await asyncio.sleep(self.backoff(attempt, None))
                attempt += 1
                continue
            except BadHeader as exc:  # e.g. a line break in a caller's stored key: theirs to fix
                raise VendorError(400, f"the request to the provider is malformed: {exc}") from None
            except BadUrl as exc:  # the operator's configuration: not the caller's to fix
                raise VendorError(502, f"the provider is misconfigured: {exc}") from None
            if resp.status < 400:
                return resp
            try:
                text = await resp.text()
            except (OSError, ClientPayloadError):
                text = ""
            if resp.status in RETRY_STATUSES and attempt < self.retries and "insufficient_quota" not in text:
                await asyncio.sleep(self.backoff(attempt, resp.headers.get("Retry-After")))
                attempt += 1
                continue
            message, code = _message_of(resp.status, text)
            raise VendorError(resp.status, message, code=code)


def _payload(body: Any, headers: dict[str, str]) -> tuple[bytes | None, dict[str, str]]:
    """A JSON body's bytes, and the headers with its content type (unless the plugin set one)."""
    if body is None:
        return None, headers
    if not any(k.lower() == "content-type" for k in headers):
        headers = {**headers, "Content-Type": "application/json"}
    return _encode_json(body).encode("ascii"), headers


async def sse_events(resp: VendorResponse) -> AsyncIterator[tuple[str | None, str]]:
    """Server-sent events of a response as ``(event name, data)``; comments and keep-alives skipped. Lines end
    with LF or CRLF. Reads whatever bytes have arrived and splits them here (one read per packet, not one per
    line: a vendor sends several events in one packet)."""
    event: str | None = None
    data: list[str] = []
    pending = b""
    content = resp.content
    while True:
        chunk = await content.readany()
        if not chunk:
            lines, pending = ([pending] if pending else []), b""
        else:
            lines = (pending + chunk if pending else chunk).split(b"\n")
            pending = lines.pop()
        for raw in lines:
            line = raw.decode("utf-8", errors="replace")
            if line.endswith("\r"):
                line = line[:-1]
            if not line:
                if data:
                    yield event, "\n".join(data)
                event, data = None, []
                continue
            if line[0] == ":":
                continue
            name, _, value = line.partition(":")
            if value[:1] == " ":
                value = value[1:]
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
        if not chunk:
            break
    if data:
        yield event, "\n".join(data)


def llm_http(kernel: "Kernel") -> LlmHttp:
    """The kernel's one LlmHttp (closed with the kernel)."""
    s = kernel.settings
    return kernel.component("llm.http", lambda: LlmHttp(retries=s.llm_retries, backoff_cap=s.llm_backoff_cap))
