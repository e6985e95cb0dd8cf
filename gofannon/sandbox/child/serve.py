"""One run in the child: get ready, take the request, run the agent, report, exit.

``serve_one`` is the child's whole life (lifecycle in the package docstring); ``warm_up`` is what a process
imports and exercises once, before it waits (in the pool, or in the zygote for all its children). The run's
outcome maps the limits the process hit (``MemoryError``, ``EMFILE``, ``EFBIG``, the process-creation guard,
SIGXCPU) to the ``limit`` the host reports. Standard library only.
"""

import asyncio
import builtins
import errno
import json
import os
import signal
import sys
import traceback

from .channel import EXIT_CPU, MAX_MESSAGE, MAX_RESULT_BYTES, Writer, read_frame
from .confine import ProcessCreationBlocked, confine, libc
from .runtime import Runtime, build_api, capture_output, install_modules


def _limit_of(error: BaseException) -> str | None:
    """The limit behind ``error`` or anything in its chain of causes, if any."""
    seen = set()
    exc: BaseException | None = error
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, MemoryError):
            return "memory"
        if isinstance(exc, ProcessCreationBlocked):
            return "processes"
        if isinstance(exc, OSError):
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                return "open files"
            if exc.errno in (errno.EFBIG, errno.ENOSPC):
                return "file size"
        exc = exc.__cause__ or exc.__context__
    return None


def _limit_message(limit: str, limits: dict, exc: BaseException) -> str:
    what = {
        "memory": f"memory (the run needed more than {limits['memory_mb']} MB)",
        "open files": f"open files (more than {limits['open_files']} open files)",
        "file size": f"file size (a file grew past {limits['file_mb']} MB or the sandbox disk is full)",
        "processes": "processes (agent code may not create processes)",
    }[limit]
    return f"Sandbox limit exceeded: {what} [{type(exc).__name__}]"


def _send_cpu_limit(out: Writer, limits: dict) -> None:
    """SIGXCPU handler. If a frame is half-written the exit code alone tells the host."""
    if out.lock.acquire(blocking=False):
        out.lock.release()
        out.send({"t": "done", "result": None, "limit": "cpu",
                  "error": f"Sandbox limit exceeded: cpu (more than {limits['cpu_s']} s of CPU time)"})
    os._exit(EXIT_CPU)


def _agent_namespace(api: dict) -> dict:
    """The ONE namespace the agent's code runs in: its module-level names are visible in ``run``."""
    return {"__name__": "__agent__", "__builtins__": builtins, **api}


async def _main(rt: Runtime, req: dict, limits: dict) -> dict:
    await rt.listen()
    api = build_api(rt)
    install_modules(api)
    ns = _agent_namespace(api)
    try:
        code = compile(req.get("code") or "", "<agent>", "exec")
        exec(code, ns)
        run = ns.get("run")
        if run is None or not asyncio.iscoroutinefunction(run):
            raise ValueError("Code did not define an 'async def run(input_dict, tools)' function.")
        result = await run(input_dict=req.get("input_dict"), tools=req.get("tools") or {})
    except BaseException as exc:
        return _failure(rt, exc, limits)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    return {"t": "done", "result": result, "error": None, "limit": None}


def _failure(rt: Runtime, exc: BaseException, limits: dict) -> dict:
    limit = _limit_of(exc)
    if limit is not None:
        error = _limit_message(limit, limits, exc)
    else:
        error = f"{type(exc).__name__}: {exc}"
    # only the agent's own frames: the sandbox's internals are no business of the trace reader
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<agent>"]
    tb = "".join(traceback.format_list(frames)) + "".join(traceback.format_exception_only(type(exc), exc))
    return {"t": "done", "result": None, "error": error, "limit": limit,
            "exception_type": type(exc).__name__, "message": str(exc), "traceback": tb[-MAX_MESSAGE:]}


def warm_up() -> None:
    """Import everything a run needs (done once: in the pool's waiting child, or in the zygote)."""
    import re  # noqa: F401 - warm-up import
    import urllib.parse  # noqa: F401 - warm-up import

    async def noop() -> None:
        return None

    asyncio.run(noop())  # first-call costs of the event loop machinery are paid here, not by the run
    libc()


def _rehearse(cfg: dict) -> None:
    """A dry run of a run's machinery before announcing readiness.

    A forked child shares the zygote's pages until it writes them (reference counts count as writes); touching
    what a run touches now moves those copy-on-write faults out of the run's critical path.
    """
    rt = Runtime(Writer(-1), -1, -1, {"capture_trace": False})
    api = build_api(rt)

    async def rehearsal() -> None:
        ns = _agent_namespace(api)
        exec(compile("async def run(input_dict, tools):\n    return {'k': [1, 'x']}\n", "<agent>", "exec"), ns)
        json.dumps(await ns["run"](input_dict={}, tools={}))

    asyncio.run(rehearsal())
    json.loads(json.dumps({"code": "x", "input_dict": {"a": [1, 2.5, None, True]}}))


def serve_one(cfg: dict) -> None:
    """Confine this process, announce readiness, run the one request, report, exit."""
    out = Writer(int(cfg["out"]))
    limits = cfg["limits"]
    signal.signal(signal.SIGXCPU, lambda *_: _send_cpu_limit(out, limits))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write raises EFBIG, reported as "file size"
    confine(cfg)
    if cfg.get("rehearse", True):
        _rehearse(cfg)
    out.send({"t": "ready", "pid": os.getpid()})
    try:
        req = read_frame(0)
    except EOFError:
        os._exit(0)
    env = req.get("env_vars") or {}
    os.environ.update({str(k): str(v) for k, v in env.items()})
    rt = Runtime(out, int(cfg["sync_out"]), int(cfg["sync_in"]), req)
    capture_output(rt)
    try:
        done = asyncio.run(_main(rt, req, limits))
    except BaseException as exc:
        done = _failure(rt, exc, limits)
    try:
        frame = json.dumps(done, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        done = _failure(rt, TypeError(f"The agent's result is not JSON-serialisable: {exc}"), limits)
        frame = json.dumps(done).encode()
    except MemoryError:
        done = {"t": "done", "result": None, "limit": "memory",
                "error": f"Sandbox limit exceeded: memory (the run needed more than {limits['memory_mb']} MB)"}
        frame = json.dumps(done).encode()
    if len(frame) > MAX_RESULT_BYTES:
        frame = json.dumps({"t": "done", "result": None, "limit": "output",
                            "error": f"Sandbox limit exceeded: output (the result is larger than "
                                     f"{MAX_RESULT_BYTES // (1024 * 1024)} MB)"}).encode()
    out.send_encoded(frame)
    os._exit(0)

