"""Outbound HTTP through one SSRF guard: spec fetches, MCP connections, agents' http_client, provider base URLs.

Users hand us URLs (spec links, MCP servers, provider base URLs, agents' HTTP calls), so every outbound
connection must not reach loopback, private networks or cloud metadata unless the operator allow-lists them
(``GOFANNON_OUTBOUND_ALLOW``). The guard:

* accepts only ``http``/``https`` and refuses odd IPv4 spellings (``2130706433``, ``0177.0.0.1``, ``0x7f.1``,
  ``127.1``) that resolvers silently map onto addresses;
* resolves the host itself and refuses it when ANY resolved address is not public (IPv4-mapped/compatible,
  NAT64, 6to4 and Teredo IPv6 are judged by the IPv4 address they embed);
* connects only to the addresses it checked: the aiohttp session and the httpx transport resolve through the
  guard at connect time, so a DNS answer cannot change between check and connect (no rebinding window);
* follows redirects itself, re-checking every hop (bounded count), ignores proxy environment variables,
  caps the response size and the time.

A refused URL raises ``OutboundRefused`` (400) before any connection is made.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gofannon.errors import BadRequest, GatewayTimeout, UpstreamError

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel
    from gofannon.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_REDIRECTS = 10
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_METADATA = {
    ipaddress.ip_address("169.254.169.254"): "cloud metadata",
    ipaddress.ip_address("fd00:ec2::254"): "cloud metadata",
    ipaddress.ip_address("100.100.100.200"): "cloud metadata",
    ipaddress.ip_address("169.254.170.2"): "cloud metadata",
}
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPAT = ipaddress.ip_network("::/96")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)
_CANONICAL_OCTET = re.compile(r"^(0|[1-9][0-9]{0,2})$")


class OutboundRefused(BadRequest):
    """The SSRF guard refused a URL; answered as 400 with a detail that says so and why."""

    def __init__(self, url: str, reason: str) -> None:
        self.url, self.reason = url, reason
        super().__init__(f"Outbound request to {url} was refused: {reason}")


class OutboundTooLarge(UpstreamError):
    default_detail = "The remote response was too large"


@dataclass
class OutboundResponse:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    url: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()

    def text(self, encoding: str | None = None) -> str:
        if encoding is None:
            match = re.search(r"charset=([\w.-]+)", self.headers.get("Content-Type", ""), re.IGNORECASE)
            encoding = match.group(1) if match else "utf-8"
        try:
            return self.body.decode(encoding, errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        import json

        return json.loads(self.body)


# -- policy --------------------------------------------------------------------------------------------
@dataclass
class OutboundPolicy:
    """What the guard admits beyond public addresses: allow-listed host names and networks."""

    hosts: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> "OutboundPolicy":
        hosts: set[str] = set()
        suffixes: list[str] = []
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            try:
                nets.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if entry.startswith("*."):
                suffixes.append(entry[1:])
            elif entry.startswith("."):
                suffixes.append(entry)
            else:
                hosts.add(entry)
        return cls(frozenset(hosts), tuple(suffixes), tuple(nets))

    @classmethod
    def from_settings(cls, settings: "Settings") -> "OutboundPolicy":
        return cls.from_entries(settings.outbound_allow_list)

    def host_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return host in self.hosts or any(host.endswith(s) for s in self.suffixes)

    def address_allowed(self, ip: IPAddress) -> bool:
        candidates = [ip]
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            candidates.append(embedded)
        return any(c in net for c in candidates for net in self.networks if c.version == net.version)

    def refusal(self, ip: IPAddress) -> str | None:
        """Why ``ip`` may not be reached (None when it may)."""
        if self.address_allowed(ip):
            return None
        return address_refusal(ip)


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo client)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or (ip in _IPV4_COMPAT and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(ip: IPAddress) -> str | None:
    """What kind of non-public address ``ip`` is ("a loopback address", ...), or None when it is public."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            inner = address_refusal(embedded)
            if inner is not None:
                return f"an IPv6 address embedding {embedded}, {inner}"
            if ip.teredo is not None and address_refusal(ip.teredo[0]) is not None:
                return f"a Teredo address relayed through {ip.teredo[0]}, {address_refusal(ip.teredo[0])}"
            return None
    if ip in _METADATA:
        return "a cloud metadata address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "a carrier-grade NAT address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "not a public address"
    return None


# -- URL checks -----------------------------------------------------------------------------------------
def _literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _odd_ipv4(host: str) -> bool:
    """True for numeric host spellings other than a canonical dotted quad (decimal, octal, hex, short)."""
    labels = host.rstrip(".").split(".")
    if not labels or not all(_NUMERIC_LABEL.match(label) for label in labels):
        return False
    canonical = len(labels) == 4 and all(_CANONICAL_OCTET.match(x) and int(x) <= 255 for x in labels)
    return not canonical


def check_url(url: str | URL, policy: OutboundPolicy) -> URL:
    """Parse and statically check a URL (scheme, host spelling, literal addresses); DNS comes later."""
    text = str(url)
    try:
        parsed = url if isinstance(url, URL) else URL(text)
    except (ValueError, TypeError) as exc:
        raise OutboundRefused(text, f"not a valid URL ({exc})") from None
    if parsed.scheme not in ("http", "https"):
        raise OutboundRefused(text, "only http:// and https:// URLs are allowed")
    host = (parsed.host or "").lower()
    if not host:
        raise OutboundRefused(text, "the URL has no host")
    if parsed.user or parsed.password:
        # Credentials in the authority are a classic parser-confusion trick; send them as headers instead.
        raise OutboundRefused(text, "credentials in the URL are not allowed")
    literal = _literal_ip(host)
    if literal is None:
        if _odd_ipv4(host):
            raise OutboundRefused(text, f"{host!r} is not a canonical IPv4 address")
    else:
        reason = policy.refusal(literal)
        if reason is not None:
            raise OutboundRefused(text, f"{literal} is {reason}")
    return parsed


async def resolve_checked(host: str, port: int, policy: OutboundPolicy, *, url: str | None = None,
                          family: int = socket.AF_UNSPEC) -> list[tuple[int, str]]:
    """Resolve ``host`` and check every address; ``[(family, address)]`` when all of them may be reached."""
    host = host.strip("[]")
    label = url or host
    literal = _literal_ip(host)
    if literal is not None:
        reason = policy.refusal(literal)
        if reason is not None:
            raise OutboundRefused(label, f"{literal} is {reason}")
        return [(socket.AF_INET6 if literal.version == 6 else socket.AF_INET, str(literal))]
    if _odd_ipv4(host):
        raise OutboundRefused(label, f"{host!r} is not a canonical IPv4 address")
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UpstreamError(f"Could not resolve host {host!r}: {exc.strerror or exc}") from None
    by_name = policy.host_allowed(host)
    out: list[tuple[int, str]] = []
    for fam, _, _, _, sockaddr in infos:
        address = str(sockaddr[0])
        if not by_name:
            reason = policy.refusal(ipaddress.ip_address(address.split("%", 1)[0]))
            if reason is not None:
                raise OutboundRefused(label, f"{host} resolves to {address}, {reason}")
        if (fam, address) not in out:
            out.append((fam, address))
    if not out:
        raise UpstreamError(f"Could not resolve host {host!r}")
    return out


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that checks every address it returns, so the connector connects only to those."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await resolve_checked(host, port, self.policy, family=family)
        return [
            {"hostname": host, "host": addr, "port": port, "family": fam, "proto": 0,
             "flags": socket.AI_NUMERICHOST}
            for fam, addr in found
        ]

    async def close(self) -> None:
        return None


# -- the aiohttp facility -------------------------------------------------------------------------------
class _Outbound:
    """The kernel's outbound session (one per event loop), closed with the kernel."""

    def __init__(self, settings: "Settings") -> None:
        self.settings = settings
        self.policy = OutboundPolicy.from_settings(settings)
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}

    def session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        sess = self._sessions.get(loop)
        if sess is None or sess.closed:
            connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.policy), use_dns_cache=False,
                                             limit=100, limit_per_host=20)
            # No cookie jar shared between users' requests, no proxies from the environment.
            sess = aiohttp.ClientSession(connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
                                         auto_decompress=True)
            self._sessions[loop] = sess
        return sess

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for owner, sess in list(self._sessions.items()):
            if owner is loop:
                await sess.close()
        self._sessions.clear()


def _outbound(kernel: "Kernel") -> _Outbound:
    return kernel.component("gofannon.net", lambda: _Outbound(kernel.settings))


def policy_of(kernel: "Kernel") -> OutboundPolicy:
    return _outbound(kernel).policy


def check(kernel: "Kernel", url: str) -> URL:
    """Static check of a URL against the kernel's policy (raises ``OutboundRefused``)."""
    return check_url(url, policy_of(kernel))


async def check_resolved(kernel: "Kernel", url: str) -> URL:
    """Full check including DNS: for callers that hand the URL to a library that connects by itself."""
    parsed = check(kernel, url)
    await resolve_checked(parsed.host or "", parsed.port or 0, policy_of(kernel), url=url)
    return parsed


def _redirect_target(resp: aiohttp.ClientResponse, current: URL) -> URL | None:
    location = resp.headers.get("Location")
    if resp.status not in _REDIRECT_STATUSES or not location:
        return None
    try:
        return current.join(URL(location))
    except ValueError:
        raise UpstreamError(f"The remote server sent an invalid redirect location: {location!r}") from None


async def _read_capped(resp: aiohttp.ClientResponse, limit: int, url: str) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise OutboundTooLarge(f"The response from {url} is larger than the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise OutboundTooLarge(f"The response from {url} is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def fetch(kernel: "Kernel", method: str, url: str, *, headers: Mapping[str, str] | None = None,
                body: bytes | str | None = None, timeout: float | None = None, max_bytes: int | None = None,
                follow_redirects: bool = True) -> OutboundResponse:
    """One outbound HTTP request through the guard. HTTP error statuses are returned, not raised.

    Raises ``OutboundRefused`` (400) for a refused URL or redirect hop, ``GatewayTimeout`` (504) on timeout,
    ``UpstreamError`` (502) when the server cannot be reached, redirects too often or answers too much.
    """
    out = _outbound(kernel)
    settings = kernel.settings
    limit = max_bytes if max_bytes is not None else settings.outbound_max_bytes
    client_timeout = aiohttp.ClientTimeout(total=timeout if timeout is not None else settings.outbound_timeout_s)
    send_headers: CIMultiDict[str] = CIMultiDict(headers or {})
    data: bytes | None = body.encode() if isinstance(body, str) else body
    current = check_url(url, out.policy)
    method = method.upper()
    session = out.session()
    try:
        async with asyncio.timeout(client_timeout.total):
            for _hop in range(MAX_REDIRECTS + 1):
                async with session.request(method, current, headers=send_headers, data=data, allow_redirects=False,
                                           timeout=client_timeout, ssl=True) as resp:
                    target = _redirect_target(resp, current) if follow_redirects else None
                    if target is None:
                        payload = await _read_capped(resp, limit, str(current))
                        return OutboundResponse(resp.status, resp.headers, payload, str(resp.url))
                target = check_url(target, out.policy)
                if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                    method, data = ("GET" if method != "HEAD" else "HEAD"), None
                    send_headers.popall("Content-Type", None)
                    send_headers.popall("Content-Length", None)
                if target.origin() != current.origin():
                    send_headers.popall("Authorization", None)
                    send_headers.popall("Cookie", None)
                current = target
            raise UpstreamError(f"Too many redirects (more than {MAX_REDIRECTS}) starting at {url}")
    except TimeoutError:
        raise GatewayTimeout(f"The request to {current} timed out") from None
    except aiohttp.InvalidURL as exc:
        raise OutboundRefused(str(current), f"not a valid URL ({exc})") from None
    except aiohttp.ClientSSLError as exc:
        raise UpstreamError(f"TLS error talking to {current.host}: {exc}") from None
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamError(f"Could not connect to {current.host}:{current.port}: {exc.strerror or exc}") from None
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"The request to {current} failed: {type(exc).__name__}: {exc}") from None


# -- httpx for libraries (agents' http_client, the MCP SDK) ------------------------------------------------
# The MCP SDK uses ``httpx2``/``httpcore2`` (same API as httpx/httpcore under new names); both flavours are
# served by the same guard.
_FLAVOURS = {"httpx": ("httpx", "httpcore"), "httpx2": ("httpx2", "httpcore2")}


def _guarded_backend(policy: OutboundPolicy, core: Any) -> Any:
    class GuardedBackend(core.AsyncNetworkBackend):  # type: ignore[misc, name-defined]
        """Network backend: resolve and check the host, then connect only to a checked address."""

        def __init__(self) -> None:
            self._inner = core.AnyIOBackend()

        async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                              local_address: str | None = None,
                              socket_options: Iterable[Any] | None = None) -> Any:
            addresses = await resolve_checked(host, port, policy)
            last: Exception | None = None
            for _fam, address in addresses:
                try:
                    return await self._inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                         socket_options=socket_options)
                except (core.ConnectError, core.ConnectTimeout) as exc:
                    last = exc
            assert last is not None
            raise last

        async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                      socket_options: Iterable[Any] | None = None) -> Any:
            raise OutboundRefused(f"unix:{path}", "unix sockets are not allowed")

        async def sleep(self, seconds: float) -> None:
            await self._inner.sleep(seconds)

    return GuardedBackend()


def guarded_transport(kernel: "Kernel", flavour: str = "httpx") -> Any:
    """An httpx (or httpx2) transport whose every request and redirect hop goes through the guard."""
    import importlib

    hx, core = (importlib.import_module(m) for m in _FLAVOURS[flavour])
    policy = policy_of(kernel)

    class GuardedTransport(hx.AsyncHTTPTransport):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__(trust_env=False)
            # httpx exposes no network-backend option, so the pool is rebuilt with ours (same defaults).
            self._pool = core.AsyncConnectionPool(
                ssl_context=ssl.create_default_context(), max_connections=100, max_keepalive_connections=20,
                keepalive_expiry=5.0, network_backend=_guarded_backend(policy, core),
            )

        async def handle_async_request(self, request: Any) -> Any:
            check_url(str(request.url), policy)
            return await super().handle_async_request(request)

    return GuardedTransport()


def guarded_httpx_client(kernel: "Kernel", flavour: str = "httpx", **kw: Any) -> Any:
    """An ``AsyncClient`` (httpx or httpx2) through the guard, proxies from the environment off."""
    import importlib

    hx = importlib.import_module(_FLAVOURS[flavour][0])
    kw.setdefault("timeout", hx.Timeout(kernel.settings.outbound_timeout_s))
    kw.setdefault("follow_redirects", True)
    kw.setdefault("max_redirects", MAX_REDIRECTS)
    return hx.AsyncClient(transport=guarded_transport(kernel, flavour), trust_env=False, **kw)
