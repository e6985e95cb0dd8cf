"""Cost of authentication: GET /users/me with a session cookie and with a personal API token, against
GET /health (no credentials, no store) on the same server in the same run.

Usage: .venv/bin/python bench/auth.py [--seconds 5] [--connections 32]

Starts a real `gofannon serve` (embedded SQLite), signs in through the dev_stub login, mints a token,
then runs wrk against each. The ratios say what resolving the caller (one session or token lookup) and
reading the user document cost per request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import aiohttp
from _common import free_port, login, stop, wait_up  # bench/ is the script's directory
from agents_list import PY, REPO


def wrk(url: str, header: str | None, seconds: int, connections: int) -> float:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s"]
    if header:
        cmd += ["-H", header]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit(f"wrk saw {non2xx.group(1)} error responses:\n{out}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert found is not None, out
    return float(found.group(1))


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="gofannon-bench-auth-"))
    port = free_port()
    env = {**os.environ, "APP_ENV": "local", "GOFANNON_DATA_DIR": str(tmp / "data"), "GOFANNON_LOG_LEVEL": "WARNING",
           "GOFANNON_SANDBOX_POOL_SIZE": "1"}
    server = subprocess.Popen([PY, "-m", "gofannon", "serve", "--port", str(port)], env=env, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_up(f"{base}/health", server)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            sid = await login(base, s)
            async with s.post(f"{base}/users/me/tokens", json={"name": "bench"}) as r:
                assert r.status == 201, await r.text()
                token = (await r.json())["token"]
            async with s.get(f"{base}/users/me") as r:
                assert r.status == 200
        cookie, bearer = f"Cookie: gofannon_sid={sid}", f"Authorization: Bearer {token}"
        wrk(f"{base}/users/me", cookie, 1, args.connections)  # warm-up
        health = wrk(f"{base}/health", None, args.seconds, args.connections)
        by_cookie = wrk(f"{base}/users/me", cookie, args.seconds, args.connections)
        by_token = wrk(f"{base}/users/me", bearer, args.seconds, args.connections)
        print(f"{args.connections} connections, {args.seconds} s each")
        print(f"  GET /health (baseline)      : {health:9.0f} req/s")
        print(f"  GET /users/me, cookie       : {by_cookie:9.0f} req/s   ratio {by_cookie / health:5.2f}")
        print(f"  GET /users/me, bearer token : {by_token:9.0f} req/s   ratio {by_token / health:5.2f}")
        print(f"  token vs cookie             : {by_token / by_cookie:9.2f}")
    finally:
        stop(server)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
