"""Hostile agent code: each attack is contained, answered with a clear error, and the next run works.

Attacks run through ``run_code`` (with the host-side test broker of test_sandbox.py) on the strongest tier this
machine offers and, where the attack does not depend on file-system confinement, on the ``rlimit`` tier too.
One attack also goes over HTTP to show the server keeps serving during and after.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from test_sandbox import MemoryBroker, run, sandbox_kernel  # noqa: F401 - sandbox_kernel is a fixture

from gofannon.sandbox.pool import TIERS as ALL_TIERS
from gofannon.sandbox.pool import choose_tier, tier_problem

STRONGEST = choose_tier("auto")
TIERS = [t for t in ALL_TIERS if tier_problem(t) is None]  # every tier this machine offers
CONFINING = [t for t in TIERS if t != "rlimit"]
NORMAL = "async def run(input_dict, tools):\n    return {'fine': input_dict.get('n', 0) + 1}\n"


@pytest.fixture(params=TIERS)
def tier(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def still_serving(kernel: Any) -> None:
    out = await run(kernel, NORMAL, input_dict={"n": 1})
    assert out.error is None and out.result == {"fine": 2}


async def test_reading_environment_variables_finds_no_secrets(sandbox_kernel: Any, tier: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-host-only-0123456789")
    monkeypatch.setenv("DATABASE_URL", "postgresql://admin:pw@db/prod")
    kernel = sandbox_kernel(GOFANNON_SANDBOX_TIER=tier)
    code = '''
import os
async def run(input_dict, tools):
    try:
        environ = open("/proc/self/environ", "rb").read().decode(errors="replace")
    except OSError as exc:
        environ = type(exc).__name__
    return {"env": dict(os.environ), "raw": environ}
'''
    out = await run(kernel, code)
    assert out.error is None, out.error
    text = repr(out.result)
    assert "sk-ant-host-only" not in text and "postgresql://" not in text and "GOFANNON" not in text
    await still_serving(kernel)


@pytest.mark.parametrize("confining", CONFINING or ["none"])
async def test_files_outside_the_sandbox_cannot_be_read(sandbox_kernel: Any, tmp_path: Path, confining: str) -> None:
    if confining == "none":
        pytest.skip("no file-system confining tier (bwrap, landlock) is available on this machine")
    kernel = sandbox_kernel(GOFANNON_SANDBOX_TIER=confining)
    data_dir = Path(kernel.settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "gofannon.db").write_text("the users' secrets")
    repo = Path(__file__).resolve().parent.parent
    targets = [str(data_dir / "gofannon.db"), "/etc/shadow", "/etc/passwd", "/root/.bash_history",
               str(repo / "gofannon" / "settings.py"), str(tmp_path)]
    code = f'''
import os
async def run(input_dict, tools):
    got = {{}}
    for path in {targets!r}:
        try:
            if os.path.isdir(path):
                got[path] = os.listdir(path)
            else:
                with open(path) as fh:
                    got[path] = fh.read(100)
        except OSError as exc:
            got[path] = type(exc).__name__
    try:
        got["/"] = sorted(os.listdir("/"))
    except OSError as exc:
        got["/"] = type(exc).__name__
    return got
'''
    out = await run(kernel, code)
    assert out.error is None, out.error
    for path in targets:
        assert out.result[path] in ("FileNotFoundError", "PermissionError"), (path, out.result[path])
    assert "work" not in out.result["/"] and "home" not in out.result["/"]
    await still_serving(kernel)


@pytest.mark.parametrize("confining", CONFINING or ["none"])
async def test_runs_in_flight_cannot_read_each_others_files(sandbox_kernel: Any, confining: str) -> None:
    if confining == "none":
        pytest.skip("no file-system confining tier (bwrap, landlock) is available on this machine")
    kernel = sandbox_kernel(GOFANNON_SANDBOX_TIER=confining, GOFANNON_SANDBOX_POOL_SIZE="2")
    release = asyncio.Event()
    where: dict[str, str] = {}

    class Holder(MemoryBroker):
        async def handle(self, op: str, args: dict[str, Any]) -> Any:
            if op == "agents.call":
                where["path"] = args["input_dict"]["path"]
                await release.wait()
                return None
            return await super().handle(op, args)

    victim_code = '''
import os
async def run(input_dict, tools):
    with open("secret.txt", "w") as fh:
        fh.write("alice's data")
    await gofannon_client.call(agent_name="wait", input_dict={"path": os.path.abspath("secret.txt")})
    return "done"
'''
    victim = asyncio.ensure_future(run(kernel, victim_code, Holder()))
    while "path" not in where:
        await asyncio.sleep(0.01)
    thief_code = f'''
import os
async def run(input_dict, tools):
    got = {{}}
    for name, attempt in (("file", lambda: open({where["path"]!r}).read()),
                          ("dir", lambda: os.listdir({os.path.dirname(where["path"])!r}))):
        try:
            got[name] = attempt()
        except OSError as exc:
            got[name] = type(exc).__name__
    return got
'''
    thief = await run(kernel, thief_code)
    release.set()
    assert (await victim).result == "done"
    assert thief.error is None, thief.error
    assert thief.result["file"] in ("FileNotFoundError", "PermissionError")
    assert thief.result["dir"] in ("FileNotFoundError", "PermissionError")


async def test_the_agent_cannot_open_network_connections(sandbox_kernel: Any, tier: str) -> None:
    kernel = sandbox_kernel(GOFANNON_SANDBOX_TIER=tier)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    code = f'''
import socket
async def run(input_dict, tools):
    results = []
    for attempt in (lambda: socket.create_connection(("127.0.0.1", {port}), timeout=1),
                    lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
                    lambda: socket.socket(socket.AF_UNIX)):
        try:
            attempt()
            results.append("connected")
        except OSError as exc:
            results.append(type(exc).__name__)
    return results
'''
    try:
        out = await run(kernel, code)
    finally:
        listener.close()
    assert out.error is None, out.error
    assert "connected" not in out.result
    await still_serving(kernel)


async def test_process_creation_is_refused(sandbox_kernel: Any, tier: str) -> None:
    kernel = sandbox_kernel(GOFANNON_SANDBOX_TIER=tier)
    fork = await run(kernel, "import os\nasync def run(input_dict, tools):\n    while True:\n        os.fork()\n")
    assert fork.limit == "processes"
    assert fork.error.startswith("Sandbox limit exceeded: processes (agent code may not create processes)")
    code = '''
import ctypes, subprocess
async def run(input_dict, tools):
    try:
        subprocess.run(["/bin/true"])
        spawned = "ran"
    except OSError as exc:
        spawned = type(exc).__name__
    libc = ctypes.CDLL(None, use_errno=True)
    return {"subprocess": spawned, "raw_fork": [libc.fork() for _ in range(50)], "errno": ctypes.get_errno()}
'''
    raw = await run(kernel, code)
    assert raw.error is None, raw.error
    assert raw.result["subprocess"] == "ProcessCreationBlocked"
    assert set(raw.result["raw_fork"]) == {-1} and raw.result["errno"] == 1  # EPERM from the seccomp filter
    await still_serving(kernel)


async def test_the_agent_cannot_signal_its_parent_or_lift_its_limits(sandbox_kernel: Any, tier: str) -> None:
    kernel = sandbox_kernel(GOFANNON_SANDBOX_TIER=tier)
    code = '''
import os, resource, signal, stat
async def run(input_dict, tools):
    out = {}
    for name, attempt in (("kill_parent", lambda: os.kill(os.getppid(), signal.SIGKILL)),
                          ("kill_all", lambda: os.kill(-1, signal.SIGKILL)),
                          ("raise_memory", lambda: resource.setrlimit(resource.RLIMIT_AS, (-1, -1))),
                          ("block_device", lambda: os.mknod("disk", 0o600 | stat.S_IFBLK, os.makedev(8, 0))),
                          ("chroot", lambda: os.chroot("/")),
                          ("read_others_files", lambda: open("/proc/1/environ").read())):
        try:
            attempt()
            out[name] = "done"
        except (OSError, ValueError) as exc:
            out[name] = str(exc)
    return out
'''
    out = await run(kernel, code)
    assert out.error is None, out.error
    result = out.result
    assert result.pop("kill_parent") == result.pop("kill_all") == "[Errno 1] Operation not permitted"
    assert result.pop("raise_memory") == "not allowed to raise maximum limit"
    assert "Operation not permitted" in result.pop("block_device")
    assert "Operation not permitted" in result.pop("chroot")
    assert result.pop("read_others_files") != "done"
    await still_serving(kernel)


async def test_allocating_without_end_hits_the_memory_limit(sandbox_kernel: Any, tier: str) -> None:
    kernel = sandbox_kernel(GOFANNON_SANDBOX_TIER=tier, GOFANNON_SANDBOX_MEMORY_MB="200")
    code = "async def run(input_dict, tools):\n    hog = []\n    while True:\n        hog.append(bytearray(10**7))\n"
    out = await run(kernel, code)
    assert out.limit == "memory"
    assert out.error.startswith("Sandbox limit exceeded: memory (the run needed more than 200 MB)")
    await still_serving(kernel)


async def test_looping_forever_ends_at_the_timeout(sandbox_kernel: Any, tier: str) -> None:
    kernel = sandbox_kernel(GOFANNON_SANDBOX_TIER=tier, GOFANNON_SANDBOX_TIMEOUT_S="1")
    out = await run(kernel, "async def run(input_dict, tools):\n    while True:\n        pass\n")
    assert out.limit == "timeout" and "timeout" in out.error
    await still_serving(kernel)


async def test_burning_cpu_hits_the_cpu_limit(sandbox_kernel: Any) -> None:
    kernel = sandbox_kernel(GOFANNON_SANDBOX_CPU_S="1")
    out = await run(kernel, "async def run(input_dict, tools):\n    while True:\n        pass\n", timeout=30)
    assert out.limit == "cpu"
    assert out.error == "Sandbox limit exceeded: cpu (more than 1 s of CPU time)"
    await still_serving(kernel)


async def test_writing_a_huge_file_hits_the_file_size_limit(sandbox_kernel: Any, tier: str) -> None:
    kernel = sandbox_kernel(GOFANNON_SANDBOX_TIER=tier, GOFANNON_SANDBOX_FILE_MB="4")
    code = '''
async def run(input_dict, tools):
    with open("big.bin", "wb") as fh:
        while True:
            fh.write(b"x" * 1048576)
'''
    out = await run(kernel, code)
    assert out.limit == "file size"
    assert out.error.startswith("Sandbox limit exceeded: file size (a file grew past 4 MB")
    await still_serving(kernel)


async def test_opening_files_without_end_hits_the_open_files_limit(sandbox_kernel: Any, tier: str) -> None:
    kernel = sandbox_kernel(GOFANNON_SANDBOX_TIER=tier, GOFANNON_SANDBOX_OPEN_FILES="64")
    code = "async def run(input_dict, tools):\n    held = []\n    while True:\n        held.append(open('/dev/null'))\n"
    out = await run(kernel, code)
    assert out.limit == "open files"
    assert out.error.startswith("Sandbox limit exceeded: open files (more than 64 open files)")
    await still_serving(kernel)


async def test_flooding_stdout_is_capped(sandbox_kernel: Any, tier: str) -> None:
    kernel = sandbox_kernel(GOFANNON_SANDBOX_TIER=tier)
    lines = await run(kernel, "async def run(input_dict, tools):\n    for i in range(5000):\n        print(i)\n"
                              "    return 'done'\n")
    assert lines.result == "done"
    assert len(lines.trace) == 2000
    assert lines.trace[-2]["type"] == "trace_truncated" and lines.trace[-1]["type"] == "agent_end"
    endless = await run(kernel, "async def run(input_dict, tools):\n    while True:\n        print('x' * 4000)\n")
    assert endless.limit == "output"
    assert endless.error == "Sandbox limit exceeded: output (the run printed more than 8 MB)"
    assert len(endless.trace) <= 2000
    await still_serving(kernel)


async def test_poking_memory_with_ctypes_only_crashes_its_own_process(sandbox_kernel: Any, tier: str) -> None:
    kernel = sandbox_kernel(GOFANNON_SANDBOX_TIER=tier)
    code = "import ctypes\nasync def run(input_dict, tools):\n    return ctypes.string_at(1, 64)\n"
    out = await run(kernel, code)
    assert out.limit == "crash"
    assert out.error == "SandboxError: the agent's process crashed (SIGSEGV)"
    smash = "import ctypes\nasync def run(input_dict, tools):\n    ctypes.memset(ctypes.c_void_p(4096), 0, 1 << 20)\n"
    assert (await run(kernel, smash)).limit == "crash"
    await still_serving(kernel)


async def test_attacks_in_flight_do_not_stop_other_runs(sandbox_kernel: Any) -> None:
    kernel = sandbox_kernel(GOFANNON_SANDBOX_POOL_SIZE="2", GOFANNON_SANDBOX_TIMEOUT_S="3")
    hog = asyncio.ensure_future(run(kernel, "async def run(input_dict, tools):\n    while True:\n        pass\n"))
    bomb = asyncio.ensure_future(run(kernel, "import os\nasync def run(input_dict, tools):\n    while True:\n"
                                             "        try:\n            os.fork()\n        except OSError:\n"
                                             "            pass\n"))
    for n in range(3):
        out = await run(kernel, NORMAL, input_dict={"n": n})
        assert out.result == {"fine": n + 1}
    assert (await hog).limit == "timeout" and (await bomb).limit == "timeout"


async def test_over_http_an_attacking_agent_fails_cleanly_and_the_server_keeps_serving(serve: Any) -> None:
    client = await serve(GOFANNON_SANDBOX_MEMORY_MB="200")
    await client.login("alice")
    body = {"code": "async def run(input_dict, tools):\n    hog = []\n    while True:\n"
                    "        hog.append(bytearray(10**7))\n", "inputDict": {}, "tools": {}}
    async with client.post("/agents/run-code", json=body) as r:
        if r.status == 404:
            pytest.skip("POST /agents/run-code is not wired in this build")
        assert r.status == 200, await r.text()
        answer = await r.json()
    assert answer["result"] is None
    assert answer["error"].startswith("Sandbox limit exceeded: memory")
    body["code"] = NORMAL
    async with client.post("/agents/run-code", json=body) as r:
        assert r.status == 200
        assert (await r.json())["result"] == {"fine": 1}
    async with client.get("/health") as r:
        assert r.status == 200


async def test_over_http_the_server_keeps_serving_while_an_agent_loops_forever(serve: Any) -> None:
    client = await serve(GOFANNON_SANDBOX_TIMEOUT_S="3")
    await client.login("alice")
    hog_body = {"code": "async def run(input_dict, tools):\n    while True:\n        pass\n", "inputDict": {},
                "tools": {}}

    async def hog() -> dict[str, Any]:
        async with client.post("/agents/run-code", json=hog_body) as r:
            assert r.status == 200, await r.text()
            return dict(await r.json())

    hogging = asyncio.ensure_future(hog())
    for n in range(3):
        async with client.post("/agents/run-code", json={"code": NORMAL, "inputDict": {"n": n}, "tools": {}}) as r:
            assert r.status == 200
            assert (await r.json())["result"] == {"fine": n + 1}
        async with client.get("/health") as r:
            assert r.status == 200
    answer = await hogging
    assert answer["result"] is None
    assert answer["error"] == "Sandbox limit exceeded: timeout (the run took longer than 3 s)"
