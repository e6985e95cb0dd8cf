"""Per-call overhead of ``call_llm`` and of the chat-ticket pipeline, against calling the model directly.

Usage: .venv/bin/python bench/llm_overhead.py [--calls 300] [--storage memory|sqlite]

All three are measured in the same run against the same fake OpenAI server on 127.0.0.1
(tests/fakes/llm_servers.py), one call at a time:
  direct   aiohttp POST /v1/chat/completions to the fake server (the baseline)
  call_llm the kernel's call_llm: allowance gate, parameter check, key lookup, plugin, pricing, charge, event
  ticket   a persisted pending ticket run through the in-process job queue to completion (claim, heartbeat,
           call_llm, result write)
It prints p50/p99 per path and the overhead over the baseline. Target: call_llm p50 overhead <= 2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from fakes.llm_servers import FakeLLMServer  # noqa: E402

from gofannon.auth import Identity  # noqa: E402
from gofannon.jobs import tickets  # noqa: E402
from gofannon.kernel import Kernel  # noqa: E402
from gofannon.llm.service import call_llm  # noqa: E402
from gofannon.models.chat import ChatRequest  # noqa: E402
from gofannon.settings import Settings  # noqa: E402

MESSAGES = [{"role": "user", "content": "Say hello"}]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(n: int, fn: Callable[[], Awaitable[Any]]) -> list[float]:
    for _ in range(max(5, n // 10)):  # warm-up
        await fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--storage", default="memory", choices=["memory", "sqlite"])
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    async with FakeLLMServer() as fake:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings.load({**fake.env, "APP_ENV": "test", "GOFANNON_STORAGE": args.storage,
                                      "GOFANNON_DATA_DIR": tmp, "GOFANNON_SANDBOX_POOL_SIZE": "0",
                                      "GOFANNON_DEFAULT_ALLOWANCE": "1000000"})
            kernel = Kernel(settings)
            await kernel.open()
            ident = Identity(uid="bench-user", provider_type="bench")
            body = {"model": "gpt-4o", "messages": MESSAGES}
            try:
                async with aiohttp.ClientSession() as session:
                    async def direct() -> Any:
                        async with session.post(f"{fake.openai_base_url}/chat/completions", json=body,
                                                headers={"Authorization": "Bearer x"}) as r:
                            return await r.json()

                    async def via_call_llm() -> Any:
                        return await call_llm(kernel, ident, "openai", "gpt-4o", MESSAGES, {})

                    request = ChatRequest.model_validate({"messages": MESSAGES, "provider": "openai", "model": "gpt-4o"})

                    async def via_ticket() -> Any:
                        doc = await tickets.new_ticket(kernel, ident, request)
                        result = await kernel.queue.call(
                            "chat", {"ticket_id": doc["_id"], "ident": tickets.ident_payload(ident)}, timeout=30)
                        assert result["status"] == "completed", result
                        return result

                    results = {}
                    for name, fn in (("direct", direct), ("call_llm", via_call_llm), ("ticket", via_ticket)):
                        results[name] = await measure(args.calls, fn)
            finally:
                await kernel.close()
    base50, base99 = statistics.median(results["direct"]), pct(results["direct"], 0.99)
    print(f"storage={args.storage} calls={args.calls} (sequential, fake OpenAI server on loopback)")
    for name, values in results.items():
        p50, p99 = statistics.median(values), pct(values, 0.99)
        print(f"  {name:9s} p50 {p50:7.3f} ms  p99 {p99:7.3f} ms  overhead p50 {p50 - base50:+7.3f} ms "
              f"(x{p50 / base50:.2f})  p99 {p99 - base99:+7.3f} ms")
    over = statistics.median(results["call_llm"]) - base50
    print(f"call_llm p50 overhead {over:.3f} ms: {'OK' if over <= 2.0 else 'OVER'} the 2 ms target")


if __name__ == "__main__":
    asyncio.run(main())
