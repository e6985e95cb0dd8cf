"""Chat tickets on RQ with real ``gofannon worker`` processes, and tickets whose worker died."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from fakes import FakeLLMServer, Reply
from gofannon.jobs import tickets
from gofannon.kernel import Kernel
from test_chat_tickets import post_chat, wait_ticket


class Workers:
    """Real worker processes sharing the API's Redis queue and SQLite store."""

    def __init__(self, env: dict[str, str], tmp_path: Path) -> None:
        self.env, self.tmp_path = env, tmp_path
        self.procs: list[tuple[subprocess.Popen[str], Path, Any]] = []

    def start(self) -> subprocess.Popen[str]:
        log_path = self.tmp_path / f"worker-{len(self.procs)}.log"
        log_file = log_path.open("w")
        proc = subprocess.Popen([sys.executable, "-m", "gofannon", "worker", "--name", f"chat-{os.getpid()}-{time.monotonic_ns()}"],
                                env={**os.environ, **self.env}, stdout=log_file, stderr=subprocess.STDOUT, text=True)
        self.procs.append((proc, log_path, log_file))
        deadline = time.monotonic() + 60
        while "ready on queue" not in log_path.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        return proc

    def stop_all(self) -> None:
        for proc, _path, log_file in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log_file.close()


@pytest.fixture
def rq_env(redis_url: str, tmp_path: Path, fake_llm: FakeLLMServer) -> dict[str, str]:
    return {**fake_llm.env, "APP_ENV": "test", "REDIS_URL": redis_url, "GOFANNON_QUEUE": f"chat-{os.getpid()}",
            "GOFANNON_DATA_DIR": str(tmp_path / "shared"), "GOFANNON_SANDBOX_POOL_SIZE": "1",
            "GOFANNON_TICKET_LEASE_S": "1.5", "GOFANNON_TICKET_SWEEP_S": "0.2"}


@pytest.fixture
def workers(rq_env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    w = Workers(rq_env, tmp_path)
    try:
        yield w
    finally:
        w.stop_all()


async def test_with_redis_a_worker_process_answers_the_chat(serve: Any, rq_env: dict[str, str], workers: Workers,
                                                           fake_llm: FakeLLMServer) -> None:
    workers.start()
    client = await serve(**rq_env)
    await client.login("alice")
    fake_llm.script(Reply("from the worker"))
    done = await wait_ticket(client, (await post_chat(client))["ticket_id"], attempts=1500)
    assert done["status"] == "completed", done
    assert done["result"]["content"] == "from the worker"


async def test_a_worker_killed_mid_ticket_leaves_the_ticket_failed_not_processing(
        serve: Any, rq_env: dict[str, str], workers: Workers, fake_llm: FakeLLMServer) -> None:
    proc = workers.start()
    client = await serve(**rq_env)
    await client.login("alice")
    fake_llm.script(Reply("never delivered", delay=60))
    ticket = (await post_chat(client))["ticket_id"]
    for _ in range(1500):  # until the worker has claimed the ticket and is waiting on the model
        async with client.get(f"/chat/{ticket}") as r:
            status = (await r.json())["status"]
        if status == "processing" and fake_llm.requests:
            break
        await asyncio.sleep(0.02)
    assert status == "processing"
    proc.kill()
    proc.wait()
    done = await wait_ticket(client, ticket, attempts=1500)
    assert done["status"] == "failed"
    assert "worker processing this chat stopped" in done["error"]


async def test_expired_tickets_are_deleted_and_unclaimed_ones_fail(make_settings: Callable[..., Any]) -> None:
    kernel = Kernel(make_settings(GOFANNON_STORAGE="memory", GOFANNON_TICKET_RETENTION_HOURS="1",
                                  GOFANNON_TICKET_PENDING_S="60", GOFANNON_TICKET_SWEEP_S="3600"))
    await kernel.open()
    try:
        long_ago = "2020-01-01T00:00:00.000000"
        await kernel.store.put(tickets.TICKETS, "old", {"status": "completed", "created_at": long_ago, "ownerId": "a"})
        two_minutes_ago = tickets._ago(120)
        await kernel.store.put(tickets.TICKETS, "stuck", {"status": "pending", "created_at": two_minutes_ago,
                                                          "ownerId": "a"})
        counts = await tickets.sweep(kernel)
        assert counts == {"abandoned": 0, "unclaimed": 1, "expired": 1}
        assert await kernel.store.get(tickets.TICKETS, "old") is None
        stuck = await kernel.store.get(tickets.TICKETS, "stuck")
        assert stuck["status"] == "failed" and "No worker picked up" in stuck["error"]
    finally:
        await kernel.close()


async def test_a_slow_model_call_outliving_the_lease_still_completes(serve: Any, fake_llm: FakeLLMServer) -> None:
    """The running job renews its heartbeat, so the sweeper leaves a long call alone."""
    client = await serve(**fake_llm.env, GOFANNON_TICKET_LEASE_S="0.6", GOFANNON_TICKET_SWEEP_S="0.1")
    await client.login("alice")
    fake_llm.script(Reply("worth the wait", delay=2.0))
    done = await wait_ticket(client, (await post_chat(client))["ticket_id"], attempts=1500)
    assert done["status"] == "completed", done
    assert done["result"]["content"] == "worth the wait"
