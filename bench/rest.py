"""POST /rest/{name} of a trivial deployed agent: latency and throughput, against in-process exec.

Usage: .venv/bin/python bench/rest.py [--requests 300] [--seconds 5] [--connections 32]

Starts a real `gofannon serve` (embedded defaults: SQLite, in-process jobs, the sandbox's warm pool),
signs in, deploys a trivial agent, then measures
  * p50/p99 latency with one client (back-to-back requests over one keep-alive connection: every run
    takes a fresh single-use child, so this is bound by how fast the pool starts children),
  * p50/p99 with one client pacing its requests so the warm pool refills (the latency of a warm child),
  * requests/s with 32 connections (wrk and a Lua script for the POST),
and, in the same run, the same agent code run by plain in-process `exec` (what the reference did, with no
isolation): p50/p99 and single-core runs/s. The ratios are the price of isolation plus HTTP.
Targets: p50 <= 10 ms, >= 200 requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, login, spawn_kernel, stop, wait_up  # noqa: E402

CODE = "async def run(input_dict, tools):\n    return {'outputText': input_dict.get('inputText', '').upper()}\n"
BODY = '{"inputText": "hello"}'


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def in_process(n: int) -> list[float]:
    """The reference's way: compile, exec into a fresh namespace and await run(), per request."""
    import json

    samples = []
    for _ in range(n):
        t = time.perf_counter()
        ns: dict[str, object] = {}
        exec(compile(CODE, "<string>", "exec"), ns)
        result = await ns["run"](input_dict=json.loads(BODY), tools={})  # type: ignore[operator]
        json.dumps(result)
        samples.append((time.perf_counter() - t) * 1000)
    return samples


def wrk_post(url: str, cookie: str, seconds: int, connections: int, workdir: Path) -> float:
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{BODY}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Cookie"] = "gofannon_sid={cookie}"\n'
    )
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit(f"wrk saw {non2xx.group(1)} error responses:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--paced", type=int, default=60, help="paced requests (warm-pool latency)")
    ap.add_argument("--pace-ms", type=int, default=150, help="pause before each paced request")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="gofannon-bench-"))
    port = free_port()
    server = spawn_kernel(port, str(tmp / "data"), APP_ENV="local")
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_up(f"{base}/health", server)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            sid = await login(base, s)
            agent = {"name": "trivial", "description": "d", "code": CODE, "friendlyName": "trivial"}
            async with s.post(f"{base}/agents", json=agent) as r:
                agent_id = (await r.json())["_id"]
            async with s.post(f"{base}/agents/{agent_id}/deploy") as r:
                assert r.status == 201, await r.text()
            url = f"{base}/rest/trivial"
            samples: list[float] = []
            for i in range(args.requests + 20):
                t = time.perf_counter()
                async with s.post(url, data=BODY, headers={"Content-Type": "application/json"}) as r:
                    payload = await r.json()
                    assert r.status == 200, payload
                if i >= 20:  # the first few warm the pool and the caches
                    samples.append((time.perf_counter() - t) * 1000)
            assert payload == {"outputText": "HELLO"}
            # the same, paced so the sandbox's warm pool refills between requests (latency of a warm child)
            paced: list[float] = []
            for _ in range(args.paced):
                await asyncio.sleep(args.pace_ms / 1000)
                t = time.perf_counter()
                async with s.post(url, data=BODY, headers={"Content-Type": "application/json"}) as r:
                    assert r.status == 200
                    await r.read()
                paced.append((time.perf_counter() - t) * 1000)
        rps = wrk_post(url, sid, args.seconds, args.connections, tmp)
        local = await in_process(args.requests)
        local_rps = 1000 / statistics.mean(local)
        p50, p99, l50, l99 = pct(samples, 50), pct(samples, 99), pct(local, 50), pct(local, 99)
        print(f"POST /rest/trivial through the sandbox ({args.requests} sequential requests; "
              f"wrk {args.connections} connections, {args.seconds} s)")
        print(f"  gofannon serve   : p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   {rps:8.0f} req/s"
              "   (targets p50 <= 10 ms, >= 200 req/s)")
        print(f"  paced, warm pool : p50 {pct(paced, 50):7.2f} ms   p99 {pct(paced, 99):7.2f} ms"
              f"   ({args.paced} requests, {args.pace_ms} ms apart)")
        print(f"  in-process exec  : p50 {l50:7.3f} ms   p99 {l99:7.3f} ms   {local_rps:8.0f} runs/s (one core,"
              " no HTTP, no isolation)")
        print(f"  ratio            : p50 x{p50 / l50:.0f}   throughput {rps / local_rps:.4f}")
    finally:
        stop(server)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
