"""Shared fixtures: a real Redis server, the real app on a real loopback port, dev login helpers."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gofannon.app import create_app
from gofannon.settings import Settings

REPO = Path(__file__).resolve().parent.parent

#: Fake external services (tests/fakes/): ``fake_openai`` / ``fake_llm`` fake LLM vendor servers;
#: ``postgres_server`` / ``postgres_url`` a real PostgreSQL (fresh database per test);
#: ``mcp_server`` a real MCP server (official SDK; streamable HTTP and SSE, bearer-protected copies).
pytest_plugins = ["fakes", "fakes.postgres", "fakes.mcp_server"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def event_loop_policy() -> Any:
    """The tests' event loop: uvloop's, as ``gofannon serve`` runs on by default (``GOFANNON_EVENT_LOOP``);
    ``GOFANNON_TEST_LOOP=asyncio`` runs them on asyncio's own, the other loop the kernel supports."""
    import asyncio

    if os.environ.get("GOFANNON_TEST_LOOP", "uvloop") == "asyncio":
        return asyncio.DefaultEventLoopPolicy()
    import uvloop

    return uvloop.EventLoopPolicy()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port, for the whole session. Yields its URL."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed; run the README's test command, which installs it")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not start")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """A clean Redis database for one test."""
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    return redis_server


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for a test: APP_ENV=test, a private data dir, env overrides as keyword strings."""

    def make(**env: str) -> Settings:
        base = {
            "APP_ENV": "test",
            "GOFANNON_DATA_DIR": str(tmp_path / "data"),
            "GOFANNON_SANDBOX_POOL_SIZE": "1",
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/root"),
        }
        base.update(env)
        return Settings.load(base)

    return make


class Client:
    """A real HTTP client against a real server on 127.0.0.1, with a cookie jar like a browser's."""

    def __init__(self, server: TestServer, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    def request(self, method: str, path: str, **kw: Any) -> Any:
        kw.setdefault("allow_redirects", False)
        return self.session.request(method, self.url(path), **kw)

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Any:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    async def login(self, uid: str = "alice") -> None:
        """Sign in through the dev_stub flow exactly as a browser does."""
        async with self.get("/auth/login/dev_stub?return_to=/") as r:
            assert r.status == 302, await r.text()
            picker = r.headers["Location"]
        async with self.get(picker) as r:
            assert r.status == 200, await r.text()
            html = await r.text()
        import re

        links = re.findall(r'href="([^"]+)"', html)
        link = next(l for l in links if f"code={uid}&" in l.replace("&amp;", "&") or l.endswith(f"code={uid}"))
        async with self.get(link.replace("&amp;", "&")) as r:
            assert r.status == 302, await r.text()


@contextlib.asynccontextmanager
async def local_site(app: web.Application, path: str = "/") -> AsyncIterator[str]:
    """A small aiohttp app served on a loopback port for the test (a site, a fake service): the URL of ``path``."""
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    try:
        yield str(server.make_url(path))
    finally:
        await server.close()


@pytest.fixture
async def serve(make_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., Any]]:
    """``client = await serve(**env)``: the real app on a loopback port and a client for it."""
    started: list[tuple[TestServer, aiohttp.ClientSession]] = []

    async def start(settings: Settings | None = None, **env: str) -> Client:
        app = create_app(settings or make_settings(**env))
        server = TestServer(app, host="127.0.0.1", port=free_port())
        await server.start_server()
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        started.append((server, session))
        return Client(server, session)

    yield start
    for server, session in reversed(started):
        await session.close()
        await server.close()


@pytest.fixture
async def client(serve: Callable[..., Any]) -> Client:
    return await serve()


@pytest.fixture
def rq_worker(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., dict[str, str]]]:
    """``env = rq_worker(**env)`` starts a real ``gofannon worker`` process on the test Redis and returns
    the env an API process must share with it: ``await serve(**env)`` then runs its jobs in that worker.

    The worker uses the test's data dir (the same SQLite file as ``serve``) unless env says otherwise.
    Its output goes to ``tmp_path/worker-N.log`` (shown when it fails to start).
    """
    procs: list[tuple[subprocess.Popen[str], Any]] = []

    def start(**env: str) -> dict[str, str]:
        full = {
            "APP_ENV": "test", "REDIS_URL": redis_url, "GOFANNON_DATA_DIR": str(tmp_path / "data"),
            "GOFANNON_SANDBOX_POOL_SIZE": "1", **env,
        }
        log_path = tmp_path / f"worker-{len(procs)}.log"
        log_file = log_path.open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "gofannon", "worker", "--name", f"test-{os.getpid()}-{time.monotonic_ns()}"],
            env={**os.environ, **full}, stdout=log_file, stderr=subprocess.STDOUT, text=True,
        )
        procs.append((proc, log_file))
        deadline = time.monotonic() + 60
        while "ready on queue" not in log_path.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gofannon worker did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
        return full

    yield start
    for proc, log_file in reversed(procs):
        proc.terminate()  # RQ's warm shutdown: finishes the current job, then exits
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()
