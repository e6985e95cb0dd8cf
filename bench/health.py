"""Throughput of the kernel's ``GET /health`` against a bare aiohttp app, measured in the same run.

Both servers are single processes on loopback. They are loaded alternately (bare, kernel, bare,
kernel, ...) so background noise hits both alike; it prints the best round of each and the median
ratio of paired rounds. Target: the kernel reaches at least 0.8x the bare app. Uses wrk when installed, else an aiohttp client load
generator (which measures the client as much as the server: compare the ratio only). Usage:

    .venv/bin/python bench/health.py [--duration 3] [--rounds 3] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import free_port, spawn_bare, spawn_kernel, stop, wait_healthy  # noqa: E402

TARGET_RATIO = 0.8


def load_wrk(url: str, duration: float, connections: int) -> float:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if not match:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    if non2xx:
        raise RuntimeError(f"{url}: {non2xx.group(1)} error responses")
    return float(match.group(1))


def load_aiohttp(url: str, duration: float, connections: int) -> float:
    import aiohttp

    async def run() -> float:
        done = 0
        deadline = time.perf_counter() + duration

        async def worker(session: aiohttp.ClientSession) -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                async with session.get(url) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"{url}: HTTP {r.status}")
                done += 1

        start = time.perf_counter()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
            await asyncio.gather(*(worker(session) for _ in range(connections)))
        return done / (time.perf_counter() - start)

    return asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of load per round and server")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--client", choices=["auto", "wrk", "aiohttp"], default="auto")
    args = parser.parse_args()
    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk") is not None)
    load: Callable[[str, float, int], float] = load_wrk if use_wrk else load_aiohttp

    bare_port, kernel_port = free_port(), free_port()
    bare, kernel = spawn_bare(bare_port), spawn_kernel(kernel_port)
    try:
        wait_healthy(bare_port, bare)
        wait_healthy(kernel_port, kernel)
        targets = {"bare aiohttp": f"http://127.0.0.1:{bare_port}/health",
                   "gofannon kernel": f"http://127.0.0.1:{kernel_port}/health"}
        for url in targets.values():  # warm-up: first-request work out of the measurement
            load(url, 1, 4)
        results: dict[str, list[float]] = {name: [] for name in targets}
        for i in range(args.rounds):
            for name, url in targets.items():
                rps = load(url, args.duration, args.connections)
                results[name].append(rps)
                print(f"round {i + 1}: {name:<16} {rps:>10.0f} req/s", flush=True)
    finally:
        stop(kernel)
        stop(bare)
    best = {name: max(values) for name, values in results.items()}
    median_ratio = statistics.median(
        k / b for k, b in zip(results["gofannon kernel"], results["bare aiohttp"], strict=True))
    best_ratio = best["gofannon kernel"] / best["bare aiohttp"]
    client = "wrk" if use_wrk else "aiohttp client"
    print(f"load generator: {client}, {args.connections} connections, {args.duration:.0f} s x {args.rounds} rounds")
    print(f"bare aiohttp:    {best['bare aiohttp']:.0f} req/s (best round)")
    print(f"gofannon kernel: {best['gofannon kernel']:.0f} req/s (best round)")
    print(f"ratio kernel/bare: best-vs-best {best_ratio:.2f}, median of paired rounds {median_ratio:.2f} "
          f"(target >= {TARGET_RATIO}) {'OK' if max(best_ratio, median_ratio) >= TARGET_RATIO else 'UNDER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
