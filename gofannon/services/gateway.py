"""The OpenAI-compatible gateway behind ``/v1`` (docs/gateway.md).

A model id is ``<provider>/<model>`` (a model of the active catalog, called through ``call_llm`` /
``stream_llm``: the allowance gate, the atomic charge and the usage history are the same as for chat) or
``agent/<friendlyName>`` (a deployed agent, run in the sandbox like ``/rest``). This module translates
OpenAI's request into those calls and their answers into ``chat.completion`` objects and
``chat.completion.chunk`` streams; the token's scope is checked and its budget reserved through
``gofannon.services.scopes``. Errors are the kernel's; ``gofannon.web.v1`` renders them in OpenAI's shape.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator

from gofannon.errors import BadRequest, GofannonError, NotFound, UpstreamError
from gofannon.ids import random_hex
from gofannon.llm import FINISH_REASONS, Completion, Usage, message_text
from gofannon.llm import catalog as catalog_mod
from gofannon.llm.service import call_llm, stream_llm, vendor_text
from gofannon.services import scopes

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Collection

    from gofannon.auth import Identity
    from gofannon.kernel import Kernel

AGENT_PREFIX = "agent/"
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
#: Characters of an agent's answer per streamed chunk.
AGENT_CHUNK_CHARS = 256
#: Rough characters per token, for charging a stream the client abandoned (its real usage never arrives).
CHARS_PER_TOKEN = 4
_NUMBER_OPTIONS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_INT_OPTIONS = ("max_tokens", "max_completion_tokens", "seed")
_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "xhigh"})


class InvalidRequest(BadRequest):
    """A 400 naming the offending field as OpenAI's ``param``."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.openai_code = code


class ModelNotFound(NotFound):
    openai_code = "model_not_found"

    def __init__(self, model_id: str) -> None:
        super().__init__(f"The model '{model_id}' does not exist or you do not have access to it.")
        self.param = "model"


# -- models ---------------------------------------------------------------------------------------------
@dataclass
class Target:
    """What a model id names: a catalog model (``provider``/``model``) or a deployed agent (``agent``)."""

    id: str
    provider: str | None = None
    model: str = ""
    agent: dict[str, Any] | None = None


def catalog_target(model_id: str) -> Target | None:
    """The catalog model a ``<provider>/<model>`` id names, or None."""
    provider, sep, model = model_id.partition("/")
    if not sep or not model or catalog_mod.active().model(provider, model) is None:
        return None
    return Target(model_id, provider, model)


async def resolve(kernel: "Kernel", model_id: Any, ident: "Identity") -> Target:
    """The target of a model id; 404 ``model_not_found`` for an unknown one (and for an agent of a shared
    workspace the caller is not in, as ``/rest`` answers)."""
    if not isinstance(model_id, str) or not model_id.strip():
        raise InvalidRequest("You must provide a model parameter.", "model")
    if model_id.startswith(AGENT_PREFIX):
        from gofannon.services import deployments

        try:
            agent = await deployments.load_deployed(kernel, model_id[len(AGENT_PREFIX):], ident)
        except NotFound:
            raise ModelNotFound(model_id) from None
        return Target(model_id, model=model_id[len(AGENT_PREFIX):], agent=agent)
    target = catalog_target(model_id)
    if target is None:
        raise ModelNotFound(model_id)
    return target


def _model_object(model_id: str, owned_by: str, created: int = 0) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}


def _created_of(agent: dict[str, Any]) -> int:
    try:
        from datetime import datetime, timezone

        stamp = datetime.fromisoformat(str(agent.get("createdAt")))
        return int(stamp.replace(tzinfo=stamp.tzinfo or timezone.utc).timestamp())
    except (TypeError, ValueError, OverflowError):
        return 0


async def usable_providers(kernel: "Kernel", ident: "Identity") -> set[str]:
    """Catalog providers the caller can call: no key needed, an operator key, or their own stored key."""
    from gofannon.llm.service import env_api_key, needs_key, user_key_provider
    from gofannon.services import users

    out: set[str] = set()
    for slug, config in catalog_mod.active().providers.items():
        if not needs_key(config) or env_api_key(kernel, slug, config):
            out.add(slug)
        elif user_key_provider(ident.uid, slug) and await users.user_api_key(kernel, ident.uid, slug):
            out.add(slug)
    return out


async def list_models(kernel: "Kernel", ident: "Identity", workspace_id: "str | None | Collection[str]" = None
                      ) -> list[dict[str, Any]]:
    """Every model the caller can use: usable catalog models, then deployed agents (the public ones, and
    those of ``workspace_id``, the shared workspace(s) the caller may call agents of); a scoped token sees only
    the ids it may use."""
    from gofannon.services import deployments

    cat = catalog_mod.active()
    out: list[dict[str, Any]] = []
    for slug in sorted(await usable_providers(kernel, ident)):
        for model in (cat.providers[slug].get("models") or {}):
            model_id = f"{slug}/{model}"
            if scopes.may_use(ident, model_id):
                out.append(_model_object(model_id, slug))
    for name, agent in await deployments.deployed_agents(kernel, workspace_id):
        model_id = AGENT_PREFIX + name
        if scopes.may_use(ident, model_id):
            out.append(_model_object(model_id, "gofannon", _created_of(agent)))
    return out


async def get_model(kernel: "Kernel", ident: "Identity", model_id: str) -> dict[str, Any]:
    """One model the caller can use, or 404 ``model_not_found`` (unknown, unusable and out of scope alike)."""
    target = await resolve(kernel, model_id, ident)
    if not scopes.may_use(ident, model_id):
        raise ModelNotFound(model_id)
    if target.agent is not None:
        return _model_object(model_id, "gofannon", _created_of(target.agent))
    if target.provider not in await usable_providers(kernel, ident):
        raise ModelNotFound(model_id)
    return _model_object(model_id, str(target.provider))


# -- the request ----------------------------------------------------------------------------------------
@dataclass
class ChatRequest:
    """A validated chat-completions body: what the gateway needs, unknown fields dropped."""

    model: str
    messages: list[dict[str, Any]]
    parameters: dict[str, Any] = field(default_factory=dict)  # OPENAI_OPTIONS names + reasoning_effort
    tools: list[dict[str, Any]] | None = None
    stream: bool = False
    include_usage: bool = False
    #: The shared workspace the call is made in (charged too, see ``call_llm``); None = the caller alone.
    workspace_id: str | None = None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_content(content: Any, where: str, *, required: bool) -> None:
    if content is None:
        if required:
            raise InvalidRequest(f"Missing required parameter: '{where}'.", where)
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise InvalidRequest(f"Invalid type for '{where}': expected a string or an array of content parts.", where)
    for j, part in enumerate(content):
        spot = f"{where}[{j}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise InvalidRequest(f"Invalid content part '{spot}': expected an object with a 'type'.", spot)
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise InvalidRequest(f"Invalid content part '{spot}.text': expected a string.", f"{spot}.text")


def _check_tool_calls(calls: Any, where: str) -> None:
    if not isinstance(calls, list):
        raise InvalidRequest(f"Invalid type for '{where}': expected an array.", where)
    for j, call in enumerate(calls):
        spot = f"{where}[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(call, dict) or not isinstance(call.get("id"), str) or not isinstance(fn, dict):
            raise InvalidRequest(f"Invalid tool call '{spot}': expected {{id, type: 'function', function}}.", spot)
        if not isinstance(fn.get("name"), str) or not isinstance(fn.get("arguments", ""), str):
            raise InvalidRequest(f"Invalid tool call '{spot}.function': expected a 'name' and 'arguments' "
                                 "as a JSON string.", f"{spot}.function")


def check_messages(messages: Any) -> list[dict[str, Any]]:
    """OpenAI's message shapes (system, developer, user, assistant with tool_calls, tool), 400 with
    ``param`` naming the first offending field."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array of message objects.", "messages")
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise InvalidRequest(f"Invalid type for '{where}': expected an object.", where)
        role = msg.get("role")
        if role not in ROLES:
            raise InvalidRequest(f"Invalid value for '{where}.role': expected one of "
                                 f"{', '.join(sorted(ROLES))}, got {role!r}.", f"{where}.role")
        if role == "assistant":
            has_calls = msg.get("tool_calls") is not None
            if has_calls:
                _check_tool_calls(msg["tool_calls"], f"{where}.tool_calls")
            _check_content(msg.get("content"), f"{where}.content", required=not has_calls and not msg.get("refusal"))
        else:
            _check_content(msg.get("content"), f"{where}.content", required=True)
        if role == "tool" and not isinstance(msg.get("tool_call_id"), str):
            raise InvalidRequest(f"Missing required parameter: '{where}.tool_call_id'.", f"{where}.tool_call_id")
    return messages


def _check_tools(tools: Any) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise InvalidRequest("Invalid type for 'tools': expected an array.", "tools")
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict) \
                or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise InvalidRequest(f"Invalid tool 'tools[{i}]': expected {{type: 'function', function: {{name, "
                                 "description?, parameters?}}}}.", f"tools[{i}]")
    return tools or None


def parse_request(body: Any) -> ChatRequest:
    """Validate an OpenAI chat-completions body; unknown fields are ignored, as OpenAI does."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("You must provide a model parameter.", "model")
    messages = check_messages(body.get("messages"))
    n = body.get("n")
    if n is not None and (not _is_int(n) or n != 1):  # true is not 1 here
        raise InvalidRequest("Only n=1 is supported.", "n")
    params: dict[str, Any] = {}
    for name in _NUMBER_OPTIONS:
        value = body.get(name)
        if value is not None:
            if not _is_number(value):
                raise InvalidRequest(f"Invalid type for '{name}': expected a number.", name)
            params[name] = value
    for name in _INT_OPTIONS:
        value = body.get(name)
        if value is not None:
            if not _is_int(value) or (name != "seed" and value < 1):
                raise InvalidRequest(f"Invalid value for '{name}': expected a positive integer.", name)
            params[name] = value
    if "max_completion_tokens" in params:
        params["max_tokens"] = params.pop("max_completion_tokens")  # the provider contract's one name
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > 4:
            raise InvalidRequest("Invalid type for 'stop': expected a string or up to 4 strings.", "stop")
        if stop:
            params["stop"] = stop
    fmt = body.get("response_format")
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind not in ("text", "json_object", "json_schema"):
            raise InvalidRequest("Invalid value for 'response_format.type': expected 'text', 'json_object' or "
                                 "'json_schema'.", "response_format.type")
        if kind == "json_schema" and not isinstance(fmt.get("json_schema"), dict):
            raise InvalidRequest("Missing required parameter: 'response_format.json_schema'.",
                                 "response_format.json_schema")
        if kind != "text":
            params["response_format"] = fmt
    tools = _check_tools(body.get("tools"))
    choice = body.get("tool_choice")
    if choice is not None:
        if not (choice in ("none", "auto", "required") or isinstance(choice, dict)):
            raise InvalidRequest("Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or an "
                                 "object naming a function.", "tool_choice")
        params["tool_choice"] = choice
    parallel = body.get("parallel_tool_calls")
    if parallel is not None:
        if not isinstance(parallel, bool):
            raise InvalidRequest("Invalid type for 'parallel_tool_calls': expected a boolean.", "parallel_tool_calls")
        if tools:
            params["parallel_tool_calls"] = parallel
    user = body.get("user")
    if user is not None:
        if not isinstance(user, str):
            raise InvalidRequest("Invalid type for 'user': expected a string.", "user")
        params["user"] = user
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in _EFFORTS:
            raise InvalidRequest(f"Invalid value for 'reasoning_effort': expected one of "
                                 f"{', '.join(sorted(_EFFORTS))}.", "reasoning_effort")
        params["reasoning_effort"] = effort
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("Invalid type for 'stream': expected a boolean.", "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("Invalid type for 'stream_options': expected an object.", "stream_options")
    return ChatRequest(model=model, messages=messages, parameters=params, tools=tools, stream=bool(stream),
                       include_usage=bool((options or {}).get("include_usage")))


# -- answers --------------------------------------------------------------------------------------------
def _finish(reason: str | None, tool_calls: list[Any]) -> str:
    if reason in FINISH_REASONS:
        return reason  # type: ignore[return-value]
    if tool_calls:
        return "tool_calls"
    return "length" if reason in ("incomplete", "max_tokens", "MAX_TOKENS") else "stop"


def _usage(usage: Usage | None) -> dict[str, int]:
    usage = usage or Usage()
    out = {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
           "total_tokens": usage.input_tokens + usage.output_tokens}
    return out


def _tool_calls(thoughts: Any) -> list[dict[str, Any]]:
    calls = thoughts.get("tool_calls") if isinstance(thoughts, dict) else None
    out = []
    for call in calls or []:
        if not isinstance(call, dict):
            continue
        fn = call.get("function") or {}
        args = fn.get("arguments", "")
        out.append({"id": call.get("id") or f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                    "function": {"name": fn.get("name") or "",
                                 "arguments": args if isinstance(args, str) else json.dumps(args)}})
    return out


def completion_object(model_id: str, content: str, tool_calls: list[dict[str, Any]], finish: str,
                      usage: dict[str, int]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content if content or not tool_calls else None,
                               "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"id": f"chatcmpl-{random_hex(16)}", "object": "chat.completion", "created": int(time.time()),
            "model": model_id, "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": usage}


class Chunks:
    """``chat.completion.chunk`` objects of one stream (same id, created and model)."""

    def __init__(self, model_id: str) -> None:
        self.base = {"id": f"chatcmpl-{random_hex(16)}", "object": "chat.completion.chunk",
                     "created": int(time.time()), "model": model_id}

    def delta(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**self.base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    def usage(self, usage: dict[str, int]) -> dict[str, Any]:
        return {**self.base, "choices": [], "usage": usage}


# -- calls ----------------------------------------------------------------------------------------------
def check_model_options(target: Target, req: ChatRequest) -> None:
    """400 for ``reasoning_effort`` on a model the catalog gives none (OpenAI refuses it the same way),
    rather than passing it to a vendor that would fail the call."""
    if "reasoning_effort" not in req.parameters:
        return
    config = catalog_mod.active().model(str(target.provider), target.model) or {}
    if "reasoning_effort" not in (config.get("parameters") or {}):
        raise InvalidRequest(f"The model '{target.id}' does not support 'reasoning_effort'.", "reasoning_effort",
                             "unsupported_parameter")


def _estimate(target: Target, req: ChatRequest, ident: "Identity") -> float:
    """The cost ``scopes.reserve`` holds for this call (0 without a token spend limit: nothing is reserved)."""
    if not scopes.spend_limited(ident):
        return 0.0
    return scopes.estimate_for(str(target.provider), target.model, req.messages, req.tools,
                               req.parameters.get("max_tokens"))


def _cost(target: Target, usage: Usage) -> float:
    return catalog_mod.active().cost(str(target.provider), target.model, usage.input_tokens, usage.output_tokens,
                                     usage.cached_input_tokens)[0]


async def _release(kernel: "Kernel", reservation: scopes.Reservation | None) -> None:
    try:
        await scopes.release(kernel, reservation)
    except Exception:  # noqa: BLE001 - the reservation expires on its own; the call's error matters more
        pass


async def complete(kernel: "Kernel", ident: "Identity", req: ChatRequest) -> dict[str, Any]:
    """A non-streamed ``chat.completion``."""
    target = await resolve(kernel, req.model, ident)
    await scopes.admit(kernel, ident, req.model)
    if target.agent is not None:
        answer = await run_agent(kernel, ident, target, req)
        return completion_object(req.model, answer, [], "stop", _usage(None))
    check_model_options(target, req)
    reservation = await scopes.reserve(kernel, ident, _estimate(target, req, ident))
    try:
        result = await call_llm(kernel, ident, str(target.provider), target.model, req.messages, req.parameters,
                                tools=req.tools, workspace_id=req.workspace_id, defer_charge=True)
    except BaseException:
        await _release(kernel, reservation)
        raise
    await scopes.settle(kernel, reservation, result.cost)
    calls = _tool_calls(result.thoughts)
    return completion_object(req.model, result.content, calls, _finish(result.finish_reason, calls),
                             _usage(result.usage))


async def stream(kernel: "Kernel", ident: "Identity", req: ChatRequest) -> AsyncIterator[list[dict[str, Any]]]:
    """``chat.completion.chunk`` objects, in batches: each batch is every chunk ready at that moment (the
    provider's events that arrived together), so the handler sends them in one write instead of one write
    each. The first batch is produced only once the provider's first event arrived, so every error before it
    (scope, budget, provider) is raised by the first ``__anext__`` and can still be an HTTP status. Closing
    the iterator early stops the provider call; the caller is then charged an estimate of what was streamed
    (the provider's usage never arrives)."""
    target = await resolve(kernel, req.model, ident)
    await scopes.admit(kernel, ident, req.model)
    chunks = Chunks(req.model)
    if target.agent is not None:
        answer = await run_agent(kernel, ident, target, req)
        batch = [chunks.delta({"role": "assistant", "content": ""})]
        batch += [chunks.delta({"content": answer[i:i + AGENT_CHUNK_CHARS]})
                  for i in range(0, len(answer), AGENT_CHUNK_CHARS)]
        batch.append(chunks.delta({}, "stop"))
        if req.include_usage:
            batch.append(chunks.usage(_usage(None)))
        yield FinalBatch(batch)
        return
    check_model_options(target, req)
    reservation = await scopes.reserve(kernel, ident, _estimate(target, req, ident))
    events = stream_llm(kernel, ident, str(target.provider), target.model, req.messages, req.parameters,
                        tools=req.tools, workspace_id=req.workspace_id, defer_charge=True)
    pump = _Pump(events)
    streamed: list[str] = []
    settled = False
    try:
        event = await pump.first()
        batch = [chunks.delta({"role": "assistant", "content": ""})]
        saw_tool_events = False
        while event is not None:
            if event.kind == "content" and event.text:
                streamed.append(event.text)
                batch.append(chunks.delta({"content": event.text}))
            elif event.kind == "tool_call" and event.tool_call:
                saw_tool_events = True
                streamed.append(json.dumps(event.tool_call, ensure_ascii=False, default=str))  # output too
                batch.append(chunks.delta({"tool_calls": [event.tool_call]}))
            elif event.kind == "done":
                final = event.completion or Completion("")
                settled = True
                await scopes.settle(kernel, reservation, _cost(target, final.usage))
                calls = _tool_calls(final.thoughts)
                if calls and not saw_tool_events:
                    batch.append(chunks.delta({"tool_calls": [{"index": i, **c} for i, c in enumerate(calls)]}))
                batch.append(chunks.delta({}, _finish(final.finish_reason, calls)))
                if req.include_usage:
                    batch.append(chunks.usage(_usage(final.usage)))
                yield FinalBatch(batch)
                return
            try:
                event = pump.ready()
            except Exception:  # the provider failed after these pieces: the caller gets them, then the error
                if batch:
                    yield batch
                    batch = []
                raise
            if event is _NOTHING_YET:  # send what is ready before waiting on the vendor again
                if batch:
                    yield batch
                    batch = []
                event = await pump.next()
        if batch:
            yield batch
    except GofannonError:
        raise
    except Exception as exc:  # noqa: BLE001 - the vendor's connection failing mid-stream is the provider's failure
        raise UpstreamError(vendor_text(kernel, f"{target.provider}/{target.model} stream failed: "
                                             f"{type(exc).__name__}: {exc}")) from None
    finally:
        # Still waiting on the vendor: stream_llm is stopped, and bills the estimate.
        cut_off = pump.task is not None and not pump.task.done()
        await pump.stop()
        if not settled:
            if pump.final is not None:  # the provider finished (and stream_llm charged the caller): the real cost
                await scopes.settle(kernel, reservation, _cost(target, pump.final.usage))
            else:
                await asyncio.shield(_abandoned(kernel, ident, target, req, streamed, reservation,
                                                charge_caller=not cut_off))


_NOTHING_YET = object()


class FinalBatch(list):  # type: ignore[type-arg]
    """The stream's last batch (its finish and usage chunks): the handler sends it with the stream's end."""


class _Pump:
    """Reads a provider stream: its first event in the caller's own task (no hand-over between tasks before the
    first token), the rest in a task of its own, so stopping it is a cancellation that lands where the provider's
    generators wait on the vendor's connection: the exception unwinds every one of them and their ``async with``
    blocks close the connection at once. (Closing a generator chain suspended at a ``yield`` instead would leave
    the inner generators to the garbage collector, and the vendor's stream open.) The events are queued without
    bound, so the task always waits on the vendor, never on the reader."""

    def __init__(self, events: AsyncIterator[Any]) -> None:
        self.events = events
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.final: Completion | None = None
        self.task: asyncio.Task[None] | None = None

    async def first(self) -> Any:
        """The first event (None for an empty stream), awaited here: a cancellation meanwhile (the client gone)
        unwinds the provider's generators where they wait, as it would in the task. Then the task reads on."""
        try:
            event = await self.events.__anext__()
        except StopAsyncIteration:
            return None
        if event.kind == "done":
            self.final = event.completion or Completion("")
        self.task = asyncio.create_task(self._run())
        return event

    async def _run(self) -> None:
        try:
            async for event in self.events:
                if event.kind == "done":
                    self.final = event.completion or Completion("")
                self.queue.put_nowait(event)
            self.queue.put_nowait(None)
        except Exception as exc:  # noqa: BLE001 - handed to the reader, who raises it
            self.queue.put_nowait(exc)

    async def next(self) -> Any:
        """The next event, None at the end; the provider's error is raised here."""
        item = await self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def ready(self) -> Any:
        """Like ``next`` without waiting: ``_NOTHING_YET`` when no event has arrived."""
        try:
            item = self.queue.get_nowait()
        except asyncio.QueueEmpty:
            return _NOTHING_YET
        if isinstance(item, BaseException):
            raise item
        return item

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


async def _abandoned(kernel: "Kernel", ident: "Identity", target: Target, req: ChatRequest, streamed: list[str],
                     reservation: scopes.Reservation | None, *, charge_caller: bool) -> None:
    """A stream that ended before the provider's usage arrived (client gone, provider error): the prompt and
    what was streamed, estimated, so stopping early is never free; nothing when nothing came. When the stream
    was cut off, ``stream_llm`` itself bills the caller that estimate (``charge_caller`` False): only the token's
    reservation is settled here."""
    if not streamed:
        await _release(kernel, reservation)
        return
    from gofannon.services import users

    prompt = len(json.dumps(req.messages, ensure_ascii=False, default=str))
    usage = Usage(input_tokens=math.ceil(prompt / CHARS_PER_TOKEN),
                  output_tokens=math.ceil(sum(len(s) for s in streamed) / CHARS_PER_TOKEN))
    cost = _cost(target, usage)
    metadata: dict[str, Any] = {
        "provider": target.provider, "model": target.model, "inputTokens": usage.input_tokens,
        "outputTokens": usage.output_tokens, "estimated": True, "streamAbandoned": True}
    if not charge_caller:
        await scopes.settle(kernel, reservation, cost)
        return
    try:
        if req.workspace_id:  # a shared workspace pays as for any call made in it
            from gofannon.services import workspace_budgets

            metadata["workspaceId"] = req.workspace_id
            await asyncio.gather(users.charge(kernel, ident.uid, cost, metadata), workspace_budgets.charge(
                kernel, req.workspace_id, ident.uid, cost, f"{target.provider}/{target.model}"))
        else:
            await users.charge(kernel, ident.uid, cost, metadata)
    finally:
        await scopes.settle(kernel, reservation, cost)


# -- agents ---------------------------------------------------------------------------------------------
def agent_input(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The last user message: the whole input when it is a JSON object, else ``{"inputText": text}``."""
    for msg in reversed(messages):
        if msg.get("role") == "user":
            text = message_text(msg.get("content"))
            stripped = text.strip()
            if stripped.startswith("{"):
                try:
                    parsed = json.loads(stripped)
                except ValueError:
                    parsed = None
                if isinstance(parsed, dict):
                    return parsed
            return {"inputText": text}
    raise InvalidRequest("An agent model needs a user message: its input is the last one.", "messages")


def agent_answer(result: Any) -> str:
    """The agent's ``outputText``, or its result as JSON text."""
    if isinstance(result, dict) and isinstance(result.get("outputText"), str):
        return result["outputText"]
    if isinstance(result, str):
        return result
    return json.dumps(result, ensure_ascii=False, default=str)


async def run_agent(kernel: "Kernel", ident: "Identity", target: Target, req: ChatRequest) -> str:
    """Run a deployed agent as the caller (its own LLM calls are charged to the caller inside the run)."""
    from gofannon.services import deployments

    input_dict = agent_input(req.messages)
    await scopes.check_budget(kernel, ident)
    try:
        result = await deployments.run_agent(kernel, ident, target.agent or {}, input_dict, record=True)
    except GofannonError as exc:
        if exc.status == 422:  # the agent's declared input did not match (validateInput)
            raise InvalidRequest(f"The agent's input does not match its schema: {exc.detail}", "messages") from None
        raise
    return agent_answer(result)
