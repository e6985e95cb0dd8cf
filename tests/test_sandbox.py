"""The sandbox as the routes and the broker use it: ``run_code`` with a host-side test broker.

The broker here is a test double of the *host side* (it answers the child's ops from memory); the child
process, its pool, its confinement and the channel are the real ones.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gofannon.errors import PaymentRequired
from gofannon.kernel import Kernel
from gofannon.sandbox import SandboxRequest, run_code
from gofannon.sandbox.pool import choose_tier, get_pool, tier_problem
from gofannon.settings import Settings


class MemoryBroker:
    """Answers every op the child can send, the way the real broker shapes its answers."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.ops: list[tuple[str, dict[str, Any]]] = []
        self.store: dict[str, dict[str, Any]] = {}

    async def on_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    async def handle(self, op: str, args: dict[str, Any]) -> Any:
        self.ops.append((op, args))
        if op == "llm.call":
            if args["model"] == "broke":
                raise PaymentRequired()
            return {"content": f"echo:{args['messages'][-1]['content']}", "thoughts": "hmm", "input_tokens": 3,
                    "output_tokens": 2, "cost_usd": 0.001}
        if op == "llm.context_window":
            return 200000
        if op == "agents.call":
            return {"called": args["agent_name"], "input": args["input_dict"]}
        if op == "mcp.list_tools":
            return [{"name": "add", "description": "Adds two numbers",
                     "inputSchema": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}]
        if op == "mcp.call_tool":
            total = sum(args["arguments"].values())
            return {"content": [{"type": "text", "text": str(total)}], "structuredContent": {"result": total},
                    "isError": False}
        if op == "http.request":
            body = {"method": args["method"], "url": args["url"], "params": args["params"], "json": args.get("json")}
            status = 404 if args["url"].endswith("/missing") else 200
            return {"status_code": status, "headers": [["Content-Type", "application/json"]],
                    "content": base64.b64encode(json.dumps(body).encode()).decode(), "url": args["url"]}
        if op.startswith("data_store."):
            ns = self.store.setdefault(args["namespace"], {})
            name = op.split(".", 1)[1]
            if name == "get":
                return ns.get(args["key"], args.get("default"))
            if name == "set":
                ns[args["key"]] = args["value"]
                return None
            if name == "list_keys":
                return sorted(ns)
            if name == "list_namespaces":
                return sorted(self.store)
            raise ValueError(f"unsupported {name}")
        raise ValueError(f"Unknown operation '{op}'.")


@pytest.fixture
async def sandbox_kernel(make_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., Kernel]]:
    """``kernel = make(**env)``: a kernel whose sandbox pool is closed after the test."""
    kernels: list[Kernel] = []

    def make(**env: str) -> Kernel:
        kernel = Kernel(make_settings(**env))
        get_pool(kernel)
        kernels.append(kernel)
        return kernel

    yield make
    for kernel in kernels:
        await kernel.close()


async def run(kernel: Kernel, code: str, broker: MemoryBroker | None = None, **kw: Any) -> Any:
    return await run_code(kernel, SandboxRequest(code=code, **kw), broker or MemoryBroker())


async def test_agent_returns_its_result_and_module_level_names_are_visible(sandbox_kernel: Any) -> None:
    kernel = sandbox_kernel()
    code = "BASE = 40\ndef helper(x):\n    return BASE + x\nasync def run(input_dict, tools):\n" \
           "    return {'answer': helper(input_dict['n']), 'tools': tools}\n"
    out = await run(kernel, code, input_dict={"n": 2}, tools={"http://mcp.test/mcp": ["add"]})
    assert out.error is None and out.limit is None
    assert out.result == {"answer": 42, "tools": {"http://mcp.test/mcp": ["add"]}}
    assert [e["type"] for e in out.trace] == ["agent_start", "agent_end"]
    assert out.trace[-1]["outcome"] == "success" and out.duration_ms > 0


async def test_code_saved_by_the_reference_runs_with_its_import_lines(sandbox_kernel: Any) -> None:
    kernel = sandbox_kernel()
    broker = MemoryBroker()
    code = '''
from agent_factory.remote_mcp_client import RemoteMCPClient
from services.llm_service import call_llm
import httpx

async def run(input_dict, tools):
    mcpc = {url: RemoteMCPClient(remote_url=url) for url in tools}
    http_client = httpx.AsyncClient()
    try:
        content, thoughts = await call_llm("openai", "gpt-4o", [{"role": "user", "content": input_dict["q"]}], {},
                                           user_id="someone-else")
        total = await mcpc["http://mcp.test/mcp"].call("add", a=1, b=2)
        return {"content": content, "thoughts": thoughts, "sum": total.data, "isError": total.is_error,
                "text": total.content[0].text, "window": await get_context_window("openai", "gpt-4o"),
                "tokens": count_tokens("hello world")}
    finally:
        await http_client.aclose()
'''
    out = await run(kernel, code, broker, input_dict={"q": "hi"}, tools={"http://mcp.test/mcp": ["add"]})
    assert out.error is None, out.error
    assert out.result == {"content": "echo:hi", "thoughts": "hmm", "sum": 3, "isError": False, "text": "3",
                          "window": 200000, "tokens": 4}
    llm_args = next(args for op, args in broker.ops if op == "llm.call")
    assert "user_id" not in llm_args  # the agent cannot pick whose account pays
    llm_event = next(e for e in out.trace if e["type"] == "llm_call")
    assert llm_event["provider"] == "openai" and llm_event["input_tokens"] == 3 and llm_event["error"] is None


async def test_missing_or_sync_run_gives_the_reference_error(sandbox_kernel: Any) -> None:
    kernel = sandbox_kernel()
    expected = "ValueError: Code did not define an 'async def run(input_dict, tools)' function."
    assert (await run(kernel, "x = 1")).error == expected
    assert (await run(kernel, "def run(input_dict, tools):\n    return 1")).error == expected


async def test_agent_exception_is_reported_with_an_error_event_naming_only_agent_lines(sandbox_kernel: Any) -> None:
    kernel = sandbox_kernel()
    out = await run(kernel, "async def run(input_dict, tools):\n    raise RuntimeError('boom')\n")
    assert out.error == "RuntimeError: boom" and out.result is None and out.limit is None
    error = next(e for e in out.trace if e["type"] == "error")
    assert error["exception_type"] == "RuntimeError" and error["message"] == "boom"
    assert '"<agent>", line 2' in error["traceback"] and "child.py" not in error["traceback"]
    assert out.trace[-1]["type"] == "agent_end" and out.trace[-1]["outcome"] == "error"
    syntax = await run(kernel, "async def run(input_dict, tools):\n    return (\n")
    assert syntax.error.startswith("SyntaxError: ")


async def test_platform_errors_reach_the_agent_as_status_and_detail(sandbox_kernel: Any) -> None:
    kernel = sandbox_kernel()
    code = '''
async def run(input_dict, tools):
    try:
        await call_llm("openai", "broke", [{"role": "user", "content": "x"}], {})
    except Exception as exc:
        return {"type": type(exc).__name__, "text": str(exc)}
'''
    out = await run(kernel, code)
    assert out.result == {"type": "HTTPException", "text": "402: Insufficient spend allowance to complete request"}
    uncaught = await run(kernel, code.replace("try:", "if True:").replace("except Exception as exc:", "if False:")
                         .replace("return {", "exc = None; return {"))
    assert uncaught.error == "HTTPException: 402: Insufficient spend allowance to complete request"


async def test_print_and_logging_become_redacted_trace_events_of_this_run(sandbox_kernel: Any) -> None:
    kernel = sandbox_kernel()
    broker = MemoryBroker()
    code = '''
import logging, sys
async def run(input_dict, tools):
    print("hello", input_dict["who"])
    print("my key is sk-proj-abcdefghijklmnopqrstuvwx", file=sys.stderr)
    logging.getLogger("agent").warning("careful %s", 1)
    return "ok"
'''
    out = await run(kernel, code, broker, input_dict={"who": "alice"}, agent_name="greeter", depth=1)
    stdout = [e for e in out.trace if e["type"] == "stdout"]
    assert [e["message"] for e in stdout] == ["hello alice", "my key is [REDACTED:openai_key]"]
    assert all(e["agent_name"] == "greeter" and e["source"] == "stdout" and e["depth"] == 2 for e in stdout)
    log = next(e for e in out.trace if e["type"] == "log")
    assert (log["level"], log["logger"], log["message"]) == ("WARNING", "agent", "careful 1")
    assert out.trace[0]["depth"] == 1 and out.trace[0]["ts"].endswith("+00:00")
    assert broker.events == out.trace  # streamed live, in order, to the host
    quiet = await run(kernel, code, MemoryBroker(), input_dict={"who": "bob"}, capture_trace=False)
    assert quiet.result == "ok" and quiet.trace == []


async def test_data_store_calls_are_synchronous_and_namespaced(sandbox_kernel: Any) -> None:
    kernel = sandbox_kernel()
    broker = MemoryBroker()
    code = '''
async def run(input_dict, tools):
    data_store.set("k", {"v": 1})
    other = data_store.use_namespace("notes")
    other.set("k", "two")
    return [data_store.get("k"), other.get("k"), data_store.get("nope", "dflt"), data_store.list_namespaces()]
'''
    out = await run(kernel, code, broker)
    assert out.result == [{"v": 1}, "two", "dflt", ["default", "notes"]]
    assert broker.store == {"default": {"k": {"v": 1}}, "notes": {"k": "two"}}


async def test_mcp_client_reports_unknown_tools_like_the_reference(sandbox_kernel: Any) -> None:
    kernel = sandbox_kernel()
    code = '''
async def run(input_dict, tools):
    client = RemoteMCPClient(remote_url="http://mcp.test/mcp")
    names = [t.name for t in await client.list_tools()]
    doc = client.get_tool_doc("add")
    await client.call("subtract", a=1)
    return names
'''
    out = await run(kernel, code)
    assert out.error == "ValueError: Tool 'subtract' not found on the server."


async def test_http_client_requests_are_made_by_the_host(sandbox_kernel: Any) -> None:
    kernel = sandbox_kernel()
    broker = MemoryBroker()
    code = '''
async def run(input_dict, tools):
    r = await http_client.get("http://api.test/items", params={"q": "x"})
    async with httpx.AsyncClient(base_url="http://api.test") as client:
        p = await client.post("/items", json={"a": 1})
        missing = await client.get("/missing")
    try:
        missing.raise_for_status()
    except httpx.HTTPStatusError as exc:
        problem = str(exc)
    return {"get": r.json(), "status": r.status_code, "ctype": r.headers["content-type"], "post": p.json(),
            "problem": problem}
'''
    out = await run(kernel, code, broker)
    assert out.error is None, out.error
    assert out.result["get"] == {"method": "GET", "url": "http://api.test/items", "params": {"q": "x"}, "json": None}
    assert out.result["post"]["json"] == {"a": 1} and out.result["post"]["method"] == "POST"
    assert out.result["status"] == 200 and out.result["ctype"] == "application/json"
    assert out.result["problem"] == "Client error '404 Not Found' for url 'http://api.test/missing'"


async def test_gofannon_client_calls_other_agents_through_the_host(sandbox_kernel: Any) -> None:
    kernel = sandbox_kernel()
    code = "async def run(input_dict, tools):\n" \
           "    return await gofannon_client.call(agent_name='helper', input_dict={'x': 1})\n"
    out = await run(kernel, code)
    assert out.result == {"called": "helper", "input": {"x": 1}}


async def test_agent_env_vars_are_visible_and_host_secrets_are_not(sandbox_kernel: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-host-secret-value-0123456789")
    monkeypatch.setenv("GOFANNON_SECRET_KEY", "host-secret")
    kernel = sandbox_kernel()
    code = "import os\nasync def run(input_dict, tools):\n    return dict(os.environ)\n"
    out = await run(kernel, code, env_vars={"MY_SETTING": "on"})
    env = out.result
    assert env["MY_SETTING"] == "on"
    assert "OPENAI_API_KEY" not in env and "GOFANNON_SECRET_KEY" not in env
    assert set(env) <= {"MY_SETTING", "PATH", "HOME", "TMPDIR", "LANG", "PWD"}


async def test_a_result_that_is_not_json_is_a_clear_error(sandbox_kernel: Any) -> None:
    kernel = sandbox_kernel()
    out = await run(kernel, "async def run(input_dict, tools):\n    return {1, 2}\n")
    assert out.error == "TypeError: The agent's result is not JSON-serialisable: Object of type set is not JSON " \
                        "serializable"


async def test_runs_never_share_a_process_or_its_state(sandbox_kernel: Any) -> None:
    kernel = sandbox_kernel()
    code = '''
import json, os
async def run(input_dict, tools):
    seen = getattr(json, "_leak", None)
    json._leak = input_dict["me"]
    with open("mark.txt", "a") as fh:
        fh.write(input_dict["me"])
    return {"seen": seen, "files": sorted(os.listdir("."))}
'''
    first = await run(kernel, code, input_dict={"me": "alice"})
    second = await run(kernel, code, input_dict={"me": "bob"})
    assert first.result == {"seen": None, "files": ["mark.txt"]}
    assert second.result == {"seen": None, "files": ["mark.txt"]}
    dice = "import random\nasync def run(input_dict, tools):\n    return [random.random() for _ in range(3)]\n"
    rolls = [(await run(kernel, dice)).result for _ in range(3)]
    assert len({tuple(r) for r in rolls}) == 3  # children forked from one template do not share random state


async def test_many_runs_at_once_each_get_their_own_answer(sandbox_kernel: Any) -> None:
    kernel = sandbox_kernel(GOFANNON_SANDBOX_POOL_SIZE="2")
    code = "import asyncio\nasync def run(input_dict, tools):\n    await asyncio.sleep(0.05)\n" \
           "    print(input_dict['i'])\n    return input_dict['i'] * 2\n"
    outs = await asyncio.gather(*(run(kernel, code, input_dict={"i": i}) for i in range(6)))
    assert [o.result for o in outs] == [0, 2, 4, 6, 8, 10]
    assert [next(e["message"] for e in o.trace if e["type"] == "stdout") for o in outs] == [str(i) for i in range(6)]


async def test_stopping_a_run_kills_its_process(sandbox_kernel: Any) -> None:
    kernel = sandbox_kernel()
    broker = MemoryBroker()
    code = '''
import asyncio
async def run(input_dict, tools):
    while True:
        await gofannon_client.call(agent_name="tick", input_dict={})
        await asyncio.sleep(0.02)
'''
    task = asyncio.ensure_future(run(kernel, code, broker))
    while len(broker.ops) < 3:
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.3)
    calls = len(broker.ops)
    await asyncio.sleep(0.3)
    assert len(broker.ops) == calls  # no more calls: the child is gone
    assert (await run(kernel, "async def run(input_dict, tools):\n    return 'next'\n")).result == "next"


async def test_a_run_past_its_wall_clock_limit_ends_with_a_timeout_error(sandbox_kernel: Any) -> None:
    kernel = sandbox_kernel()
    out = await run(kernel, "async def run(input_dict, tools):\n    while True:\n        pass\n", timeout=0.5)
    assert out.limit == "timeout"
    assert out.error == "Sandbox limit exceeded: timeout (the run took longer than 0.5 s)"
    assert [e["type"] for e in out.trace] == ["agent_start", "error", "agent_end"]


async def test_sandbox_setting_default_timeout_applies(sandbox_kernel: Any) -> None:
    kernel = sandbox_kernel(GOFANNON_SANDBOX_TIMEOUT_S="0.5")
    out = await run(kernel, "import asyncio\nasync def run(input_dict, tools):\n    await asyncio.sleep(30)\n")
    assert out.limit == "timeout"


def test_tier_choice_refuses_unknown_or_unavailable_tiers() -> None:
    with pytest.raises(RuntimeError, match="unknown sandbox tier 'jail'"):
        choose_tier("jail")
    assert choose_tier("rlimit") == "rlimit"
    auto = choose_tier("auto")
    assert auto in ("bwrap", "landlock", "rlimit")
    if tier_problem("bwrap") is None:
        assert auto == "bwrap"


async def test_health_reports_the_active_tier_and_a_bad_tier_stops_start_up(serve: Any) -> None:
    client = await serve()
    async with client.get("/health") as r:
        body = await r.json()
    assert body["sandbox"] == choose_tier("auto")
    with pytest.raises(RuntimeError, match="GOFANNON_SANDBOX_TIER=jail"):
        await serve(GOFANNON_SANDBOX_TIER="jail")


async def test_the_rlimit_tier_runs_agents_too(sandbox_kernel: Any) -> None:
    kernel = sandbox_kernel(GOFANNON_SANDBOX_TIER="rlimit")
    out = await run(kernel, "import os\nasync def run(input_dict, tools):\n    return os.getcwd()\n")
    assert out.error is None and os.path.basename(out.result).startswith("gofannon-sandbox-")


async def test_children_started_without_the_zygote_work_the_same(sandbox_kernel: Any) -> None:
    """The fallback path (a fresh interpreter per child) stays correct."""
    from gofannon.sandbox.pool import SandboxPool

    kernel = Kernel(sandbox_kernel().settings)
    kernel.sandbox_tier = choose_tier("auto")  # type: ignore[attr-defined]
    pool = kernel.component("sandbox.pool", lambda: SandboxPool(kernel.settings, kernel.sandbox_tier, mode="spawn"))
    try:
        assert pool.mode == "spawn"
        out = await run(kernel, "import os\nasync def run(input_dict, tools):\n    print('hi')\n    return os.getcwd()\n")
        assert out.error is None and out.trace[1]["message"] == "hi"
        fork = await run(kernel, "import os\nasync def run(input_dict, tools):\n    os.fork()\n")
        assert fork.limit == "processes"
    finally:
        await kernel.close()


async def test_a_run_without_a_sandbox_process_fails_cleanly(sandbox_kernel: Any) -> None:
    kernel = sandbox_kernel()
    get_pool(kernel).close()  # e.g. shutting down
    out = await run(kernel, "async def run(input_dict, tools):\n    return 1\n")
    assert out.result is None
    assert out.error == "SandboxError: no sandbox process could be started for this run (the sandbox pool is closed)"


async def test_disable_user_trace_drops_prints_and_logs_but_keeps_the_rest(sandbox_kernel: Any) -> None:
    kernel = sandbox_kernel(GOFANNON_DISABLE_USER_TRACE="1")
    code = "import logging\nasync def run(input_dict, tools):\n    print('hi')\n" \
           "    logging.getLogger('x').warning('w')\n    return 1\n"
    out = await run(kernel, code)
    assert out.result == 1 and [e["type"] for e in out.trace] == ["agent_start", "agent_end"]


async def test_runs_can_come_from_other_threads_with_their_own_event_loops(sandbox_kernel: Any) -> None:
    kernel = sandbox_kernel(GOFANNON_SANDBOX_POOL_SIZE="2")
    code = "async def run(input_dict, tools):\n    return input_dict['i'] + 100\n"

    def in_thread(i: int) -> Any:
        return asyncio.run(run(kernel, code, input_dict={"i": i})).result

    results = await asyncio.gather(*(asyncio.to_thread(in_thread, i) for i in range(3)),
                                   run(kernel, code, input_dict={"i": 9}))
    assert [r if isinstance(r, int) else r.result for r in results] == [100, 101, 102, 109]


async def test_a_sandbox_that_cannot_start_fails_the_run_with_a_reason(sandbox_kernel: Any) -> None:
    kernel = sandbox_kernel(GOFANNON_SANDBOX_OPEN_FILES="3")  # too few for the child's own pipes
    out = await run(kernel, "async def run(input_dict, tools):\n    return 1\n", timeout=20)
    assert out.result is None and out.limit is None
    assert out.error.startswith("SandboxError: no sandbox process could be started for this run (the sandbox child "
                                "failed to start: ")


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_a_runs_pipes_are_closed_once_so_a_descriptor_another_thread_opens_survives(loop_name: str) -> None:
    """uvloop's pipe transports close the descriptor themselves and then the file object they were given, which
    closed the number a second time: in between, another thread may have opened a descriptor under that number
    (the pool's spawner makes a child's pipes while runs finish), and that child's run then failed with EBADF.
    Here a thread opens and checks pipes while the loop opens and closes pipe transports."""
    import threading

    from gofannon.sandbox import _pipe_file

    stop = threading.Event()
    lost: list[str] = []

    def open_pipes() -> None:
        while not stop.is_set():
            a, b = os.pipe()
            try:
                for _ in range(20):
                    os.fstat(a)
                    os.fstat(b)
            except OSError as exc:
                lost.append(str(exc))
            for fd in (a, b):
                try:
                    os.close(fd)
                except OSError as exc:
                    lost.append(str(exc))

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(1500):
            r, w = os.pipe()
            reader, _ = await loop.connect_read_pipe(asyncio.Protocol, _pipe_file(loop, r, "rb"))
            writer, _ = await loop.connect_write_pipe(asyncio.Protocol, _pipe_file(loop, w, "wb"))
            reader.close()
            writer.close()
            await asyncio.sleep(0)

    thread = threading.Thread(target=open_pipes, daemon=True)
    thread.start()
    try:
        if loop_name == "uvloop":
            import uvloop

            uvloop.run(scenario())
        else:
            asyncio.run(scenario())
    finally:
        stop.set()
        thread.join(10)
    assert lost == []
