"""What ``gofannon serve --workers 2`` buys on this machine: ``GET /agents`` (50 agents) and
``POST /rest/{name}`` at 32 connections, one worker against two.

Two servers run side by side (embedded SQLite, fresh data dirs): ``--workers 1`` and ``--workers 2``.
They are loaded alternately with wrk so background noise hits both alike. Targets: ``GET /agents`` with
two workers >= 1.3x one worker (wrk shares the two cores with the servers), and ``POST /rest`` no slower
(>= 1.0x; every run takes a sandbox child, so the cores are mostly the children's). Usage:

    .venv/bin/python bench/workers.py [--seconds 5] [--rounds 3] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, login, stop, wait_up  # noqa: E402
from agents_list import PY, REPO, create_agents, wrk  # noqa: E402
from rest import wrk_post  # noqa: E402

TARGETS = {"GET /agents": 1.3, "POST /rest": 1.0}


async def start(workers: int, agents: int, tmp: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """``gofannon serve --workers N`` with ``agents`` agents, one deployed as ``trivial``; (process, base, cookie)."""
    port = free_port()
    env = {**os.environ, "APP_ENV": "local", "GOFANNON_DATA_DIR": str(tmp / f"w{workers}"),
           "GOFANNON_LOG_LEVEL": "WARNING"}
    for name in ("REDIS_URL", "PROMETHEUS_MULTIPROC_DIR", "GOFANNON_WORKERS"):
        env.pop(name, None)
    proc = subprocess.Popen([PY, "-m", "gofannon", "serve", "--port", str(port), "--workers", str(workers)],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    await wait_up(f"{base}/health", proc)
    await asyncio.sleep(2.0)  # every child up (the first answer may come from the first one ready)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        sid = await login(base, s)
        agent_id = (await create_agents(base, s, agents, first_name="trivial"))[0]
        async with s.post(f"{base}/agents/{agent_id}/deploy") as r:
            assert r.status == 201, await r.text()
    return proc, base, sid


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=50)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="gofannon-bench-"))
    servers: dict[int, tuple[subprocess.Popen[bytes], str, str]] = {}
    try:
        for count in (1, 2):
            servers[count] = await start(count, args.agents, tmp)
        results: dict[tuple[str, int], list[float]] = {}
        for name in TARGETS:
            for count, (_, base, sid) in servers.items():  # warm-up
                if name == "GET /agents":
                    wrk(f"{base}/agents", sid, 1, args.connections)
                else:
                    wrk_post(f"{base}/rest/trivial", sid, 1, args.connections, tmp)
            for i in range(args.rounds):
                for count, (_, base, sid) in servers.items():
                    if name == "GET /agents":
                        rps = wrk(f"{base}/agents", sid, args.seconds, args.connections)
                    else:
                        rps = wrk_post(f"{base}/rest/trivial", sid, args.seconds, args.connections, tmp)
                    results.setdefault((name, count), []).append(rps)
                    print(f"round {i + 1}: {name:<12} --workers {count}: {rps:8.0f} req/s", flush=True)
        print(f"wrk, {args.connections} connections, {args.seconds} s x {args.rounds} rounds, {os.cpu_count()} cores")
        ok = True
        for name, target in TARGETS.items():
            one, two = results[(name, 1)], results[(name, 2)]
            ratio = statistics.median(b / a for a, b in zip(one, two, strict=True))
            ok = ok and ratio >= target
            print(f"{name:<12} 1 worker {statistics.median(one):8.0f} req/s, 2 workers {statistics.median(two):8.0f}"
                  f" req/s (medians); 2/1 median of paired rounds {ratio:.2f} (target >= {target}) "
                  f"{'OK' if ratio >= target else 'UNDER'}")
        return 0 if ok else 1
    finally:
        for proc, _, _ in servers.values():
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
