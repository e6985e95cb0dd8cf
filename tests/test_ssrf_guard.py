"""The SSRF guard, table-driven, in production mode: what a user pointing the platform at an internal address sees."""

from __future__ import annotations

from typing import AsyncIterator, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import free_port

from gofannon import net
from gofannon.errors import GatewayTimeout, UpstreamError
from gofannon.kernel import Kernel
from gofannon.settings import Settings


class Target:
    """A real HTTP server on 127.0.0.1 that counts the requests that reached it."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.redirect_to = "http://10.0.0.1/"
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.server = TestServer(app, host="127.0.0.1", port=free_port())

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(request.path)
        if request.path == "/redirect":
            raise web.HTTPFound(self.redirect_to)
        if request.path == "/hop":
            raise web.HTTPFound("/ok")
        if request.path == "/big":
            return web.Response(body=b"x" * 5000)
        if request.path == "/missing":
            return web.Response(status=404, text="nope")
        return web.Response(text="hello from inside")

    @property
    def port(self) -> int:
        return int(self.server.port or 0)


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    t = Target()
    await t.server.start_server()
    yield t
    await t.server.close()


@pytest.fixture
async def kernel_for(make_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., Kernel]]:
    made: list[Kernel] = []

    def make(**env: str) -> Kernel:
        k = Kernel(make_settings(**env))
        made.append(k)
        return k

    yield make
    for k in made:
        await k.close()


# URL templates ({port} = the local target's port, so a leak would be counted as a hit).
REFUSED = [
    ("loopback", "http://127.0.0.1:{port}/"),
    ("loopback by name", "http://localhost:{port}/"),
    ("loopback IPv6", "http://[::1]:{port}/"),
    ("other loopback", "http://127.0.0.2:{port}/"),
    ("private 10/8", "http://10.0.0.5/"),
    ("private 172.16/12", "http://172.16.3.4/"),
    ("private 192.168/16", "http://192.168.1.1/"),
    ("link-local", "http://169.254.10.10/"),
    ("cloud metadata", "http://169.254.169.254/latest/meta-data/"),
    ("cloud metadata IPv6", "http://[fd00:ec2::254]/"),
    ("carrier-grade NAT", "http://100.64.0.1/"),
    ("unspecified", "http://0.0.0.0:{port}/"),
    ("unspecified IPv6", "http://[::]:{port}/"),
    ("multicast", "http://224.0.0.1/"),
    ("IPv6 unique local", "http://[fc00::1]/"),
    ("IPv6 link-local", "http://[fe80::1]/"),
    ("IPv4-mapped IPv6", "http://[::ffff:127.0.0.1]:{port}/"),
    ("IPv4-mapped IPv6, hex form", "http://[::ffff:7f00:1]:{port}/"),
    ("IPv4-compatible IPv6", "http://[::127.0.0.1]:{port}/"),
    ("6to4 embedding loopback", "http://[2002:7f00:1::1]/"),
    ("NAT64 embedding private", "http://[64:ff9b::a00:1]/"),
    ("decimal IPv4", "http://2130706433:{port}/"),
    ("octal IPv4", "http://0177.0.0.1:{port}/"),
    ("hex IPv4", "http://0x7f.1:{port}/"),
    ("short IPv4", "http://127.1:{port}/"),
    ("file scheme", "file:///etc/passwd"),
    ("ftp scheme", "ftp://example.com/x"),
    ("gopher scheme", "gopher://127.0.0.1:{port}/"),
    ("credentials in the authority", "http://user:pw@127.0.0.1:{port}/"),
]


@pytest.mark.parametrize("case,template", REFUSED, ids=[c for c, _ in REFUSED])
async def test_production_refuses_internal_addresses_before_connecting(
    case: str, template: str, target: Target, kernel_for: Callable[..., Kernel]
) -> None:
    kernel = kernel_for(APP_ENV="production")
    url = template.format(port=target.port)
    with pytest.raises(net.OutboundRefused) as info:
        await net.fetch(kernel, "GET", url)
    assert info.value.status == 400
    assert "refused" in info.value.detail
    assert target.hits == []


async def test_redirect_to_a_private_address_is_refused(target: Target, kernel_for: Callable[..., Kernel]) -> None:
    kernel = kernel_for(APP_ENV="production", GOFANNON_OUTBOUND_ALLOW="127.0.0.1")
    for hop in ("http://10.0.0.1/", "http://169.254.169.254/", "http://127.0.0.2:{port}/", "http://2130706433/"):
        target.hits.clear()
        target.redirect_to = hop.format(port=target.port)
        with pytest.raises(net.OutboundRefused) as info:
            await net.fetch(kernel, "GET", f"http://127.0.0.1:{target.port}/redirect")
        assert "refused" in info.value.detail
        assert target.hits == ["/redirect"]


async def test_allow_listed_address_is_reached(target: Target, kernel_for: Callable[..., Kernel]) -> None:
    kernel = kernel_for(APP_ENV="production", GOFANNON_OUTBOUND_ALLOW="127.0.0.0/8")
    resp = await net.fetch(kernel, "GET", f"http://127.0.0.1:{target.port}/hop")
    assert resp.status == 200 and resp.text() == "hello from inside"
    assert resp.url.endswith("/ok")
    missing = await net.fetch(kernel, "GET", f"http://127.0.0.1:{target.port}/missing")
    assert missing.status == 404 and missing.text() == "nope"


async def test_allow_listed_host_name_is_reached(target: Target, kernel_for: Callable[..., Kernel]) -> None:
    kernel = kernel_for(APP_ENV="production", GOFANNON_OUTBOUND_ALLOW="localhost")
    resp = await net.fetch(kernel, "GET", f"http://localhost:{target.port}/")
    assert resp.text() == "hello from inside"


async def test_dev_mode_admits_loopback_by_default(target: Target, kernel_for: Callable[..., Kernel]) -> None:
    kernel = kernel_for(APP_ENV="test")
    resp = await net.fetch(kernel, "GET", f"http://127.0.0.1:{target.port}/")
    assert resp.ok
    with pytest.raises(net.OutboundRefused):
        await net.fetch(kernel, "GET", "http://169.254.169.254/")


async def test_allow_none_refuses_loopback_even_in_dev(target: Target, kernel_for: Callable[..., Kernel]) -> None:
    kernel = kernel_for(APP_ENV="test", GOFANNON_OUTBOUND_ALLOW="none")
    with pytest.raises(net.OutboundRefused):
        await net.fetch(kernel, "GET", f"http://127.0.0.1:{target.port}/")
    assert target.hits == []


async def test_oversized_response_is_a_bad_gateway(target: Target, kernel_for: Callable[..., Kernel]) -> None:
    kernel = kernel_for(APP_ENV="test", GOFANNON_OUTBOUND_MAX_BYTES="1000")
    with pytest.raises(UpstreamError) as info:
        await net.fetch(kernel, "GET", f"http://127.0.0.1:{target.port}/big")
    assert info.value.status == 502 and "1000 bytes" in info.value.detail
    small = await net.fetch(kernel, "GET", f"http://127.0.0.1:{target.port}/big", max_bytes=10000)
    assert len(small.body) == 5000


async def test_unreachable_server_is_a_bad_gateway(kernel_for: Callable[..., Kernel]) -> None:
    kernel = kernel_for(APP_ENV="test")
    with pytest.raises(UpstreamError) as info:
        await net.fetch(kernel, "GET", f"http://127.0.0.1:{free_port()}/")
    assert info.value.status == 502 and "Could not connect" in info.value.detail


async def test_slow_server_times_out_as_gateway_timeout(kernel_for: Callable[..., Kernel]) -> None:
    import asyncio

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/", slow)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    try:
        kernel = kernel_for(APP_ENV="test")
        with pytest.raises(GatewayTimeout):
            await net.fetch(kernel, "GET", f"http://127.0.0.1:{server.port}/", timeout=0.2)
    finally:
        await server.close()


@pytest.mark.parametrize("flavour", ["httpx", "httpx2"])
async def test_httpx_client_for_libraries_goes_through_the_guard(
    flavour: str, target: Target, kernel_for: Callable[..., Kernel]
) -> None:
    prod = kernel_for(APP_ENV="production")
    async with net.guarded_httpx_client(prod, flavour) as client:
        for url in (f"http://127.0.0.1:{target.port}/", f"http://localhost:{target.port}/",
                    f"http://[::ffff:127.0.0.1]:{target.port}/", f"http://2130706433:{target.port}/"):
            with pytest.raises(net.OutboundRefused):
                await client.get(url)
    assert target.hits == []
    allowed = kernel_for(APP_ENV="production", GOFANNON_OUTBOUND_ALLOW="127.0.0.1")
    async with net.guarded_httpx_client(allowed, flavour) as client:
        resp = await client.get(f"http://127.0.0.1:{target.port}/hop")
        assert resp.status_code == 200 and resp.text == "hello from inside"
        target.redirect_to = "http://10.0.0.1/"
        with pytest.raises(net.OutboundRefused):
            await client.get(f"http://127.0.0.1:{target.port}/redirect")


def test_address_classification_covers_embedded_ipv4() -> None:
    import ipaddress

    public = ["8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1"]
    for addr in public:
        assert net.address_refusal(ipaddress.ip_address(addr)) is None, addr
    teredo_to_private = ipaddress.ip_address("2001:0:4136:e378:8000:63bf:f5ff:fffe")  # client 10.0.0.1
    assert net.address_refusal(teredo_to_private) is not None
