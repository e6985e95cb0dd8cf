"""The OpenAI-compatible gateway (/v1): what it adds over calling the vendor directly, and LiteLLM's proxy.

Usage: .venv/bin/python bench/gateway.py [--requests 500] [--rounds 10] [--seconds 5] [--connections 32]
                                         [--store sqlite|memory] [--log-level INFO] [--client aiohttp|openai]
                                         [--litellm-python /tmp/litellm-venv/bin/python]

Starts, in one run:
  * an instant local OpenAI-compatible upstream (a tiny aiohttp server answering chat completions, streamed
    or not, with usage),
  * a real `gofannon serve` whose catalog has an OpenAI-compatible provider at that upstream with a priced
    model, called with a personal API token (every call goes through the allowance gate and is charged),
  * a bare aiohttp pass-through proxy in front of the same upstream (no auth, no billing): the floor any
    aiohttp server that forwards a call pays on this machine, so "added" can be read against it,
  * optionally LiteLLM's proxy (`litellm --num_workers 1`, no database) in front of the same upstream, from a
    separate virtualenv (`python -m venv /tmp/litellm-venv && /tmp/litellm-venv/bin/pip install 'litellm[proxy]'`),
and measures for each: p50/p99 latency of sequential non-streamed calls from one client, p50 time to the
first content chunk of a streamed call, requests/s at 32 connections (wrk, non-streamed), and the server
process's CPU time per request during that wrk run (a figure other load on the machine does not distort).
Then wrk at one connection (``--wrk1-rounds``): calls back to back with no client think time, where a server's
work after each answer (log line, metrics) is on the next call's path; the aiohttp client's own ~0.2 ms between
calls otherwise hides it.
The sequential calls run in interleaved rounds (``--rounds``, a block of calls per target in turn, shuffled), and
"added" is the median over rounds of the paired difference: this 2-core machine's slow spells last seconds and
would otherwise land on one target and not another. LiteLLM (much slower, and CPU-hungry) runs its rounds with
its own series of direct calls after the others.
With ``--client openai`` the sequential calls are made with the official `openai` SDK (its async client, on
httpx) instead of aiohttp: the client an outside check would likely use; it costs more per call on the client
side, the same for every target.
Targets: added p50 <= 1 ms, TTFC added <= 1 ms, throughput >= 10x LiteLLM's proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, free_port, personal_token, stop, wait_up  # noqa: E402

PY = sys.executable
MODEL = "m"
LITELLM_KEY = "sk-bench-master-7f3c9e2a1b5d4f60"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}

UPSTREAM = r'''
import json, sys
from aiohttp import web

ANSWER = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there!"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}}).encode()

def chunk(delta, finish=None, usage=None):
    c = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "m",
         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage:
        c["choices"], c["usage"] = [], usage
    return b"data: " + json.dumps(c).encode() + b"\n\n"

STREAM = b"".join([chunk({"role": "assistant", "content": ""}), chunk({"content": "Hello"}),
                   chunk({"content": " there!"}), chunk({}, "stop"),
                   chunk({}, None, {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}),
                   b"data: [DONE]\n\n"])

async def chat(request):
    body = await request.json()
    if body.get("stream"):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(STREAM)
        return resp
    return web.Response(body=ANSWER, content_type="application/json")

app = web.Application()
app.router.add_post("/v1/chat/completions", chat)
app.router.add_get("/health", lambda r: web.Response(text="ok"))
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
'''


# The floor any aiohttp proxy pays: a pass-through that parses the body, forwards it with one pooled
# ClientSession (streamed answers relayed chunk by chunk) and returns the answer; no auth, no billing.
BARE_PROXY = r'''
import sys, aiohttp
from aiohttp import web
UP = sys.argv[2]

async def startup(app):
    app["s"] = aiohttp.ClientSession()

async def chat(request):
    body = await request.json()
    async with request.app["s"].post(UP, json=body) as r:
        if not body.get("stream"):
            return web.json_response(await r.json())
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        async for piece in r.content.iter_any():
            await resp.write(piece)
        return resp

app = web.Application()
app.on_startup.append(startup)
app.router.add_post("/v1/chat/completions", chat)
app.router.add_get("/health", lambda r: web.Response(text="ok"))
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
'''


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def call_once(session: aiohttp.ClientSession, url: str, headers: dict[str, str], body: str) -> float:
    """One non-streamed call: ms until its whole answer was read."""
    t = time.perf_counter()
    async with session.post(url, data=body, headers=headers) as r:
        data = await r.read()
        assert r.status == 200, data
    return (time.perf_counter() - t) * 1000


async def first_chunk(session: aiohttp.ClientSession, url: str, headers: dict[str, str], body: str) -> float:
    """One streamed call: ms until the first chunk carrying content arrived (the whole stream is read)."""
    t = time.perf_counter()
    first = None
    async with session.post(url, data=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        async for line in r.content:
            if first is None and b'"content":"Hello"' in line.replace(b" ", b""):
                first = time.perf_counter() - t
    assert first is not None, "no content chunk"
    return first * 1000


#: The client the sequential calls are made with (``--client``): "aiohttp", or "openai" (the official SDK).
CLIENT = {"name": "aiohttp"}


async def latency_sdk(url: str, headers: dict[str, str], n: int, model: str, warm: int, stream: bool) -> list[float]:
    """Like ``latency`` (``ttfc`` when ``stream``) with the official `openai` SDK as the client."""
    import openai

    key = headers.get("Authorization", "Bearer sk-none").split(" ", 1)[1]
    samples = []
    async with openai.AsyncOpenAI(base_url=url.rsplit("/chat/completions", 1)[0], api_key=key,
                                  max_retries=0) as client:
        for _ in range(n + warm):
            t = time.perf_counter()
            if stream:
                first = None
                async for chunk in await client.chat.completions.create(
                        model=model, messages=BODY["messages"], max_tokens=16, stream=True):
                    if first is None and chunk.choices and chunk.choices[0].delta.content:
                        first = time.perf_counter() - t
                assert first is not None, "no content chunk"
                samples.append(first * 1000)
            else:
                answer = await client.chat.completions.create(model=model, messages=BODY["messages"], max_tokens=16)
                assert answer.choices[0].message.content
                samples.append((time.perf_counter() - t) * 1000)
    return samples[warm:]


async def latency(url: str, headers: dict[str, str], n: int, model: str, warm: int = 50) -> list[float]:
    if CLIENT["name"] == "openai":
        return await latency_sdk(url, headers, n, model, warm, stream=False)
    body = json.dumps({**BODY, "model": model})
    headers = {**headers, "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as s:
        samples = [await call_once(s, url, headers, body) for _ in range(n + warm)]
    return samples[warm:]


def wrk(url: str, headers: dict[str, str], seconds: int, connections: int, workdir: Path, model: str) -> float:
    script = workdir / f"post-{abs(hash(url))}.lua"
    lines = ['wrk.method = "POST"', f"wrk.body = '{json.dumps({**BODY, 'model': model})}'",
             'wrk.headers["Content-Type"] = "application/json"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit(f"wrk saw {non2xx.group(1)} error responses against {url}:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def wrk_one(url: str, headers: dict[str, str], seconds: int, workdir: Path, model: str) -> float:
    """p50 latency (ms) of wrk at one connection: calls back to back, with no client think time, so whatever a
    server does after an answer (its log line, its metrics) delays the next call, as it would for any client
    that calls without pause."""
    script = workdir / f"post1-{abs(hash(url))}.lua"
    lines = ['wrk.method = "POST"', f"wrk.body = '{json.dumps({**BODY, 'model': model})}'",
             'wrk.headers["Content-Type"] = "application/json"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(["wrk", "-t1", "-c1", f"-d{seconds}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    found = re.search(r"50%\s+([\d.]+)(us|ms|s)\b", out)
    if found is None:
        raise SystemExit(f"wrk gave no latency distribution:\n{out}")
    return float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process and its descendants so far (Linux /proc)."""
    if pid is None:
        return 0.0
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{pid}/task").glob("*"):
            for child in (task / "children").read_text().split():
                total += cpu_seconds(int(child))
    except (OSError, ValueError, IndexError):
        pass
    return total


@dataclass
class Target:
    name: str
    url: str
    headers: dict[str, str]
    model: str
    pid: int | None
    p50s: list[float] = field(default_factory=list)  # per round
    ttfcs: list[float] = field(default_factory=list)  # per round
    samples: list[float] = field(default_factory=list)  # every sequential call, pooled


async def ttfc(url: str, headers: dict[str, str], n: int, model: str, warm: int = 3) -> list[float]:
    if CLIENT["name"] == "openai":
        return await latency_sdk(url, headers, n, model, warm, stream=True)
    body = json.dumps({**BODY, "model": model, "stream": True})
    headers = {**headers, "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as s:
        samples = [await first_chunk(s, url, headers, body) for _ in range(n + warm)]
    return samples[warm:]


async def interleaved(targets: list[Target], args: argparse.Namespace) -> None:
    """Sequential calls in rounds: each round runs a block of calls against every target, in a shuffled order, so
    a slow spell of this shared machine lands on all of them alike; a target's figure is the median of its rounds'
    p50s, and "added" is the median of the rounds' paired differences. Blocks, not calls alternating one by one:
    what a server does just after answering (its log line, its gathered charges) must land on its own next calls,
    as it does for a client calling it back to back, not on another target's."""
    per_round = max(20, args.requests // args.rounds)
    streamed = max(10, per_round // 4)
    for _ in range(args.rounds):
        for t in random.sample(targets, len(targets)):
            block = await latency(t.url, t.headers, per_round, t.model, warm=10)
            t.samples += block
            t.p50s.append(pct(block, 50))
            t.ttfcs.append(pct(await ttfc(t.url, t.headers, streamed, t.model), 50))


def added(target: Target, base: Target, what: str) -> float:
    mine, theirs = (target.p50s, base.p50s) if what == "p50" else (target.ttfcs, base.ttfcs)
    return statistics.median(a - b for a, b in zip(mine, theirs))


def throughput(t: Target, args: argparse.Namespace, tmp: Path) -> tuple[float, float]:
    """(requests/s at ``--connections``, ms of the server's CPU per request) under wrk."""
    cpu = cpu_seconds(t.pid)
    rps = wrk(t.url, t.headers, args.seconds, args.connections, tmp, t.model)
    return rps, (cpu_seconds(t.pid) - cpu) * 1000 / max(1.0, rps * args.seconds)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=10, help="interleaved rounds the sequential calls are split into")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--store", default="sqlite", choices=["sqlite", "memory"])
    ap.add_argument("--log-level", default="INFO",
                    help="the kernel's GOFANNON_LOG_LEVEL (default INFO, the kernel's own default: a line per call)")
    ap.add_argument("--litellm-python", default=None, help="python of a virtualenv with litellm[proxy]")
    ap.add_argument("--wrk1-rounds", type=int, default=4,
                    help="rounds of wrk at one connection (no client think time); 0 skips them")
    ap.add_argument("--client", default="aiohttp", choices=["aiohttp", "openai"],
                    help="what makes the sequential calls: aiohttp, or the official openai SDK")
    args = ap.parse_args()
    CLIENT["name"] = args.client
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="gofannon-bench-"))
    up_port, k_port, l_port, b_port = free_port(), free_port(), free_port(), free_port()
    upstream = subprocess.Popen([PY, "-c", UPSTREAM, str(up_port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    bare = subprocess.Popen([PY, "-c", BARE_PROXY, str(b_port), f"http://127.0.0.1:{up_port}/v1/chat/completions"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kernel = litellm = None
    try:
        await wait_up(f"http://127.0.0.1:{up_port}/health", upstream)
        await wait_up(f"http://127.0.0.1:{b_port}/health", bare)
        (tmp / "conf" / "catalog").mkdir(parents=True)
        (tmp / "conf" / "catalog" / "bench.json").write_text(json.dumps({
            "slug": "bench", "plugin": "openai_compat", "base_url": f"http://127.0.0.1:{up_port}/v1",
            "models": {MODEL: {"pricing": {"input_cost_per_token": 1e-9, "output_cost_per_token": 2e-9}}}}))
        env = {**os.environ, "APP_ENV": "local", "GOFANNON_DATA_DIR": str(tmp / "data"),
               "GOFANNON_CONFIG_DIR": str(tmp / "conf"), "GOFANNON_STORAGE": args.store,
               "GOFANNON_LOG_LEVEL": args.log_level, "GOFANNON_DEFAULT_ALLOWANCE": "1000000"}
        env.pop("REDIS_URL", None)
        kernel = subprocess.Popen([PY, "-m", "gofannon", "serve", "--port", str(k_port)], env=env, cwd=REPO,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{k_port}"
        await wait_up(f"{base}/health", kernel)
        token = await personal_token(base)
        if args.litellm_python:
            exe = Path(args.litellm_python).with_name("litellm")
            (tmp / "litellm.yaml").write_text(  # a master key, no database: it authenticates each call too
                f"model_list:\n  - model_name: {MODEL}\n    litellm_params:\n      model: openai/{MODEL}\n"
                f"      api_base: http://127.0.0.1:{up_port}/v1\n      api_key: sk-bench\n"
                f"general_settings:\n  master_key: {LITELLM_KEY}\n")
            started = time.perf_counter()
            litellm = subprocess.Popen([str(exe), "--config", str(tmp / "litellm.yaml"), "--port", str(l_port),
                                        "--num_workers", "1"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, cwd=tmp)
            deadline = time.monotonic() + 120
            async with aiohttp.ClientSession() as s:
                while True:
                    if litellm.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit("LiteLLM's proxy did not start")
                    try:
                        async with s.get(f"http://127.0.0.1:{l_port}/health/liveliness") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.2)
            print(f"LiteLLM proxy up in {time.perf_counter() - started:.1f} s", flush=True)
        print(f"Chat completions, instant upstream ({args.requests} sequential calls per target in {args.rounds} "
              f"interleaved rounds, TTFC over streamed calls in the same rounds; then wrk {args.connections} "
              f"connections, {args.seconds} s each; kernel store {args.store}, log level {args.log_level}, "
              f"client {args.client}, charging every call)", flush=True)
        direct = Target("upstream direct", f"http://127.0.0.1:{up_port}/v1/chat/completions", {}, MODEL, upstream.pid)
        floor = Target("bare aiohttp proxy", f"http://127.0.0.1:{b_port}/v1/chat/completions", {}, MODEL, bare.pid)
        gof = Target("gofannon /v1", f"{base}/v1/chat/completions", {"Authorization": f"Bearer {token}"},
                     f"bench/{MODEL}", kernel.pid)
        targets = [direct, floor, gof]
        await interleaved(targets, args)
        if litellm is not None:
            # LiteLLM's rounds pair it with a second series of direct calls, apart from the others: its ~15 ms of CPU
            # per call, some of it after each answer, would otherwise spill into the blocks that follow it.
            lit = Target("LiteLLM proxy", f"http://127.0.0.1:{l_port}/v1/chat/completions",
                         {"Authorization": f"Bearer {LITELLM_KEY}"}, MODEL, litellm.pid)
            lit_direct = Target(direct.name, direct.url, {}, MODEL, None)
            await interleaved([lit_direct, lit], args)
            targets.append(lit)
        # wrk at one connection, in rounds (the targets in turn, shuffled): the measure with no client think time.
        ones: dict[str, list[float]] = {t.name: [] for t in (direct, floor, gof)}
        for _ in range(args.wrk1_rounds):
            for t in random.sample([direct, floor, gof], 3):
                ones[t.name].append(wrk_one(t.url, t.headers, 2, tmp, t.model))
        rates = {t.name: throughput(t, args, tmp) for t in targets}
        for t in targets:
            rps, cpu_ms = rates[t.name]
            print(f"  {t.name:<18}: p50 {statistics.median(t.p50s):7.3f} ms   p99 {pct(t.samples, 99):7.3f} ms   "
                  f"TTFC p50 {statistics.median(t.ttfcs):7.3f} ms   {rps:8.0f} req/s   {cpu_ms:6.3f} ms CPU/request",
                  flush=True)
        print(f"  added by gofannon: p50 {added(gof, direct, 'p50'):+.3f} ms (target <= 1)   "
              f"TTFC {added(gof, direct, 'ttfc'):+.3f} ms (target <= 1)   "
              f"throughput {rates[gof.name][0] / rates[direct.name][0]:.2f}x the upstream's   "
              f"(rounds' p50 added: {' '.join(f'{a - b:+.2f}' for a, b in zip(gof.p50s, direct.p50s))})")
        print(f"  added by a bare aiohttp proxy (the floor): p50 {added(floor, direct, 'p50'):+.3f} ms   "
              f"TTFC {added(floor, direct, 'ttfc'):+.3f} ms;  gofannon over that floor: "
              f"p50 {added(gof, floor, 'p50'):+.3f} ms   TTFC {added(gof, floor, 'ttfc'):+.3f} ms   "
              f"(rounds' p50 added by the floor: {' '.join(f'{a - b:+.2f}' for a, b in zip(floor.p50s, direct.p50s))})")
        if args.wrk1_rounds:
            def one_added(name: str) -> float:
                return statistics.median(a - b for a, b in zip(ones[name], ones[direct.name]))
            print(f"  wrk, one connection, no think time ({args.wrk1_rounds} rounds of 2 s): p50 upstream "
                  f"{statistics.median(ones[direct.name]):.3f} ms; added by gofannon {one_added(gof.name):+.3f} ms, "
                  f"by the bare aiohttp proxy {one_added(floor.name):+.3f} ms")
        if litellm is not None:
            print(f"  added by LiteLLM : p50 {added(lit, lit_direct, 'p50'):+.3f} ms   "
                  f"TTFC {added(lit, lit_direct, 'ttfc'):+.3f} ms   (against direct calls in its own rounds)")
            print(f"  gofannon vs LiteLLM: throughput {rates[gof.name][0] / rates[lit.name][0]:.1f}x (target >= 10x), "
                  f"p50 {statistics.median(lit.p50s) / statistics.median(gof.p50s):.1f}x lower, "
                  f"CPU per request {rates[lit.name][1] / rates[gof.name][1]:.1f}x less")
        else:
            print("  LiteLLM proxy: skipped (pass --litellm-python PATH to a virtualenv with litellm[proxy])")
    finally:
        for proc in (litellm, kernel, bare, upstream):
            if proc is not None:
                stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
