"""What agent code sees inside the child, and the run's state behind it.

``build_api`` makes the names injected into the agent's namespace (wire contract §4.2): ``call_llm``,
``get_context_window``, the token counters, ``RemoteMCPClient``, ``http_client``/``httpx`` (the shim in
``httpx_shim``), ``gofannon_client`` and ``data_store``; ``install_modules`` makes the reference's import lines
(``agent_factory.remote_mcp_client``, ``services.llm_service``, ``httpx``) resolve to the same objects.
Everything is answered by the host over the channel: ``Runtime`` sends ops and trace events and matches replies,
and ``capture_output`` turns ``print``, ``sys.stderr`` and logging into this run's trace. Standard library only.
"""

import asyncio
import io
import json
import logging
import os
import sys
import threading
import time
import types
from datetime import datetime, timezone

from .channel import (
    AGENT_MODULE,
    EXIT_HOST_GONE,
    EXIT_OUTPUT,
    HEADER,
    MAX_EVENTS,
    MAX_MESSAGE,
    MAX_OUTPUT_BYTES,
    HTTPException,
    Writer,
    read_frame,
    remote_exception,
)
from .httpx_shim import _make_httpx


class ToolError(Exception):
    """An MCP tool answered ``isError``."""

    __module__ = AGENT_MODULE


class Runtime:
    """State of the one run: channel, pending ops, trace emission."""

    def __init__(self, out: Writer, sync_out: int, sync_in: int, req: dict) -> None:
        self.out = out
        self.sync_out = Writer(sync_out)
        self.sync_in = sync_in
        self.sync_lock = threading.Lock()
        self.req = req
        self.capture = bool(req.get("capture_trace", True))
        self.user_trace = bool(req.get("user_trace", True))  # stdout/log events (GOFANNON_DISABLE_USER_TRACE)
        self.agent_name = req.get("agent_name") or "sandbox_agent"
        self.inner_depth = int(req.get("depth") or 0) + 1
        self.events_sent = 0
        self.output_bytes = 0
        self.next_id = 0
        self.pending: dict[int, asyncio.Future] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- trace events ---------------------------------------------------------------------------------------
    def event(self, type_: str, source: str, **fields: object) -> None:
        if not self.capture:
            return
        self.events_sent += 1
        if self.events_sent > MAX_EVENTS:
            return  # the host adds the trace_truncated marker
        ev = {"type": type_, "ts": datetime.now(timezone.utc).isoformat(), "agent_name": self.agent_name,
              "depth": self.inner_depth, **fields, "source": source}
        self.out.send({"t": "event", "event": ev})

    def output(self, text: str) -> None:
        self.output_bytes += len(text)
        if self.output_bytes > MAX_OUTPUT_BYTES:
            self.out.send({"t": "done", "result": None, "limit": "output",
                           "error": f"Sandbox limit exceeded: output (the run printed more than "
                                    f"{MAX_OUTPUT_BYTES // (1024 * 1024)} MB)"})
            os._exit(EXIT_OUTPUT)
        if self.user_trace:
            self.event("stdout", "stdout", message=text[:MAX_MESSAGE])

    # -- async ops (multiplexed by id over the main channel) ---------------------------------------------------
    async def listen(self) -> None:
        """Take the host's replies from fd 0 on the running loop (the request frame was read before)."""
        self.loop = asyncio.get_running_loop()
        await self.loop.connect_read_pipe(lambda: _ReplyProtocol(self), os.fdopen(0, "rb", buffering=0))

    async def call(self, op: str, args: dict) -> object:
        self.next_id += 1
        rid = self.next_id
        fut = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        try:
            self.out.send({"t": "op", "id": rid, "op": op, "args": args})
            return await fut
        finally:
            self.pending.pop(rid, None)

    def on_reply(self, msg: dict) -> None:
        rid = msg.get("id")
        fut = self.pending.get(rid) if isinstance(rid, int) else None
        if fut is None or fut.done():
            return
        if msg.get("ok"):
            fut.set_result(msg.get("value"))
        else:
            fut.set_exception(remote_exception(msg.get("etype") or "RuntimeError", msg.get("error") or ""))

    # -- synchronous ops (data_store) ------------------------------------------------------------------------
    def call_sync(self, op: str, args: dict) -> object:
        with self.sync_lock:
            self.sync_out.send({"t": "op", "op": op, "args": args})
            msg = read_frame(self.sync_in)
        if msg.get("ok"):
            return msg.get("value")
        raise remote_exception(msg.get("etype") or "RuntimeError", msg.get("error") or "")


class _ReplyProtocol(asyncio.Protocol):
    """Reads reply frames from the host on the child's event loop."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 4:
            (size,) = HEADER.unpack_from(self.buf)
            if len(self.buf) < 4 + size:
                return
            msg = json.loads(bytes(self.buf[4:4 + size]))
            del self.buf[:4 + size]
            self.rt.on_reply(msg)

    def connection_lost(self, exc: BaseException | None) -> None:
        os._exit(EXIT_HOST_GONE)  # the host went away: nothing left to report to


class _StreamToTrace(io.TextIOBase):
    """sys.stdout / sys.stderr: each line becomes a ``stdout`` trace event."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.buf = ""
        self.lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        with self.lock:
            self.buf += s
            while "\n" in self.buf or len(self.buf) > MAX_MESSAGE:
                line, sep, rest = self.buf.partition("\n")
                if not sep:
                    line, rest = self.buf[:MAX_MESSAGE], self.buf[MAX_MESSAGE:]
                self.buf = rest
                self.rt.output(line)
        return len(s)

    def flush(self) -> None:
        with self.lock:
            if self.buf:
                line, self.buf = self.buf, ""
                self.rt.output(line)


class _LogToTrace(logging.Handler):
    def __init__(self, rt: Runtime) -> None:
        super().__init__(logging.INFO)
        self.rt = rt

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:
            msg = str(record.msg)
        self.rt.output_bytes += len(msg)
        if self.rt.output_bytes > MAX_OUTPUT_BYTES:
            self.rt.output("")  # ends the run with the output limit
        if self.rt.user_trace:
            self.rt.event("log", "log", level=record.levelname, logger=record.name, message=msg[:MAX_MESSAGE])


def build_api(rt: Runtime) -> dict:
    """The names injected into the agent's namespace (wire contract §4.2), all backed by the host channel."""

    async def call_llm(provider, model, messages, parameters=None, tools=None, timeout=None, **kw):
        for private in ("user_service", "user_id", "user_basic_info"):
            kw.pop(private, None)
        started = time.perf_counter()
        error = None
        usage: dict = {}
        try:
            reply = await rt.call("llm.call", {"provider": provider, "model": model, "messages": messages,
                                               "parameters": parameters or {}, "tools": tools,
                                               "timeout": timeout, **kw})
            usage = reply if isinstance(reply, dict) else {}
            return reply.get("content"), reply.get("thoughts")
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            rt.event("llm_call", "llm", provider=provider, model=model,
                     input_tokens=usage.get("input_tokens"), output_tokens=usage.get("output_tokens"),
                     duration_ms=round((time.perf_counter() - started) * 1000, 3),
                     cost_usd=usage.get("cost_usd"), error=error)

    async def get_context_window(provider, model):
        return await rt.call("llm.context_window", {"provider": provider, "model": model})

    def count_tokens(text, provider="anthropic", model="claude-opus-4-6"):
        return int(len(str(text or "")) / 2.5)

    def count_message_tokens(messages, provider="anthropic", model="claude-opus-4-6"):
        total = 0
        for message in messages or []:
            content = message.get("content") if isinstance(message, dict) else message
            if isinstance(content, list):
                content = " ".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
            total += count_tokens(content or "") + 4
        return total

    # -- MCP ---------------------------------------------------------------------------------------------------
    def _obj(value):
        if isinstance(value, dict):
            return types.SimpleNamespace(**{k: _obj(v) for k, v in value.items() if isinstance(k, str)})
        if isinstance(value, list):
            return [_obj(v) for v in value]
        return value

    class CallToolResult:
        def __init__(self, reply: dict) -> None:
            self.content = _obj(reply.get("content") or [])
            self.structured_content = reply.get("structuredContent")
            sc = self.structured_content
            self.data = sc["result"] if isinstance(sc, dict) and set(sc) == {"result"} else sc
            self.is_error = bool(reply.get("isError"))

        def __repr__(self) -> str:
            return f"CallToolResult(content={self.content!r}, structured_content={self.structured_content!r}, " \
                   f"is_error={self.is_error})"

    class RemoteMCPClient:
        def __init__(self, remote_url, auth_token=None):
            self.remote_url = remote_url
            self.auth_token = auth_token
            self._tools = None

        async def list_tools(self):
            tools = await rt.call("mcp.list_tools", {"url": self.remote_url, "auth_token": self.auth_token})
            self._tools = {t.get("name"): types.SimpleNamespace(
                name=t.get("name"), description=t.get("description"),
                inputSchema=t.get("inputSchema") or t.get("input_schema") or {}) for t in tools or []}
            return list(self._tools.values())

        def get_tool_doc(self, tool_name):
            tool = (self._tools or {}).get(tool_name)
            if tool is None:
                return f"Tool '{tool_name}' not found. Call list_tools() first."
            props = (tool.inputSchema or {}).get("properties") or {}
            required = set((tool.inputSchema or {}).get("required") or [])
            lines = [f"### {tool.name}", "", tool.description or "", "", "**Parameters:**"]
            for pname, spec in props.items():
                req = " (required)" if pname in required else ""
                lines.append(f"- `{pname}` ({spec.get('type', 'any')}){req}: {spec.get('description', '')}")
            return "\n".join(lines)

        async def call(self, tool_name, **params):
            if self._tools is None:
                await self.list_tools()
            if tool_name not in self._tools:
                raise ValueError(f"Tool '{tool_name}' not found on the server.")
            reply = await rt.call("mcp.call_tool", {"url": self.remote_url, "name": tool_name,
                                                    "arguments": params, "auth_token": self.auth_token})
            result = CallToolResult(reply or {})
            if result.is_error:
                texts = [getattr(c, "text", "") for c in result.content if getattr(c, "text", None)]
                raise ToolError("\n".join(texts) or f"Tool '{tool_name}' failed")
            return result

    # -- httpx-like client ---------------------------------------------------------------------------------------
    httpx = _make_httpx(rt.call)

    class GofannonClient:
        async def call(self, agent_name, input_dict=None):
            return await rt.call("agents.call", {"agent_name": agent_name, "input_dict": input_dict or {}})

    class DataStoreProxy:
        def __init__(self, namespace="default"):
            self.namespace = namespace

        def _op(self, op, **args):
            return rt.call_sync(f"data_store.{op}", {"namespace": self.namespace, **args})

        def use_namespace(self, namespace):
            return DataStoreProxy(namespace)

        def get(self, key, default=None):
            return self._op("get", key=key, default=default)

        def set(self, key, value, metadata=None):
            return self._op("set", key=key, value=value, metadata=metadata)

        def delete(self, key):
            return bool(self._op("delete", key=key))

        def delete_many(self, keys):
            return int(self._op("delete_many", keys=list(keys)) or 0)

        def list_keys(self, prefix=None):
            return list(self._op("list_keys", prefix=prefix) or [])

        def list_namespaces(self):
            return list(self._op("list_namespaces") or [])

        def get_all(self):
            return dict(self._op("get_all") or {})

        def get_many(self, keys):
            return dict(self._op("get_many", keys=list(keys)) or {})

        def set_many(self, items, metadata=None):
            return int(self._op("set_many", items=dict(items), metadata=metadata) or 0)

        def clear(self):
            return int(self._op("clear") or 0)

        def __repr__(self) -> str:
            return f"<data_store namespace={self.namespace!r}>"

    for cls in (CallToolResult, RemoteMCPClient, GofannonClient, DataStoreProxy):
        cls.__module__ = AGENT_MODULE
    import re

    return {
        "call_llm": call_llm, "get_context_window": get_context_window, "count_tokens": count_tokens,
        "count_message_tokens": count_message_tokens, "RemoteMCPClient": RemoteMCPClient,
        "http_client": httpx.AsyncClient(follow_redirects=True), "gofannon_client": GofannonClient(),
        "data_store": DataStoreProxy(), "asyncio": asyncio, "json": json, "re": re, "httpx": httpx,
        "ToolError": ToolError, "HTTPException": HTTPException,
    }


def _module(name: str, **attrs: object) -> types.ModuleType:
    module = types.ModuleType(name)
    vars(module).update(attrs)
    return module


def install_modules(api: dict) -> None:
    """Make the reference's import lines resolve to this run's (user-bound) objects."""
    af_rmc = _module("agent_factory.remote_mcp_client", RemoteMCPClient=api["RemoteMCPClient"])
    af = _module("agent_factory", remote_mcp_client=af_rmc)
    llm = _module("services.llm_service", call_llm=api["call_llm"])
    services = _module("services", llm_service=llm)
    sys.modules.update({"agent_factory": af, "agent_factory.remote_mcp_client": af_rmc, "services": services,
                        "services.llm_service": llm, "httpx": api["httpx"]})


def capture_output(rt: Runtime) -> None:
    """``print``, ``sys.stderr`` and the root logger (INFO and above) report to this run's trace only."""
    sys.stdout = _StreamToTrace(rt)
    sys.stderr = _StreamToTrace(rt)
    root = logging.getLogger()
    root.handlers[:] = [_LogToTrace(rt)]
    root.setLevel(logging.INFO)
