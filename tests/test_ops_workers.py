"""``gofannon serve --workers 2`` as a real subprocess: requests spread over both processes, a child killed
with SIGKILL is replaced while requests keep succeeding, no charge is lost (SQLite, shared by both), the
metrics of both add up, and SIGTERM drains and stops them all."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import REPO, free_port
from fakes import FakeLLMServer

from gofannon.services import users

CHAT = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


class Workers:
    """A supervised ``gofannon serve --workers N`` and a signed-in user's token."""

    def __init__(self, proc: subprocess.Popen[str], port: int, metrics_port: int, log: Path) -> None:
        self.proc, self.port, self.metrics_port, self.log = proc, port, metrics_port, log
        self.base = f"http://127.0.0.1:{port}"
        self.token = ""
        self.ready_answers = 0  # 200s of /health/ready seen, to check the metrics' sum against

    async def ready_pid(self) -> int | None:
        """The pid of the process that answered /health/ready on a fresh connection (None: it failed)."""
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
                async with s.get(f"{self.base}/health/ready") as r:
                    if r.status != 200:
                        return None
                    self.ready_answers += 1
                    return int((await r.json())["pid"])
        except (aiohttp.ClientError, OSError):
            return None

    async def pids(self, tries: int = 60) -> set[int]:
        found = set()
        for _ in range(tries):
            pid = await self.ready_pid()
            if pid is not None:
                found.add(pid)
        return found

    async def spend(self, session: aiohttp.ClientSession) -> float:
        """spendRemaining once it has settled: /v1 answers leave before their (journaled) charges are stored,
        and a process other than the one that answered may be asked, so it is read until it stops moving for
        longer than a busy user's charges may wait (``BURST_S``)."""
        last = None
        while True:
            async with session.get(f"{self.base}/users/me", headers={"Authorization": f"Bearer {self.token}"}) as r:
                assert r.status == 200, await r.text()
                value = float((await r.json())["usageInfo"]["spendRemaining"])
            if value == last:
                return value
            last = value
            await asyncio.sleep(users.BURST_S + 0.05)

    async def charge(self, session: aiohttp.ClientSession) -> bool:
        """One LLM call through /v1 (billed to the user); False when the request failed."""
        try:
            async with session.post(f"{self.base}/v1/chat/completions", json=CHAT,
                                    headers={"Authorization": f"Bearer {self.token}"}) as r:
                await r.read()
                return r.status == 200
        except (aiohttp.ClientError, OSError):
            return False


async def sign_in(base: str) -> str:
    """The dev_stub login as a browser does it, then a personal API token."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        async with s.get(f"{base}/auth/login/dev_stub?return_to=/", allow_redirects=False) as r:
            picker = r.headers["Location"]
        async with s.get(picker if picker.startswith("http") else base + picker) as r:
            html = await r.text()
        link = next(h.replace("&amp;", "&") for h in re.findall(r'href="([^"]+)"', html) if "code=alice" in h)
        async with s.get(link if link.startswith("http") else base + link, allow_redirects=False) as r:
            assert r.status == 302
        async with s.post(f"{base}/users/me/tokens", json={"name": "load"}) as r:
            assert r.status == 201, await r.text()
            return (await r.json())["token"]  # type: ignore[no-any-return]


@pytest.fixture
async def workers(tmp_path: Path, fake_llm: FakeLLMServer) -> AsyncIterator[Callable[..., Any]]:
    started: list[Workers] = []

    async def start(count: int = 2) -> Workers:
        port, metrics_port = free_port(), free_port()
        env = {**os.environ, **fake_llm.env, "APP_ENV": "test", "GOFANNON_DATA_DIR": str(tmp_path / "data"),
               "GOFANNON_SANDBOX_POOL_SIZE": "0", "GOFANNON_LOG_FORMAT": "json"}
        for name in ("REDIS_URL", "PROMETHEUS_MULTIPROC_DIR", "GOFANNON_WORKERS"):
            env.pop(name, None)
        log = tmp_path / f"serve-{len(started)}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "gofannon", "serve", "--port", str(port), "--workers", str(count),
             "--metrics-port", str(metrics_port)],
            env=env, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True)
        server = Workers(proc, port, metrics_port, log)
        started.append(server)
        deadline = time.monotonic() + 60
        while len(await server.pids(tries=10)) < count:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gofannon serve --workers {count} did not come up:\n{log.read_text()[-3000:]}")
            await asyncio.sleep(0.2)
        server.token = await sign_in(server.base)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(10)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_requests_spread_over_both_workers_and_200_concurrent_charges_lose_nothing(workers: Any) -> None:
    server = await workers(2)
    assert len(await server.pids()) == 2  # fresh connections reach both processes
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=50)) as s:
        before = await server.spend(s)
        assert await server.charge(s)
        unit = before - await server.spend(s)
        assert unit > 0
        results = await asyncio.gather(*(server.charge(s) for _ in range(200)))
        assert all(results)
        charged = (before - unit - await server.spend(s)) / unit
    assert round(charged) == 200 and abs(charged - 200) < 1e-6  # both processes wrote one SQLite file


async def test_a_killed_worker_is_restarted_while_requests_keep_succeeding(workers: Any) -> None:
    server = await workers(2)
    first = await server.pids()
    assert len(first) == 2
    victim = min(first)
    outcomes: list[bool] = []
    stop = asyncio.Event()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=50)) as s:
        before = await server.spend(s)
        assert await server.charge(s)
        unit = before - await server.spend(s)

        async def load() -> None:
            while not stop.is_set():
                outcomes.append(await server.charge(s))

        tasks = [asyncio.ensure_future(load()) for _ in range(8)]
        await asyncio.sleep(1.0)
        os.kill(victim, signal.SIGKILL)
        killed_at = len(outcomes)
        deadline = time.monotonic() + 45
        replaced: set[int] = set()
        while time.monotonic() < deadline:
            replaced = await server.pids(tries=10)
            if len(replaced) == 2 and victim not in replaced:
                break
            await asyncio.sleep(0.2)
        after_restart = len(outcomes)
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*tasks)
        spent = before - unit - await server.spend(s)
    assert len(replaced) == 2 and victim not in replaced, server.log.read_text()[-2000:]
    assert not alive(victim)
    ok, failed = outcomes.count(True), outcomes.count(False)
    assert ok > 50 and outcomes[after_restart:] and all(outcomes[after_restart:])  # all good again
    assert all(outcomes[:killed_at - 8])  # before the kill nothing failed
    # Only requests the killed process held fail: those in flight and those waiting in its socket's accept
    # queue as it closed (a client may lose one of each): a small bound, whatever the load lasted.
    assert failed <= 2 * 8
    charged = round(spent / unit)
    assert ok <= charged <= ok + failed  # every answered charge is stored; none counted twice
    assert "worker 0 started" in server.log.read_text() or "worker 1 started" in server.log.read_text()
    # the killed process's requests in flight are not counted as in flight forever
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{server.metrics_port}/metrics") as r:
            families = {f.name: f for f in text_string_to_metric_families(await r.text())}
    assert families["gofannon_http_requests_in_flight"].samples[0].value == 0


async def test_metrics_of_both_workers_add_up_and_sigterm_stops_them_all(workers: Any) -> None:
    server = await workers(2)
    pids = await server.pids()  # 60 requests to /health/ready, over both processes
    assert len(pids) == 2
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{server.metrics_port}/metrics") as r:
            assert r.status == 200
            text = await r.text()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gofannon_http_requests_total" and sample.labels.get("route") == "/health/ready" \
                    and sample.labels.get("status") == "200":
                total += sample.value
    assert total == server.ready_answers  # every answer of both processes, counted once
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(40) == 0
    for pid in pids:
        assert not alive(pid)
    # GOFANNON_LOG_FORMAT=json: every log line of the supervisor and both workers is one JSON object
    records = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
    assert {r["pid"] for r in records} >= pids
    assert any(r["logger"] == "gofannon.supervisor" and "stopping 2 workers" in r["message"] for r in records)


def test_a_bad_worker_count_or_an_unshareable_store_stops_with_a_clear_message(tmp_path: Path) -> None:
    env = {**os.environ, "APP_ENV": "test", "GOFANNON_DATA_DIR": str(tmp_path / "data"), "GOFANNON_WORKERS": "0"}
    out = subprocess.run([sys.executable, "-m", "gofannon", "serve", "--port", str(free_port())], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "GOFANNON_WORKERS" in out.stderr and "auto" in out.stderr
    env.update(GOFANNON_WORKERS="2", GOFANNON_STORAGE="memory")
    out = subprocess.run([sys.executable, "-m", "gofannon", "serve", "--port", str(free_port())], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "GOFANNON_STORAGE=memory" in out.stderr


async def test_workers_stop_when_the_supervisor_is_killed_outright(workers: Any) -> None:
    server = await workers(2)
    pids = await server.pids()
    assert len(pids) == 2
    server.proc.kill()  # SIGKILL: the supervisor cannot pass anything on
    server.proc.wait(10)
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        await asyncio.sleep(0.2)
    assert not any(alive(pid) for pid in pids)  # no orphan keeps the port


async def test_a_token_revoked_through_one_worker_is_refused_by_every_worker_at_once(workers: Any) -> None:
    """Each process reuses the token documents it has read while the store's shared change stamp of the document
    holds (SQLite: a file both processes map). A revocation answered by one process moves it, so the other, which
    had the token in hand a moment before, refuses it on its very next request."""
    server = await workers(2)
    headers = {"Authorization": f"Bearer {server.token}"}
    token_id = server.token.split("_")[1]
    # Fresh connections are spread over both processes (SO_REUSEPORT): 40 reach each with near certainty.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        for _ in range(40):
            async with s.get(f"{server.base}/users/me", headers=headers) as r:
                assert r.status == 200, await r.text()
        async with s.delete(f"{server.base}/users/me/tokens/{token_id}", headers=headers) as r:
            assert r.status == 204, await r.text()
        refused = []
        for _ in range(40):
            async with s.get(f"{server.base}/users/me", headers=headers) as r:
                refused.append(r.status)
    assert refused == [401] * 40
