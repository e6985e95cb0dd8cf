"""/mcp against /rest: tools/call of a trivial deployed agent vs POST /rest/{name}, and tools/list of 200 tools.

Usage: .venv/bin/python bench/mcp.py [--calls 150] [--pace-ms 150] [--lists 500] [--agents 200]

Starts a real `gofannon serve` (embedded defaults: SQLite, in-process jobs, the sandbox's warm pool), signs in,
makes a personal API token and deploys a trivial agent. Both doors are driven with the same bearer token over
one keep-alive connection, alternating request by request and paced so the warm pool refills between runs
(each run takes a fresh sandbox child): p50/p99 of `POST /rest/trivial` and of the JSON-RPC `tools/call`
(JSON answer, no progress token). Then 199 more agents are deployed and `tools/list` is timed.
Targets (issue 13): tools/call p50 within 1 ms of /rest p50; tools/list with 200 agents p50 <= 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, login, spawn_kernel, stop, wait_up

CODE = "async def run(input_dict, tools):\n    return {'outputText': input_dict.get('inputText', '').upper()}\n"


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def deploy(s: aiohttp.ClientSession, base: str, name: str) -> None:
    agent = {"name": name, "description": f"The agent {name}", "code": CODE, "friendlyName": name,
             "inputSchema": {"inputText": "string"}, "outputSchema": {"outputText": "string"}}
    async with s.post(f"{base}/agents", json=agent) as r:
        agent_id = (await r.json())["_id"]
    async with s.post(f"{base}/agents/{agent_id}/deploy") as r:
        assert r.status == 201, await r.text()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=150, help="paced calls through each door")
    ap.add_argument("--pace-ms", type=int, default=150, help="pause before each call (the warm pool refills)")
    ap.add_argument("--lists", type=int, default=500)
    ap.add_argument("--agents", type=int, default=200)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gofannon-bench-"))
    port = free_port()
    server = spawn_kernel(port, str(tmp / "data"), APP_ENV="local")
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_up(f"{base}/health", server)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            await login(base, browser)
            async with browser.post(f"{base}/users/me/tokens", json={"name": "bench"}) as r:
                token = (await r.json())["token"]
            await deploy(browser, base, "trivial")
        auth = {"Authorization": f"Bearer {token}"}
        mcp_headers = {**auth, "Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        async with aiohttp.ClientSession() as s:
            init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}
            async with s.post(f"{base}/mcp", json=init, headers=mcp_headers) as r:
                assert r.status == 200, await r.text()
                mcp_headers.update({"Mcp-Session-Id": r.headers["Mcp-Session-Id"],
                                    "MCP-Protocol-Version": "2025-11-25"})
            rest_body = json.dumps({"inputText": "hello"})
            rest: list[float] = []
            mcp: list[float] = []
            for i in range(args.calls + 10):
                await asyncio.sleep(args.pace_ms / 1000)
                t = time.perf_counter()
                async with s.post(f"{base}/rest/trivial", data=rest_body,
                                  headers={**auth, "Content-Type": "application/json"}) as r:
                    assert r.status == 200 and await r.json() == {"outputText": "HELLO"}
                rest_ms = (time.perf_counter() - t) * 1000
                await asyncio.sleep(args.pace_ms / 1000)
                call = {"jsonrpc": "2.0", "id": i + 1, "method": "tools/call",
                        "params": {"name": "trivial", "arguments": {"inputText": "hello"}}}
                t = time.perf_counter()
                async with s.post(f"{base}/mcp", data=json.dumps(call), headers=mcp_headers) as r:
                    answer = await r.json()
                mcp_ms = (time.perf_counter() - t) * 1000
                assert answer["result"]["structuredContent"] == {"outputText": "HELLO"}, answer
                if i >= 10:  # the first few warm the pool and the caches
                    rest.append(rest_ms)
                    mcp.append(mcp_ms)
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
                await login(base, browser)
                for n in range(1, args.agents):
                    await deploy(browser, base, f"agent_{n:03d}")
            lists: list[float] = []
            for i in range(args.lists + 20):
                body = json.dumps({"jsonrpc": "2.0", "id": f"l{i}", "method": "tools/list"})
                t = time.perf_counter()
                async with s.post(f"{base}/mcp", data=body, headers=mcp_headers) as r:
                    answer = await r.json()
                if i >= 20:
                    lists.append((time.perf_counter() - t) * 1000)
            assert len(answer["result"]["tools"]) == args.agents
        print(f"POST /rest/trivial   p50 {pct(rest, 50):6.2f} ms  p99 {pct(rest, 99):6.2f} ms  ({len(rest)} calls)")
        print(f"MCP tools/call       p50 {pct(mcp, 50):6.2f} ms  p99 {pct(mcp, 99):6.2f} ms  ({len(mcp)} calls)")
        print(f"  difference of p50s {pct(mcp, 50) - pct(rest, 50):+6.2f} ms  (target: within 1 ms)")
        print(f"MCP tools/list ({args.agents} tools) p50 {pct(lists, 50):6.2f} ms  p99 {pct(lists, 99):6.2f} ms"
              f"  (target: p50 <= 5 ms)")
    finally:
        stop(server)


if __name__ == "__main__":
    asyncio.run(main())
