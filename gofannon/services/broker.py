"""The host side of the sandbox channel: every capability an agent asks for, done as the calling user.

The sandbox child has no network and no credentials; it sends ops (``llm.call``, ``agents.call``,
``mcp.*``, ``http.request``, ``data_store.*``) to a ``RunBroker``, which performs them with the run's
identity, billing and SSRF guard. One ``RunContext`` is shared by a run and every agent it calls, so
trace events of nested agents land in one trace, and the first HTTP-style error (e.g. 402) is kept so
``/rest`` can answer with its status.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable
from urllib.parse import urlencode, urlsplit, urlunsplit

from gofannon.errors import Forbidden, GofannonError, ServiceUnavailable
from gofannon.models.agent import LlmSettings
from gofannon.services import scopes
from gofannon.timeutil import now_iso_tz

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.auth import Identity
    from gofannon.kernel import Kernel

MAX_TRACE_EVENTS = 2000
_STRIPPED_LLM_KWARGS = ("user_service", "user_id", "user_basic_info")

Publish = Callable[[dict[str, Any]], Awaitable[None]]


class AgentCallError(RuntimeError):
    """A called agent failed; its message is that agent's error."""


@dataclass
class RunContext:
    """What a run and all agents it calls share."""

    kernel: "Kernel"
    ident: "Identity"
    run_id: str | None = None
    llm_settings: LlmSettings | None = None
    capture_trace: bool = True
    publish: Publish | None = None
    deadline: float | None = None  # time.monotonic() by which the top run must end
    #: The shared workspace the top run's model calls are charged to besides the caller (None: the caller
    #: alone). Set by the platform, never by the agent's code. An agent the run calls may be charged to another
    #: one: see ``RunBroker.workspace_id``.
    workspace_id: str | None = None
    trace: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False
    http_error: GofannonError | None = None

    async def add_event(self, event: dict[str, Any]) -> None:
        if not self.capture_trace:
            return
        if len(self.trace) >= MAX_TRACE_EVENTS:
            if self.truncated:
                return
            self.truncated = True
            event = {"type": "trace_truncated", "ts": now_iso_tz(), "agent_name": event.get("agent_name"),
                     "depth": event.get("depth", 0), "source": "system",
                     "message": f"Trace truncated after {MAX_TRACE_EVENTS} events."}
        self.trace.append(event)
        if self.publish is not None:
            await self.publish(event)


def _tokens(usage: Any, *names: str) -> int | None:
    if usage is None:
        return None
    for name in names:
        value = usage.get(name) if isinstance(usage, dict) else getattr(usage, name, None)
        if value is not None:
            return int(value)
    return None


def default_llm_timeout(parameters: dict[str, Any], fallback: float) -> float:
    """The reference's defaults: long reasoning or very long outputs get more time."""
    effort = parameters.get("reasoning_effort")
    max_tokens = parameters.get("max_tokens") or 0
    if effort == "high" and max_tokens >= 64000:
        return 1800.0
    if effort in ("medium", "high") or max_tokens >= 64000:
        return 1200.0
    return fallback


class RunBroker:
    """Answers one agent's ops. Nested agents get their own broker sharing the ``RunContext``."""

    def __init__(self, ctx: RunContext, *, agent_name: str, depth: int = 0,
                 agents: list[dict[str, Any]] | None = None, collect_ops: bool = True,
                 workspace_id: str | None = None, checks_models: bool = False) -> None:
        self.ctx = ctx
        #: Whether this code is the caller's own (run-code), so the models it calls and the agents it calls
        #: (``agent/<friendlyName>``) must be allowed by the caller's token ``models``. False for an agent the
        #: token was admitted to run (``/rest``, ``/v1``, ``/mcp``, a gofannon chat) and for the agents called
        #: from any code: an agent's own choices are not the token's (docs/gateway.md, "Scoped tokens").
        self.checks_models = checks_models
        #: The shared workspace this agent's model calls are charged to (and gated by) besides the caller, and
        #: whose data store it uses: the top run's (``ctx.workspace_id``), or for a called agent of a shared
        #: workspace, that workspace -- as when the agent is run through ``/rest`` (docs/workspaces.md).
        self.workspace_id = workspace_id if workspace_id is not None else ctx.workspace_id
        self.agent_name = agent_name
        self.depth = depth
        self.agents = {a.get("name"): a for a in agents or []}
        for a in agents or []:  # callable by friendlyName too, when it differs from the name
            if a.get("friendlyName"):
                self.agents.setdefault(a["friendlyName"], a)
        self.collect_ops = collect_ops
        self.ops_log: list[dict[str, Any]] = []

    # -- the Broker protocol --------------------------------------------------------------------------
    async def on_event(self, event: dict[str, Any]) -> None:
        await self.ctx.add_event(event)

    async def handle(self, op: str, args: dict[str, Any]) -> Any:
        """One request of the agent's code, in a trace span of its own (named by known operations only)."""
        from gofannon.observability import span

        name = op if op in _OPS or op.startswith("data_store.") else "unknown"
        with span(f"broker {name}", {"gofannon.broker.op": name}) as handle:
            try:
                return await self._handle(op, args)
            except Exception as exc:
                handle.error(type(exc).__name__)
                raise

    async def _handle(self, op: str, args: dict[str, Any]) -> Any:
        try:
            if op.startswith("data_store."):
                return await self._data_store(op.split(".", 1)[1], dict(args))
            method = _OPS.get(op)
            if method is None:
                raise ValueError(f"Unknown operation '{op}'.")
            return await method(self, dict(args))
        except GofannonError as exc:
            if self.ctx.http_error is None and 400 <= exc.status < 500:
                self.ctx.http_error = exc
            raise

    # -- llm ------------------------------------------------------------------------------------------
    async def _llm_call(self, args: dict[str, Any]) -> dict[str, Any]:
        from gofannon.llm.service import call_llm

        provider, model = str(args.pop("provider")), str(args.pop("model"))
        messages = args.pop("messages", None) or []
        parameters = dict(args.pop("parameters", None) or {})
        tools = args.pop("tools", None)
        timeout = args.pop("timeout", None)
        for name in _STRIPPED_LLM_KWARGS:
            args.pop(name, None)
        args.pop("workspace_id", None)  # the agent's code does not choose which workspace pays
        overrides = self.ctx.llm_settings.for_model(provider, model) if self.ctx.llm_settings else None
        if overrides is not None:
            if overrides.max_tokens is not None:
                parameters["max_tokens"] = overrides.max_tokens
            if overrides.temperature is not None:
                parameters["temperature"] = overrides.temperature
            if overrides.reasoning_effort == "disable":
                parameters.pop("reasoning_effort", None)
            elif overrides.reasoning_effort is not None:
                parameters["reasoning_effort"] = overrides.reasoning_effort
        if timeout is None:
            timeout = default_llm_timeout(parameters, self.ctx.kernel.settings.llm_timeout_seconds)
        kernel, ident = self.ctx.kernel, self.ctx.ident
        # the token the run was started with pays for its calls too; the caller's own code is held to its models
        gate = scopes.direct if self.checks_models else scopes.metered
        result = await gate(
            kernel, ident, provider, model, messages, tools, parameters.get("max_tokens"),
            lambda: call_llm(kernel, ident, provider, model, messages, parameters, tools=tools, timeout=timeout,
                             workspace_id=self.workspace_id, **args))
        usage = getattr(result, "usage", None)
        # The child turns these into the run's ``llm_call`` trace event (tokens and cost, §12.23).
        return {
            "content": result.content, "thoughts": getattr(result, "thoughts", None),
            "input_tokens": _tokens(usage, "input_tokens", "prompt_tokens", "inputTokens"),
            "output_tokens": _tokens(usage, "output_tokens", "completion_tokens", "outputTokens"),
            "cost_usd": getattr(result, "cost", None),
        }

    async def _context_window(self, args: dict[str, Any]) -> int:
        from gofannon.llm import catalog

        config = catalog.active().model(str(args.get("provider")), str(args.get("model"))) or {}
        return int(config.get("context_window") or 128000)

    # -- other agents ---------------------------------------------------------------------------------
    async def _agents_call(self, args: dict[str, Any]) -> Any:
        from gofannon import sandbox
        from gofannon.services.agents import load_usable
        from gofannon.services.ownership import shared_workspace

        name = args.get("agent_name")
        agent = self.agents.get(name)
        if agent is None:
            raise ValueError(f"Gofannon agent '{name}' not found or not imported for this run.")
        if self.checks_models:
            scopes.check_model(self.ctx.ident, f"agent/{agent.get('friendlyName') or agent.get('name')}")
        limit = self.ctx.kernel.settings.sandbox_max_depth
        if self.depth + 1 > limit:
            raise ValueError(f"Agent call depth limit exceeded (at most {limit} nested agent calls).")
        nested = await load_usable(self.ctx.kernel, self.ctx.ident, list(agent.get("gofannonAgents") or []),
                                   on_behalf_of=agent.get("ownerId"))
        if nested is None:
            raise ValueError("Could not load one or more dependent Gofannon agents.")
        # An agent of a shared workspace runs in that workspace wherever it is called from (its calls need the
        # workspace's allowance too, as through /rest); any other agent runs in its caller's workspace.
        child = RunBroker(self.ctx, agent_name=str(name), depth=self.depth + 1, agents=nested, collect_ops=False,
                          workspace_id=shared_workspace(agent) or self.workspace_id)
        timeout = self.ctx.kernel.settings.sandbox_timeout_s
        if self.ctx.deadline is not None:
            timeout = max(0.1, min(timeout, self.ctx.deadline - time.monotonic()))
        req = sandbox.SandboxRequest(
            code=agent.get("code") or "", input_dict=args.get("input_dict"), tools=agent.get("tools") or {},
            env_vars={e["key"]: e["value"] for e in agent.get("envVars") or []}, agent_name=str(name),
            agent_id=agent.get("_id"), depth=self.depth + 1, run_id=self.ctx.run_id, timeout=timeout,
            capture_trace=self.ctx.capture_trace, called_by=self.agent_name,
        )
        outcome = await sandbox.run_code(self.ctx.kernel, req, child)
        if outcome.error is not None:
            raise AgentCallError(outcome.error)
        return outcome.result

    # -- MCP ------------------------------------------------------------------------------------------
    def _mcp(self) -> Any:
        connector = self.ctx.kernel.tool_connectors.get("mcp")
        if connector is None:
            raise ServiceUnavailable("The MCP tool connector is not installed.")
        return connector

    async def _mcp_list_tools(self, args: dict[str, Any]) -> Any:
        return await self._mcp().list_tools(self.ctx.kernel, str(args["url"]), auth_token=args.get("auth_token"))

    async def _mcp_call_tool(self, args: dict[str, Any]) -> Any:
        return await self._mcp().call_tool(self.ctx.kernel, str(args["url"]), str(args["name"]),
                                           args.get("arguments") or {}, auth_token=args.get("auth_token"))

    # -- outbound HTTP --------------------------------------------------------------------------------
    async def _http_request(self, args: dict[str, Any]) -> dict[str, Any]:
        from gofannon import net

        url = str(args["url"])
        params = args.get("params")
        if params:
            parts = urlsplit(url)
            pairs = params.items() if isinstance(params, dict) else params
            extra = urlencode([(str(k), str(v)) for k, v in pairs], doseq=True)
            url = urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))
        headers = dict(args.get("headers") or {})
        body: bytes | None = None
        if args.get("content") is not None:
            body = base64.b64decode(args["content"])
        elif "json" in args and args["json"] is not None:
            body = json.dumps(args["json"]).encode()
            if not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "application/json"
        resp = await net.fetch(self.ctx.kernel, str(args.get("method") or "GET").upper(), url, headers=headers,
                               body=body, timeout=args.get("timeout"),
                               follow_redirects=bool(args.get("follow_redirects", True)))
        raw_headers: Any = resp.headers
        items = list(raw_headers.items()) if hasattr(raw_headers, "items") else list(raw_headers)
        return {"status_code": resp.status, "headers": [[str(k), str(v)] for k, v in items],
                "content": base64.b64encode(resp.body or b"").decode(), "url": str(resp.url)}

    # -- data store -----------------------------------------------------------------------------------
    async def _data_store(self, op: str, args: dict[str, Any]) -> Any:
        from gofannon.services import data_store

        if op not in _DATA_STORE_OPS:
            raise ValueError(f"Unknown data_store operation '{op}'.")
        if op in _DATA_STORE_WRITES and self.checks_models and scopes.models_only(self.ctx.ident):
            # Code a token limited to models runs itself may read, not write: the token only calls and reads
            # (an agent it was allowed to run keeps its own data store).
            raise Forbidden("This API token is limited to models: the code it runs may read the data store, "
                            "not change it.")
        namespace = str(args.pop("namespace", None) or "default")
        # A run in a shared workspace reads and writes the workspace's data store, shared by its members.
        owner = self.workspace_id or self.ctx.ident.uid
        return await data_store.perform(self.ctx.kernel, owner, op, args, namespace=namespace,
                                        agent_name=self.agent_name,
                                        ops_log=self.ops_log if self.collect_ops else None)


_DATA_STORE_OPS = frozenset({
    "get", "set", "delete", "delete_many", "list_keys", "list_namespaces", "get_all", "get_many", "set_many", "clear",
})
_DATA_STORE_WRITES = frozenset({"set", "delete", "delete_many", "set_many", "clear"})

_OPS: dict[str, Callable[[RunBroker, dict[str, Any]], Awaitable[Any]]] = {
    "llm.call": RunBroker._llm_call,
    "llm.context_window": RunBroker._context_window,
    "agents.call": RunBroker._agents_call,
    "mcp.list_tools": RunBroker._mcp_list_tools,
    "mcp.call_tool": RunBroker._mcp_call_tool,
    "http.request": RunBroker._http_request,
}
