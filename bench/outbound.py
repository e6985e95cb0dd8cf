"""What the SSRF guard costs: `gofannon.net.fetch` against a plain aiohttp session, same local server, same run.

Usage: .venv/bin/python bench/outbound.py [--requests 2000] [--concurrency 16]

A local aiohttp server on 127.0.0.1 answers a small JSON body. The baseline is a plain `aiohttp.ClientSession`
(keep-alive, default resolver); the guarded path is `net.fetch` (URL check, resolution and address check on
every new connection, manual redirect handling, size cap) with loopback allow-listed. Prints requests/s of both
and the ratio. The guard only adds work per request and per connection, so the ratio should stay close to 1.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from typing import Awaitable, Callable

import aiohttp
from _common import free_port
from aiohttp import web

from gofannon import net
from gofannon.kernel import Kernel
from gofannon.settings import Settings


async def drive(n: int, concurrency: int, one: Callable[[], Awaitable[None]]) -> float:
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


async def main(requests: int, concurrency: int) -> None:
    app = web.Application()
    app.router.add_get("/", lambda r: web.json_response({"ok": True, "items": list(range(20))}))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}/"
    kernel = Kernel(Settings.load({"APP_ENV": "production", "GOFANNON_OUTBOUND_ALLOW": "127.0.0.1",
                                   "GOFANNON_DATA_DIR": tempfile.mkdtemp()}))
    try:
        async with aiohttp.ClientSession() as plain:
            async def baseline() -> None:
                async with plain.get(url) as r:
                    await r.read()

            async def guarded() -> None:
                await net.fetch(kernel, "GET", url)

            await drive(200, concurrency, baseline)  # warm both paths
            await drive(200, concurrency, guarded)
            base_rps = await drive(requests, concurrency, baseline)
            guard_rps = await drive(requests, concurrency, guarded)
        print(f"plain aiohttp : {base_rps:8.0f} req/s")
        print(f"net.fetch     : {guard_rps:8.0f} req/s")
        print(f"ratio         : {guard_rps / base_rps:8.2f} (guarded / plain)")
    finally:
        await kernel.close()
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.concurrency))
