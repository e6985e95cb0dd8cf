"""1,000 chat tickets submitted at once over HTTP; all must complete (none lost).

Usage: .venv/bin/python bench/tickets.py [--tickets 1000] [--mode inline|rq|both] [--workers 2]

Starts the real app on 127.0.0.1 (embedded SQLite in a temporary dir) against a fake OpenAI server
(tests/fakes/llm_servers.py), signs in through the dev_stub login, POSTs every ticket concurrently, then
waits until the store holds them all finished. ``rq`` also starts a redis-server and ``--workers``
``gofannon worker`` processes sharing the SQLite file. Prints throughput and p50/p99 submit-to-complete
(the ticket's own ``completed_at - created_at``), and the direct fake-server rate as the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from _common import free_port, login  # noqa: E402
from fakes.llm_servers import FakeLLMServer  # noqa: E402

from gofannon.app import create_app  # noqa: E402
from gofannon.jobs.tickets import TICKETS  # noqa: E402
from gofannon.settings import Settings  # noqa: E402
from gofannon.web.keys import KERNEL  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_redis(workdir: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", workdir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


def start_workers(n: int, env: dict[str, str], workdir: str) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(n):
        log = open(Path(workdir) / f"worker-{i}.log", "wb")
        procs.append(subprocess.Popen([sys.executable, "-m", "gofannon", "worker", "--name", f"bench-{os.getpid()}-{i}"],
                                      env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT))
    for i in range(n):
        path = Path(workdir) / f"worker-{i}.log"
        deadline = time.monotonic() + 60
        while b"ready on queue" not in path.read_bytes():
            if time.monotonic() > deadline or procs[i].poll() is not None:
                raise SystemExit(f"worker {i} did not start:\n{path.read_text()}")
            time.sleep(0.05)
    return procs


async def run(mode: str, n: int, workers: int, fake: FakeLLMServer) -> None:
    tmp = tempfile.mkdtemp(prefix="gofannon-bench-tickets-")
    env = {**fake.env, "APP_ENV": "test", "GOFANNON_DATA_DIR": tmp, "GOFANNON_SANDBOX_POOL_SIZE": "0",
           "GOFANNON_DEFAULT_ALLOWANCE": "1000000", "GOFANNON_LOG_LEVEL": "WARNING"}
    redis_proc, procs = None, []
    if mode == "rq":
        redis_proc, url = start_redis(tmp)
        env.update(REDIS_URL=url, GOFANNON_QUEUE="bench-chat")
    app = create_app(Settings.load(env))
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    try:
        if mode == "rq":
            procs = start_workers(workers, env, tmp)
        base = str(server.make_url("")).rstrip("/")
        conn = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(connector=conn, cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            await login(base, session)
            body = {"messages": [{"role": "user", "content": "hello"}], "provider": "openai", "model": "gpt-4o"}

            async def submit() -> str:
                async with session.post(f"{base}/chat", json=body) as r:
                    assert r.status == 200, await r.text()
                    return (await r.json())["ticket_id"]  # type: ignore[no-any-return]

            t0 = time.perf_counter()
            ids = await asyncio.gather(*(submit() for _ in range(n)))
            submitted = time.perf_counter() - t0
        kernel = app[KERNEL]
        while True:
            finished = (await kernel.store.count(TICKETS, {"status": "completed"})
                        + await kernel.store.count(TICKETS, {"status": "failed"}))
            if finished >= n:
                break
            if time.perf_counter() - t0 > 600:
                raise SystemExit(f"only {finished}/{n} tickets finished after 600 s")
            await asyncio.sleep(0.25)  # counting scans the collection: keep it off the API's loop
        elapsed = time.perf_counter() - t0
        docs = await kernel.store.get_many(TICKETS, ids)
        completed = [d for d in docs.values() if d and d["status"] == "completed"]
        lat = [(datetime.fromisoformat(d["completed_at"]) - datetime.fromisoformat(d["created_at"])).total_seconds() * 1000
               for d in completed]
        label = f"rq x{workers} workers" if mode == "rq" else "in-process"
        print(f"{label:16s} {n} tickets: {len(completed)} completed, {n - len(completed)} not; "
              f"submit {submitted:.2f} s, all done {elapsed:.2f} s -> {n / elapsed:.0f} tickets/s; "
              f"submit-to-complete p50 {statistics.median(lat):.0f} ms p99 {pct(lat, 0.99):.0f} ms")
    finally:
        await server.close()
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(15)
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


async def baseline(fake: FakeLLMServer, n: int) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
        async def one() -> None:
            async with session.post(f"{fake.openai_base_url}/chat/completions", json=body) as r:
                await r.read()

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        elapsed = time.perf_counter() - t0
    print(f"{'baseline':16s} {n} direct calls to the fake server: {n / elapsed:.0f} calls/s")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tickets", type=int, default=1000)
    ap.add_argument("--mode", default="both", choices=["inline", "rq", "both"])
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    async with FakeLLMServer() as fake:
        await baseline(fake, args.tickets)
        for mode in (["inline", "rq"] if args.mode == "both" else [args.mode]):
            await run(mode, args.tickets, args.workers, fake)


if __name__ == "__main__":
    asyncio.run(main())
