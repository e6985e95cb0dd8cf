"""Run agent code in a confined, pre-forked, single-use OS process (never in the API process).

Interface for the routes and the host-side broker (docs/sandbox.md has the whole story)::

    outcome = await run_code(kernel, SandboxRequest(code=..., input_dict=..., tools=...), broker)

``SandboxRequest``
    ``code``, ``input_dict`` (any JSON), ``tools`` ({mcp_url: [names]}), ``env_vars`` (overlay for the child's
    ``os.environ``), ``agent_name`` (trace label, default ``"sandbox_agent"``), ``agent_id``, ``depth`` (0 = top),
    ``run_id``, ``timeout`` (seconds; default ``GOFANNON_SANDBOX_TIMEOUT_S``), ``capture_trace``, ``called_by``.

``Broker`` (the host side; implemented by ``gofannon.services.broker`` as the calling user)
    ``await handle(op, args)`` answers the child's requests. A raised exception reaches the agent as the same
    exception type (builtins) or a same-named class, with ``str(exc)`` as message; a ``GofannonError`` reaches it as
    ``HTTPException`` whose str is ``"<status>: <detail>"``. Ops and their args:

    - ``llm.call`` {provider, model, messages, parameters, tools, timeout, **kw} → {content, thoughts} plus,
      optionally, ``input_tokens``, ``output_tokens``, ``cost_usd`` (shown in the ``llm_call`` trace event)
    - ``llm.context_window`` {provider, model} → int
    - ``agents.call`` {agent_name, input_dict} → the called agent's result
    - ``mcp.list_tools`` {url, auth_token} → [{name, description, inputSchema}]
    - ``mcp.call_tool`` {url, name, arguments, auth_token} → {content, structuredContent, isError}
    - ``http.request`` {method, url, headers, params, content (base64, optional) | json (optional), timeout,
      follow_redirects} → {status_code, headers, content (base64), url}
    - ``data_store.<op>`` {namespace, ...} answered synchronously for the agent: get {key, default} → value or
      default; set {key, value, metadata}; delete {key} → bool; delete_many {keys} → int; list_keys {prefix} →
      [str]; list_namespaces {} → [str]; get_all {} → {key: value}; get_many {keys} → {key: value};
      set_many {items, metadata} → int; clear {} → int.

    ``await on_event(event)`` receives every trace event of this run live (for SSE), already redacted and capped.
    Events of nested runs (``agents.call``) are the broker's to forward: ``run_code`` collects only its own child's.

``SandboxOutcome``
    ``result``; ``error`` (``"<ExcType>: <msg>"`` or ``"Sandbox limit exceeded: <limit> (...)"``, None on success);
    ``trace`` (wire §4.3 events: agent_start, stdout, log, llm_call, error, agent_end, trace_truncated; at most
    2000 events, messages at most 4096 chars; empty unless ``capture_trace``); ``limit`` (None, "timeout",
    "memory", "file size", "open files", "cpu", "processes", "output" or "crash"); ``duration_ms``.

Cancelling the task awaiting ``run_code`` kills the child (run stop). Any number of runs may be in flight at once,
from any event loop or thread.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from gofannon.errors import GofannonError
from gofannon.observability import redact
from gofannon.sandbox.child.channel import EXIT_CPU as _EXIT_CPU
from gofannon.sandbox.child.channel import EXIT_OUTPUT as _EXIT_OUTPUT
from gofannon.sandbox.child.channel import HEADER as _HEADER
from gofannon.sandbox.child.channel import MAX_EVENTS, MAX_MESSAGE

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel
    from gofannon.sandbox.pool import Child

__all__ = ["MAX_EVENTS", "MAX_MESSAGE", "Broker", "SandboxOutcome", "SandboxRequest", "run_code"]

MAX_FRAME = 48 * 1024 * 1024
MAX_CONCURRENT_OPS = 32  # ops of one run the host works on at once; more wait their turn
_USE_SETTING = -1.0


class SandboxUnavailable(Exception):
    """The pool could not provide a child (start-up failure, pool closed): the run fails, the server does not."""


@dataclass
class SandboxRequest:
    code: str
    input_dict: Any = field(default_factory=dict)
    tools: dict[str, list[str]] = field(default_factory=dict)
    env_vars: dict[str, str] = field(default_factory=dict)
    agent_name: str = "sandbox_agent"
    agent_id: str | None = None
    depth: int = 0
    run_id: str | None = None
    timeout: float | None = _USE_SETTING  # seconds; the default means GOFANNON_SANDBOX_TIMEOUT_S, None = no limit
    capture_trace: bool = True
    called_by: str | None = None


@dataclass
class SandboxOutcome:
    result: Any = None
    error: str | None = None
    trace: list[dict[str, Any]] = field(default_factory=list)
    limit: str | None = None
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


class Broker(Protocol):
    async def handle(self, op: str, args: dict[str, Any]) -> Any: ...

    async def on_event(self, event: dict[str, Any]) -> None: ...


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class _Trace:
    """The run's trace: capped, redacted, forwarded live to the broker in order."""

    def __init__(self, req: SandboxRequest, broker: Broker) -> None:
        self.enabled = req.capture_trace
        self.broker = broker
        self.events: list[dict[str, Any]] = []
        self.dropped = 0
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._pump = asyncio.ensure_future(self._forward()) if self.enabled else None

    def add(self, event: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if len(self.events) >= MAX_EVENTS:
            self.dropped += 1
            return
        for key in ("message", "traceback", "result_preview"):
            value = event.get(key)
            if isinstance(value, str):
                event[key] = redact(value[:MAX_MESSAGE])
        self.events.append(event)
        self._queue.put_nowait(event)

    def add_final(self, event: dict[str, Any]) -> None:
        """agent_end always fits: it replaces the marker slot when the trace overflowed."""
        if not self.enabled:
            return
        if self.dropped or len(self.events) >= MAX_EVENTS:
            marker = {"type": "trace_truncated", "ts": _now(), "agent_name": event["agent_name"],
                      "depth": event["depth"], "dropped_events": self.dropped, "source": "system"}
            del self.events[MAX_EVENTS - 2:]
            self.events.append(marker)
            self._queue.put_nowait(marker)
        self.events.append(event)
        self._queue.put_nowait(event)

    async def _forward(self) -> None:
        while True:
            event = await self._queue.get()
            if event is None:
                return
            try:
                await self.broker.on_event(event)
            except Exception:
                pass

    async def close(self) -> None:
        if self._pump is not None:
            self._queue.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.shield(self._pump), 5)
            except (TimeoutError, asyncio.CancelledError):
                self._pump.cancel()


class _FrameReader(asyncio.Protocol):
    """Splits a pipe's bytes into frames; calls ``on_frame`` for each and ``on_eof`` at the end."""

    def __init__(self, on_frame: Any, on_eof: Any) -> None:
        self.buf = bytearray()
        self.on_frame = on_frame
        self.on_eof = on_eof

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 4:
            (size,) = _HEADER.unpack_from(self.buf)
            if size > MAX_FRAME:
                self.on_eof("output")
                return
            if len(self.buf) < 4 + size:
                return
            raw = bytes(self.buf[4:4 + size])
            del self.buf[:4 + size]
            try:
                frame = json.loads(raw)
            except ValueError:
                self.on_eof("protocol")
                return
            self.on_frame(frame)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.on_eof(None)


class _Tail(asyncio.Protocol):
    """Keeps the last bytes of the child's raw stdout/stderr (crash messages), discards the rest."""

    def __init__(self) -> None:
        self.data = bytearray()

    def data_received(self, data: bytes) -> None:
        self.data += data
        if len(self.data) > 8192:
            del self.data[:-4096]

    def text(self) -> str:
        return self.data.decode(errors="replace")[-2000:]


def _same(proto: asyncio.Protocol) -> asyncio.Protocol:
    return proto


def _frame(obj: Any) -> bytes:
    data = json.dumps(obj, separators=(",", ":"), default=str).encode()
    return _HEADER.pack(len(data)) + data


def _error_reply(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, GofannonError):
        return {"ok": False, "etype": "HTTPException", "error": str(exc)}
    if isinstance(exc, asyncio.TimeoutError):
        return {"ok": False, "etype": "TimeoutError", "error": str(exc) or "the operation timed out"}
    return {"ok": False, "etype": type(exc).__name__, "error": str(exc)}


def _pipe_file(loop: asyncio.AbstractEventLoop, fd: int, mode: str) -> Any:
    """The file object a pipe transport is made from, such that ``fd`` is closed exactly once, on either loop.

    asyncio's transports close the file object they were given. uvloop's close the descriptor itself (libuv) and
    then the file object as well, which closes the number a second time: by then it may be a new descriptor that
    another thread just opened (the pool's spawner makes a child's pipes while runs finish), and that child's
    pipe is gone. On uvloop the file object therefore does not own the descriptor."""
    libuv_closes = type(loop).__module__.partition(".")[0] == "uvloop"
    return os.fdopen(fd, mode, buffering=0, closefd=not libuv_closes)


class _Session:
    """One run against one child: the request, the op multiplexer, the sync pipe, the outcome."""

    def __init__(self, child: "Child", req: SandboxRequest, broker: Broker, trace: _Trace, limits: dict[str, Any]):
        self.child = child
        self.req = req
        self.broker = broker
        self.trace = trace
        self.limits = limits
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        self.ops: set[asyncio.Task[Any]] = set()
        self.transports: list[asyncio.BaseTransport] = []
        self.tail = _Tail()
        self.op_slots = asyncio.Semaphore(MAX_CONCURRENT_OPS)

    async def open(self) -> None:
        c = self.child
        loop = self.loop
        readers: list[tuple[int, asyncio.Protocol]] = [
            (c.from_child, _FrameReader(self._on_frame, self._on_eof)),
            (c.sync_requests, _FrameReader(self._on_sync, lambda _r: None)),
            (c.output, self.tail),
        ]
        for fd, proto in readers:
            c.closed.add(fd)
            reader, _ = await loop.connect_read_pipe(functools.partial(_same, proto), _pipe_file(loop, fd, "rb"))
            self.transports.append(reader)
        self.writers: dict[int, asyncio.WriteTransport] = {}
        for fd in (c.to_child, c.sync_replies):
            c.closed.add(fd)
            writer, _ = await loop.connect_write_pipe(asyncio.Protocol, _pipe_file(loop, fd, "wb"))
            self.transports.append(writer)
            self.writers[fd] = writer

    def send(self, fd: int, obj: Any) -> None:
        tr = self.writers[fd]
        if not tr.is_closing():
            tr.write(_frame(obj))

    def start(self, user_trace: bool = True) -> None:
        req = self.req
        self.send(self.child.to_child, {
            "user_trace": user_trace,
            "code": req.code, "input_dict": req.input_dict, "tools": req.tools or {},
            "env_vars": {str(k): str(v) for k, v in (req.env_vars or {}).items()},
            "agent_name": req.agent_name or "sandbox_agent", "agent_id": req.agent_id, "depth": req.depth,
            "run_id": req.run_id, "capture_trace": req.capture_trace,
        })

    # -- frames from the child ---------------------------------------------------------------------------------
    def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("t")
        if kind == "event":
            event = frame.get("event")
            if isinstance(event, dict):
                self.trace.add(event)
        elif kind == "op":
            task = self.loop.create_task(self._serve(frame, self.child.to_child))
            self.ops.add(task)
            task.add_done_callback(self.ops.discard)
        elif kind == "done":
            if not self.done.done():
                self.done.set_result(frame)

    def _on_sync(self, frame: dict[str, Any]) -> None:
        task = self.loop.create_task(self._serve(frame, self.child.sync_replies))
        self.ops.add(task)
        task.add_done_callback(self.ops.discard)

    async def _serve(self, frame: dict[str, Any], reply_fd: int) -> None:
        op = str(frame.get("op") or "")
        raw_args = frame.get("args")
        args: dict[str, Any] = raw_args if isinstance(raw_args, dict) else {}
        try:
            async with self.op_slots:
                value = await self.broker.handle(op, args)
            reply: dict[str, Any] = {"ok": True, "value": value}
            _frame(reply)  # fail here, as the op, when the broker's answer is not JSON
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            reply = _error_reply(exc)
        reply.update(t="reply", id=frame.get("id"))
        self.send(reply_fd, reply)

    def _on_eof(self, reason: str | None) -> None:
        if self.done.done():
            return
        if reason is not None:
            self.done.set_result({"t": "lost", "reason": reason})
            return
        self.loop.create_task(self._child_gone())

    async def _child_gone(self) -> None:
        """The channel closed without a ``done`` frame: explain from the exit status."""
        try:
            code = await self.loop.run_in_executor(None, self.child.proc.wait, 5)
        except Exception:
            code = None
        if not self.done.done():
            self.done.set_result({"t": "lost", "reason": None, "returncode": code})

    async def close(self) -> None:
        for task in list(self.ops):
            task.cancel()
        for tr in self.transports:
            tr.close()

    # -- outcome --------------------------------------------------------------------------------------------------
    def outcome_of(self, frame: dict[str, Any]) -> tuple[Any, str | None, str | None, dict[str, Any] | None]:
        """(result, error, limit, error-event fields) from the child's last word."""
        if frame.get("t") == "done":
            error = frame.get("error")
            details = None
            if error:
                details = {"exception_type": frame.get("exception_type") or "SandboxLimit",
                           "message": frame.get("message") or error, "traceback": frame.get("traceback")}
            return frame.get("result"), error, frame.get("limit"), details
        reason = frame.get("reason")
        if reason == "output":
            limit, error = "output", f"Sandbox limit exceeded: output (a message larger than {MAX_FRAME >> 20} MB)"
        elif reason == "protocol":
            limit, error = "crash", "SandboxError: the sandbox process sent a malformed message and was stopped"
        else:
            limit, error = _explain_exit(frame.get("returncode"), self.limits, self.tail.text())
        return None, error, limit, {"exception_type": "SandboxError", "message": error, "traceback": None}


def _explain_exit(code: int | None, limits: dict[str, Any], tail: str) -> tuple[str, str]:
    sig = None
    if code is not None and code < 0:
        sig = -code
    elif code is not None and code > 128:
        sig = code - 128  # bubblewrap reports a signalled child as 128 + signal
    if code == _EXIT_CPU or sig == signal.SIGXCPU:
        return "cpu", f"Sandbox limit exceeded: cpu (more than {limits['cpu_s']} s of CPU time)"
    if code == _EXIT_OUTPUT:
        return "output", "Sandbox limit exceeded: output"
    if sig == signal.SIGXFSZ:
        return "file size", f"Sandbox limit exceeded: file size (a file grew past {limits['file_mb']} MB)"
    if "MemoryError" in tail or "Cannot allocate memory" in tail:
        return "memory", f"Sandbox limit exceeded: memory (the run needed more than {limits['memory_mb']} MB)"
    if sig is not None:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return "crash", f"SandboxError: the agent's process crashed ({name})"
    return "crash", f"SandboxError: the agent's process exited unexpectedly (exit status {code})"


def _user_trace_disabled(kernel: "Kernel") -> bool:
    """``GOFANNON_DISABLE_USER_TRACE`` (the reference's name): no stdout/log events; the rest of the trace stays."""
    return bool(getattr(kernel.settings, "disable_user_trace", False))


async def run_code(kernel: "Kernel", req: SandboxRequest, broker: Broker) -> SandboxOutcome:
    """Run ``req.code`` in a fresh sandbox child and return what happened (never raises for agent failures)."""
    from gofannon.sandbox.pool import get_pool

    started = time.perf_counter()
    pool = get_pool(kernel)
    timeout = kernel.settings.sandbox_timeout_s if req.timeout == _USE_SETTING else req.timeout
    trace = _Trace(req, broker)
    base = {"agent_name": req.agent_name or "sandbox_agent", "depth": req.depth}
    trace.add({"type": "agent_start", "ts": _now(), **base, "agent_id": req.agent_id, "called_by": req.called_by,
               "source": "system"})
    result: Any = None
    error: str | None = None
    limit: str | None = None
    details: dict[str, Any] | None = None
    child = None
    session: _Session | None = None
    try:
        async with asyncio.timeout(timeout if timeout and timeout > 0 else None):
            pending = pool.acquire()
            try:
                child = await asyncio.wrap_future(pending)
            except (RuntimeError, OSError) as exc:
                raise SandboxUnavailable(f"no sandbox process could be started for this run ({exc})") from exc
            except BaseException:
                # stopped while waiting: a child handed over at that very moment must not be leaked
                pending.add_done_callback(
                    lambda f: None if f.cancelled() or f.exception() else pool.discard(f.result()))
                raise
            session = _Session(child, req, broker, trace, pool.limits)
            await session.open()
            session.start(user_trace=not _user_trace_disabled(kernel))
            frame = await session.done
        result, error, limit, details = session.outcome_of(frame)
    except SandboxUnavailable as exc:
        error = f"SandboxError: {exc}"
        details = {"exception_type": "SandboxError", "message": error, "traceback": None}
    except TimeoutError:
        limit = "timeout"
        error = f"Sandbox limit exceeded: timeout (the run took longer than {timeout:g} s)"
        details = {"exception_type": "TimeoutError", "message": error, "traceback": None}
    except asyncio.CancelledError:
        if child is not None:
            pool.discard(child)
            child = None
        raise
    finally:
        if session is not None:
            await session.close()
        if child is not None:
            pool.discard(child)
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        if error is not None and details is not None:
            trace.add({"type": "error", "ts": _now(), **base, **details, "source": "system"})
        preview = None
        if error is None and result is not None:
            preview = (result if isinstance(result, str) else json.dumps(result, default=str))[:200]
        trace.add_final({"type": "agent_end", "ts": _now(), **base, "duration_ms": duration_ms,
                         "outcome": "success" if error is None else "error", "result_preview": preview,
                         "source": "system"})
        await trace.close()
    return SandboxOutcome(result=result if error is None else None, error=error, trace=trace.events, limit=limit,
                          duration_ms=duration_ms)
