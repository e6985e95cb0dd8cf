"""Readiness: ``GET /health/ready`` answers 200 while the store, the queue, the sandbox pool and the auth
config answer, and 503 naming what failed when Redis or PostgreSQL stops — and 200 again when it returns."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import free_port
from fakes.postgres import start_postgres


class RedisProcess:
    """A dedicated redis-server this test may stop and start again on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed; run the README's test command, which installs it")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        pytest.fail("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def ready(client: Any) -> tuple[int, dict[str, Any]]:
    async with client.get("/health/ready") as r:
        return r.status, await r.json()


async def eventually(client: Any, status: int, timeout: float = 15.0) -> dict[str, Any]:
    """Poll until readiness answers ``status`` (a reconnecting pool may need a moment); returns the body."""
    deadline = time.monotonic() + timeout
    while True:
        got, body = await ready(client)
        if got == status or time.monotonic() > deadline:
            assert got == status, body
            return body
        await asyncio.sleep(0.2)


async def test_ready_reports_every_check_on_the_embedded_default(serve: Any) -> None:
    client = await serve()
    status, body = await ready(client)
    assert status == 200 and body["status"] == "ready"
    assert set(body["checks"]) == {"store", "queue", "sandbox", "auth"}
    assert all(check["ok"] for check in body["checks"].values())
    assert body["checks"]["queue"]["backend"] == "inline" and body["checks"]["store"]["backend"] == "sqlite"
    assert "dev_stub" in body["checks"]["auth"]["loginProviders"]
    async with client.get("/health") as r:  # liveness is unchanged
        assert r.status == 200 and (await r.json())["status"] == "healthy"


async def test_ready_is_503_while_redis_is_down_and_200_when_it_returns(serve: Any, own_redis: RedisProcess) -> None:
    client = await serve(REDIS_URL=own_redis.url)
    body = await eventually(client, 200)
    assert body["checks"]["queue"] == {"ok": True, "backend": "rq"}
    own_redis.stop()
    body = await eventually(client, 503)
    assert body["status"] == "not ready"
    assert body["checks"]["queue"]["ok"] is False and body["checks"]["queue"]["error"]
    assert str(own_redis.port) not in json.dumps(body)  # a public probe names no internal address
    assert body["checks"]["store"]["ok"] is True  # only what failed is blamed
    own_redis.start()
    await eventually(client, 200)


async def test_ready_is_503_while_postgres_is_down_and_200_when_it_returns(serve: Any) -> None:
    server = start_postgres()  # its own cluster: stopping it must not disturb the shared one
    try:
        client = await serve(GOFANNON_STORAGE="postgres", DATABASE_URL=server.create_database())
        await eventually(client, 200)
        server.stop("immediate")
        body = await eventually(client, 503)
        assert body["checks"]["store"]["ok"] is False and body["checks"]["store"]["error"]
        assert body["checks"]["queue"]["ok"] is True
        server.start()
        body = await eventually(client, 200, timeout=30)
        assert body["checks"]["store"] == {"ok": True, "backend": "postgres"}
    finally:
        server.stop("immediate")
        shutil.rmtree(server.datadir.parent, ignore_errors=True)
