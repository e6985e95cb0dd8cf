"""PostgreSQL vs SQLite as the document store: GET /agents (50 agents) and 200 concurrent charges.

Usage: .venv/bin/python bench/store_compare.py [--agents 50] [--seconds 5] [--connections 32] [--charges 200]

Starts a throwaway PostgreSQL (the tests' fixture code: initdb + pg_ctl on loopback, fsync off, so
neither store pays for disk flushes: SQLite runs WAL with synchronous=NORMAL), then measures on each store:
- ``GET /agents`` with 50 agents through a real ``gofannon serve`` under wrk (req/s);
- 200 concurrent ``gofannon.services.users.charge`` calls on one user (the atomic read-modify-write every
  LLM call goes through), rounds of them, best round; it checks that no charge was lost.
Both stores are measured in the same run; the ratios (postgres / sqlite) are the result.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from _common import free_port, login, stop, wait_up
from agents_list import CODE, PY, wrk
from fakes.postgres import start_postgres


async def agents_rps(env: dict[str, str], agents: int, seconds: int, connections: int) -> float:
    port = free_port()
    server = subprocess.Popen([PY, "-m", "gofannon", "serve", "--port", str(port)], env=env, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_up(f"{base}/health", server)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            sid = await login(base, s)
            for i in range(agents):
                body = {"name": f"agent {i}", "description": f"Agent number {i}", "code": CODE,
                        "friendlyName": f"agent_{i}", "inputSchema": {"inputText": "string"},
                        "outputSchema": {"outputText": "string"}}
                async with s.post(f"{base}/agents", json=body) as r:
                    assert r.status == 201, await r.text()
            async with s.get(f"{base}/agents") as r:
                assert len(await r.json()) == agents
        wrk(f"{base}/agents", sid, 1, connections)  # warm-up
        return wrk(f"{base}/agents", sid, seconds, connections)
    finally:
        stop(server)


async def charges_per_second(env: dict[str, str], charges: int, rounds: int) -> float:
    from gofannon.kernel import Kernel
    from gofannon.services import users
    from gofannon.settings import Settings

    kernel = Kernel(Settings.load(env), role="cli")
    kernel.store = kernel.open_store()
    await kernel.store.open()
    try:
        best = 0.0
        for n in range(rounds):
            uid = f"bench-{n}"
            await users.get_or_create_user(kernel, uid)
            started = time.perf_counter()
            await asyncio.gather(*(users.charge(kernel, uid, 0.001, None) for _ in range(charges)))
            elapsed = time.perf_counter() - started
            doc: Any = await kernel.store.get("users", uid)
            spent = doc["usageInfo"]["monthlyAllowance"] - doc["usageInfo"]["spendRemaining"]
            if abs(spent - charges * 0.001) > 1e-6:
                raise SystemExit(f"lost charges on {env['GOFANNON_STORAGE']}: spent {spent}")
            best = max(best, charges / elapsed)
        return best
    finally:
        await kernel.store.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=50)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--charges", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="gofannon-bench-"))
    pg = start_postgres()
    try:
        common = {**os.environ, "APP_ENV": "local", "GOFANNON_LOG_LEVEL": "WARNING", "GOFANNON_SANDBOX_POOL_SIZE": "1"}
        envs = {
            "sqlite": {**common, "GOFANNON_STORAGE": "sqlite", "GOFANNON_DATA_DIR": str(tmp / "sqlite")},
            "postgres": {**common, "GOFANNON_STORAGE": "postgres", "GOFANNON_DATA_DIR": str(tmp / "pg"),
                         "DATABASE_URL": pg.create_database()},
        }
        charge_envs = {
            "sqlite": {**envs["sqlite"], "GOFANNON_DATA_DIR": str(tmp / "sqlite-charges")},
            "postgres": {**envs["postgres"], "DATABASE_URL": pg.create_database()},
        }
        rps = {name: await agents_rps(env, args.agents, args.seconds, args.connections) for name, env in envs.items()}
        cps = {name: await charges_per_second(env, args.charges, args.rounds) for name, env in charge_envs.items()}
        print(f"GET /agents, {args.agents} agents, {args.connections} connections, {args.seconds} s (wrk)")
        for name, value in rps.items():
            print(f"  {name:<9}: {value:10.0f} req/s")
        print(f"  ratio postgres/sqlite: {rps['postgres'] / rps['sqlite']:.2f}")
        print(f"{args.charges} concurrent charges on one user, best of {args.rounds} rounds (no charge lost)")
        for name, value in cps.items():
            print(f"  {name:<9}: {value:10.0f} charges/s")
        print(f"  ratio postgres/sqlite: {cps['postgres'] / cps['sqlite']:.2f}")
    finally:
        pg.stop("fast")
        shutil.rmtree(pg.datadir.parent, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
