"""The price of isolation: ``run_code`` of a trivial agent against in-process ``exec`` of the same code.

Measured in the same run, on the same machine:

* latency with a warm pool: one run at a time, each taking a pre-started child (the bench waits for the pool
  to refill between runs, as it does on a server between bursts) — p50 / p99 of ``await run_code(...)``;
* saturated: ``--concurrency`` runs in flight until ``--runs`` are done, latency and runs/s; every run costs one
  fresh interpreter, so this is bounded by how fast the machine starts children;
* the baseline: ``compile`` + ``exec`` + ``await run(...)`` in this process, in a fresh namespace each time.

Target (issue 5): warm p50 <= 10 ms at the interface. Usage:

    .venv/bin/python bench/sandbox.py [--runs 200] [--concurrency 4] [--pool 4] [--tier auto]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gofannon.kernel import Kernel
from gofannon.sandbox import SandboxRequest, run_code
from gofannon.sandbox.pool import get_pool
from gofannon.settings import Settings

CODE = "async def run(input_dict, tools):\n    return {'outputText': input_dict['text'].upper()}\n"


class NullBroker:
    async def handle(self, op: str, args: dict[str, Any]) -> Any:
        raise ValueError(op)

    async def on_event(self, event: dict[str, Any]) -> None:
        return None


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def in_process(runs: int) -> tuple[list[float], float]:
    lat = []
    t0 = time.perf_counter()
    for i in range(runs):
        start = time.perf_counter()
        ns: dict[str, Any] = {"__name__": "__agent__"}
        exec(compile(CODE, "<agent>", "exec"), ns)
        result = await ns["run"](input_dict={"text": f"x{i}"}, tools={})
        assert result == {"outputText": f"X{i}"}
        lat.append((time.perf_counter() - start) * 1000)
    return lat, runs / (time.perf_counter() - t0)


async def wait_warm(kernel: Kernel, want: int) -> None:
    pool = get_pool(kernel)
    deadline = time.monotonic() + 30
    while pool.warm < want and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


async def sandboxed_latency(kernel: Kernel, runs: int) -> list[float]:
    broker = NullBroker()
    lat = []
    for i in range(runs):
        await wait_warm(kernel, get_pool(kernel).size)
        start = time.perf_counter()
        out = await run_code(kernel, SandboxRequest(code=CODE, input_dict={"text": f"x{i}"}, capture_trace=False),
                             broker)
        lat.append((time.perf_counter() - start) * 1000)
        assert out.result == {"outputText": f"X{i}"}, out.error
    return lat


async def sandboxed_throughput(kernel: Kernel, runs: int, concurrency: int) -> tuple[list[float], float]:
    broker = NullBroker()
    todo = iter(range(runs))
    lat: list[float] = []

    async def worker() -> None:
        for i in todo:
            start = time.perf_counter()
            out = await run_code(kernel, SandboxRequest(code=CODE, input_dict={"text": f"x{i}"},
                                                        capture_trace=False), broker)
            lat.append((time.perf_counter() - start) * 1000)
            assert out.error is None, out.error

    await wait_warm(kernel, get_pool(kernel).size)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return lat, runs / (time.perf_counter() - t0)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--pool", type=int, default=4)
    ap.add_argument("--tier", default="auto")
    args = ap.parse_args()
    settings = Settings.load({"APP_ENV": "test", "GOFANNON_SANDBOX_TIER": args.tier,
                              "GOFANNON_SANDBOX_POOL_SIZE": str(args.pool)})
    kernel = Kernel(settings)
    get_pool(kernel)
    try:
        await in_process(20)  # warm the baseline's code paths
        base_lat, base_tput = await in_process(args.runs)
        sb_lat = await sandboxed_latency(kernel, args.runs)
        load_lat, sb_tput = await sandboxed_throughput(kernel, args.runs, args.concurrency)
    finally:
        await kernel.close()
    print(f"tier: {kernel.sandbox_tier}, pool {args.pool}, {args.runs} runs, concurrency {args.concurrency}")
    print(f"{'':22}{'p50 ms':>10}{'p99 ms':>10}{'runs/s':>12}")
    print(f"{'in-process exec':22}{statistics.median(base_lat):10.3f}{pct(base_lat, 99):10.3f}{base_tput:12.1f}")
    print(f"{'sandbox, warm pool':22}{statistics.median(sb_lat):10.3f}{pct(sb_lat, 99):10.3f}{'':>12}")
    print(f"{'sandbox, saturated':22}{statistics.median(load_lat):10.3f}{pct(load_lat, 99):10.3f}{sb_tput:12.1f}")
    ratio = statistics.median(sb_lat) / max(statistics.median(base_lat), 1e-9)
    print(f"price of isolation: p50 x{ratio:.0f} ({statistics.median(sb_lat) - statistics.median(base_lat):.2f} ms "
          f"more per run); throughput x{base_tput / sb_tput:.0f} lower")
    target = 10.0
    print(f"warm p50 {'meets' if statistics.median(sb_lat) <= target else 'MISSES'} the {target:g} ms target")


if __name__ == "__main__":
    asyncio.run(main())
