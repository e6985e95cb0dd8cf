"""GET /agents throughput with 50 agents: `gofannon serve` under wrk, against a bare aiohttp baseline.

Usage: .venv/bin/python bench/agents_list.py [--agents 50] [--seconds 5] [--connections 32]

Starts a real `gofannon serve` (embedded SQLite, a fresh data dir), signs in through the dev_stub login,
creates the agents, then runs wrk with the session cookie. The baseline is a bare aiohttp app serving the
very same response bytes, measured in the same run; the ratio is what the kernel costs on top.
Target: >= 3,500 requests/s on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, login, wait_up  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
CODE = "async def run(input_dict, tools):\n    return {'outputText': input_dict.get('inputText', '').upper()}\n"


async def create_agents(base: str, session: aiohttp.ClientSession, count: int,
                        first_name: str | None = None) -> list[str]:
    """``count`` trivial agents of the signed-in user (``agent_<i>``; the first named ``first_name`` if given);
    their ids."""
    ids = []
    for i in range(count):
        body = {"name": f"agent {i}", "description": f"Agent number {i}", "code": CODE,
                "friendlyName": first_name if i == 0 and first_name else f"agent_{i}",
                "inputSchema": {"inputText": "string"}, "outputSchema": {"outputText": "string"}}
        async with session.post(f"{base}/agents", json=body) as r:
            assert r.status == 201, await r.text()
            ids.append((await r.json())["_id"])
    return ids


def wrk(url: str, cookie: str | None, seconds: int, connections: int) -> float:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if cookie:
        cmd += ["-H", f"Cookie: gofannon_sid={cookie}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit(f"wrk saw {non2xx.group(1)} error responses:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


BASELINE = textwrap.dedent("""
    import sys
    from aiohttp import web
    body = open(sys.argv[2], 'rb').read()
    async def h(request):
        return web.Response(body=body, content_type='application/json')
    app = web.Application()
    app.router.add_get('/agents', h)
    web.run_app(app, host='127.0.0.1', port=int(sys.argv[1]), access_log=None, print=None)
""")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=50)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="gofannon-bench-"))
    port, base_port = free_port(), free_port()
    env = {**os.environ, "APP_ENV": "local", "GOFANNON_DATA_DIR": str(tmp / "data"), "GOFANNON_LOG_LEVEL": "WARNING",
           "GOFANNON_SANDBOX_POOL_SIZE": "1"}
    server = subprocess.Popen([PY, "-m", "gofannon", "serve", "--port", str(port)], env=env, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    baseline: subprocess.Popen[bytes] | None = None
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_up(f"{base}/health", server)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            sid = await login(base, s)
            await create_agents(base, s, args.agents)
            async with s.get(f"{base}/agents") as r:
                payload = await r.read()
                assert len(await r.json()) == args.agents
        (tmp / "body.json").write_bytes(payload)
        baseline = subprocess.Popen([PY, "-c", BASELINE, str(base_port), str(tmp / "body.json")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await wait_up(f"http://127.0.0.1:{base_port}/agents", baseline)
        wrk(f"{base}/agents", sid, 1, args.connections)  # warm-up
        kernel_rps = wrk(f"{base}/agents", sid, args.seconds, args.connections)
        bare_rps = wrk(f"http://127.0.0.1:{base_port}/agents", None, args.seconds, args.connections)
        print(f"GET /agents, {args.agents} agents ({len(payload)} bytes), {args.connections} connections, "
              f"{args.seconds} s each")
        print(f"  gofannon serve : {kernel_rps:10.0f} req/s   (target >= 3500)")
        print(f"  bare aiohttp   : {bare_rps:10.0f} req/s   (same bytes, no auth, no store)")
        print(f"  ratio          : {kernel_rps / bare_rps:10.2f}")
    finally:
        for proc in (server, baseline):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
