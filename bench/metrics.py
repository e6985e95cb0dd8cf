"""What metrics cost: ``GET /health`` and ``GET /agents`` (50 agents) with ``GOFANNON_METRICS`` on vs off.

Two ``gofannon serve`` processes (embedded SQLite, fresh data dirs) run side by side, one with metrics and
one without, and are loaded alternately with wrk (on, off, off, on, ...) so background noise hits both
alike. Target: with metrics on, at least 0.9x the throughput with them off, for both routes. It also prints
the server's CPU time per request (from /proc), which other load on the machine disturbs much less than
throughput. Usage:

    .venv/bin/python bench/metrics.py [--seconds 3] [--rounds 3] [--connections 32]
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
from agents_list import create_agents, wrk  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TARGET = 0.9


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def start(metrics: str, agents: int, tmp: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """A server with GOFANNON_METRICS=metrics, signed in, with ``agents`` agents; (process, base url, cookie)."""
    port = free_port()
    env = {**os.environ, "APP_ENV": "local", "GOFANNON_DATA_DIR": str(tmp / metrics), "GOFANNON_LOG_LEVEL": "WARNING",
           "GOFANNON_SANDBOX_POOL_SIZE": "1", "GOFANNON_METRICS": metrics}
    env.pop("REDIS_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "gofannon", "serve", "--port", str(port)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    await wait_up(f"{base}/health", proc)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        sid = await login(base, s)
        await create_agents(base, s, agents)
    return proc, base, sid


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=50)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="gofannon-bench-"))
    servers: dict[str, tuple[subprocess.Popen[bytes], str, str]] = {}
    try:
        for mode in ("on", "off"):
            servers[mode] = await start(mode, args.agents, tmp)
        results: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}
        for path in ("/health", "/agents"):
            for mode, (_, base, sid) in servers.items():  # warm-up
                wrk(f"{base}{path}", sid, 1, args.connections)
            for i in range(args.rounds):
                order = list(servers.items()) if i % 2 == 0 else list(servers.items())[::-1]  # no order bias
                for mode, (proc, base, sid) in order:
                    used = cpu_seconds(proc.pid)
                    rps = wrk(f"{base}{path}", sid if path == "/agents" else None, args.seconds, args.connections)
                    per_request_us = (cpu_seconds(proc.pid) - used) / (rps * args.seconds) * 1e6
                    results.setdefault((path, mode), []).append(rps)
                    cpu.setdefault((path, mode), []).append(per_request_us)
                    print(f"round {i + 1}: GET {path:<8} metrics {mode:<3} {rps:>9.0f} req/s, "
                          f"{per_request_us:6.0f} us CPU per request", flush=True)
        print(f"wrk, {args.connections} connections, {args.seconds} s x {args.rounds} rounds; "
              f"/agents lists {args.agents} agents")
        ok = True
        for path in ("/health", "/agents"):
            on, off = results[(path, "on")], results[(path, "off")]
            ratio = statistics.median(a / b for a, b in zip(on, off, strict=True))
            ok = ok and ratio >= TARGET
            print(f"GET {path:<8} on {max(on):8.0f} req/s, off {max(off):8.0f} req/s (best rounds); "
                  f"on/off median of paired rounds {ratio:.2f} (target >= {TARGET}) {'OK' if ratio >= TARGET else 'UNDER'}")
            cpu_on, cpu_off = statistics.median(cpu[(path, "on")]), statistics.median(cpu[(path, "off")])
            print(f"GET {path:<8} CPU per request: on {cpu_on:.0f} us, off {cpu_off:.0f} us (medians); "
                  f"off/on {cpu_off / cpu_on:.2f}")
        return 0 if ok else 1
    finally:
        for proc, _, _ in servers.values():
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
