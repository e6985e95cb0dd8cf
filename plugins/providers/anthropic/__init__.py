"""Provider plugin ``anthropic``: the Messages API over HTTP — extended thinking (a token budget from
``reasoning_effort``, or adaptive thinking with an effort for the models that take it), tool use, prompt
caching of a ``cache_prefix``. Answers come back in the normalised shape: tool uses as OpenAI-style
``tool_calls``, thinking as ``reasoning_content``, stop reasons as OpenAI's finish reasons. OpenAI's request
options are translated (tool_choice, parallel_tool_calls, stop, user, response_format: json_object as a system
instruction, json_schema as a forced tool whose input is the answer); see docs/providers.md for what is refused."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Callable

from gofannon import hookimpl
from gofannon.llm import Completion, LlmCall, StreamEvent, UnsupportedFeature, Usage, VendorError, message_text
from gofannon.llm.http import sse_events
from gofannon_plugins.providers import translate

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
#: Thinking budgets for ``reasoning_effort`` (litellm's mapping, extended to xhigh/max).
BUDGETS = {"minimal": 1024, "low": 1024, "medium": 2048, "high": 4096, "xhigh": 8192, "max": 16384}
ADAPTIVE_MODELS = ("claude-opus-4-7", "claude-opus-4-8", "claude-mythos")


#: Anthropic's stop reasons in OpenAI's words (``pause_turn``: a server tool paused the turn, the text is whole so far).
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
          "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter"}


def finish_reason(stop_reason: str | None) -> str | None:
    return None if stop_reason is None else FINISH.get(stop_reason, "stop")


#: Content blocks agents may already write in Anthropic's own shape; they pass unchanged.
NATIVE_BLOCKS = frozenset({"text", "image", "document", "search_result", "tool_use", "tool_result", "thinking",
                           "redacted_thinking"})


def _blocks(provider: str, content: Any) -> list[dict[str, Any]]:
    """OpenAI content parts as Anthropic content blocks: ``image_url`` becomes an image block (base64 source for
    a data: URL, url source otherwise); Anthropic's own blocks (text with ``cache_control``, documents, ...)
    pass unchanged; anything else is refused."""
    if not isinstance(content, list):
        return [{"type": "text", "text": text} for text in [message_text(content)] if text]
    out: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in NATIVE_BLOCKS:
            if kind != "text" or part.get("text"):
                out.append(part)
            continue
        for piece in translate.parts(provider, [part]):  # image_url, untyped text; anything else is refused
            if isinstance(piece, str):
                out.append({"type": "text", "text": piece})
            elif piece.data is not None:
                out.append({"type": "image", "source": {"type": "base64", "media_type": piece.mime, "data": piece.data}})
            else:
                out.append({"type": "image", "source": {"type": "url", "url": piece.url}})
    return out


def convert_messages(messages: list[dict[str, Any]], cache_prefix: str | None,
                     provider: str = "anthropic") -> tuple[str | None, list[dict[str, Any]]]:
    """OpenAI-style messages → (system, Anthropic messages). System and developer messages become ``system``;
    tool results become ``tool_result`` blocks of a user turn; consecutive turns of one role are merged into one
    (the Messages API wants user and assistant to alternate, and all results of a parallel call in one turn)."""
    system = translate.system_text(messages) or None
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role")
        if role in translate.SYSTEM_ROLES:
            continue
        content: Any
        if role == "tool":
            role, content = "user", [{"type": "tool_result", "tool_use_id": m.get("tool_call_id"),
                                      "content": message_text(m.get("content"))}]
        elif role == "assistant":
            text = message_text(m.get("content"))
            content = [{"type": "text", "text": text}] if text else []
            for tc in m.get("tool_calls") or []:
                fn = tc.get("function") or {}
                content.append({"type": "tool_use", "id": tc.get("id"), "name": fn.get("name"),
                                "input": translate.arguments(fn.get("arguments"))})
            if not m.get("tool_calls") and isinstance(m.get("content"), (str, list)):
                content = m["content"]  # as written (an agent may pass back Anthropic's own blocks)
        else:
            role = "user"
            raw = m.get("content")
            content = raw if isinstance(raw, str) else _blocks(provider, raw)
        if out and out[-1]["role"] == role:
            prev = out[-1]
            prev["content"] = _as_blocks(prev["content"]) + _as_blocks(content)
        else:
            out.append({"role": role, "content": content})
    if cache_prefix and out:
        first = out[0]
        first["content"] = [{"type": "text", "text": cache_prefix, "cache_control": {"type": "ephemeral"}},
                            *_as_blocks(first["content"])]
    return system, out


def _as_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, list):
        return content
    text = message_text(content)
    return [{"type": "text", "text": text}] if text else []


def convert_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    out = []
    for tool in tools or []:
        fn = tool.get("function") if tool.get("type") == "function" else None
        if isinstance(fn, dict):
            out.append({"name": fn.get("name"), "description": fn.get("description", ""),
                        "input_schema": fn.get("parameters") or {"type": "object", "properties": {}}})
        else:
            out.append(tool)  # Anthropic-native tools (web search, ...) as configured
    return out or None


def schema_tool(call: LlmCall) -> str | None:
    """The forced tool standing in for ``response_format: json_schema`` (its input is the answer), or None."""
    fmt = translate.response_format(call.parameters.get("response_format"))
    return fmt.name if fmt is not None and fmt.kind == "json_schema" else None


def request_body(call: LlmCall) -> dict[str, Any]:
    provider = call.provider
    system, messages = convert_messages(call.messages, call.extra.get("cache_prefix"), provider)
    p = call.parameters
    translate.refuse_penalties(provider, p)
    body: dict[str, Any] = {"model": call.model, "messages": messages,
                            "max_tokens": int(p.get("max_tokens") or DEFAULT_MAX_TOKENS)}
    thinking = False
    if call.reasoning_effort:
        if any(call.model.startswith(m) for m in ADAPTIVE_MODELS):
            body["thinking"] = {"type": "adaptive"}
            body["output_config"] = {"effort": call.reasoning_effort}
            thinking = True
        elif call.model_config.get("supports_thinking", True):
            budget = BUDGETS.get(call.reasoning_effort, 2048)
            body["thinking"] = {"type": "enabled", "budget_tokens": budget}
            body["max_tokens"] = max(body["max_tokens"], budget + 1024)
            thinking = True
    for name, target in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k")):
        if name in p and not thinking:
            body[target] = p[name]
    stops = translate.stop_sequences(p.get("stop", p.get("stop_sequences")))
    translate.refuse_blank_stops(provider, stops)
    if stops:
        body["stop_sequences"] = stops
    if isinstance(p.get("user"), str) and p["user"]:
        body["metadata"] = {"user_id": p["user"]}
    tools = convert_tools(call.tools)
    choice = translate.tool_choice(p.get("tool_choice"), call.tools)
    system, fmt = translate.answer_format(provider, translate.response_format(p.get("response_format")), system,
                                          has_tools=bool(tools), thinking=bool(thinking))
    if fmt is not None:  # json_schema: one forced tool whose input is the answer
        tools = [{"name": fmt.name, "description": "Give the answer as this tool's input.", "input_schema": fmt.schema}]
        choice = translate.ToolChoice("function", fmt.name)
    if system:
        body["system"] = system
    if tools:
        body["tools"] = tools
        tc: dict[str, Any] | None = None
        if choice is not None:
            if thinking and choice.mode in ("required", "function"):
                raise UnsupportedFeature(provider, f"tool_choice '{choice.mode}' with reasoning_effort (extended "
                                                   "thinking only allows tool_choice auto or none)")
            tc = {"type": {"auto": "auto", "none": "none", "required": "any", "function": "tool"}[choice.mode]}
            if choice.mode == "function":
                tc["name"] = choice.name
        if p.get("parallel_tool_calls") is False and (tc is None or tc["type"] != "none"):
            tc = {**(tc or {"type": "auto"}), "disable_parallel_tool_use": True}
        if tc is not None:
            body["tool_choice"] = tc
    return body


def headers(call: LlmCall) -> dict[str, str]:
    h = {"Content-Type": "application/json", "anthropic-version": API_VERSION}
    if call.api_key:
        h["x-api-key"] = call.api_key
    return h


def _usage(raw: dict[str, Any] | None) -> Usage:
    raw = raw or {}
    cached = int(raw.get("cache_read_input_tokens") or 0)
    return Usage(input_tokens=int(raw.get("input_tokens") or 0) + cached + int(raw.get("cache_creation_input_tokens") or 0),
                 output_tokens=int(raw.get("output_tokens") or 0), cached_input_tokens=cached)


def parse(data: dict[str, Any], answer_tool: str | None = None) -> Completion:
    """A Messages answer in the normalised shape; the ``answer_tool``'s input (json_schema) is the content."""
    texts: list[str] = []
    thinking: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    finish = finish_reason(data.get("stop_reason"))
    for block in data.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "thinking":
            thinking.append(block.get("thinking", ""))
        elif kind == "tool_use" and answer_tool is not None and block.get("name") == answer_tool:
            texts.append(json.dumps(block.get("input") or {}))
        elif kind == "tool_use":
            tool_calls.append({"id": block.get("id"), "type": "function",
                               "function": {"name": block.get("name"), "arguments": json.dumps(block.get("input") or {})}})
    if answer_tool is not None and finish == "tool_calls" and not tool_calls:
        finish = "stop"  # the forced answer tool is how json_schema answers, not a call for the client
    thoughts: dict[str, Any] = {}
    if tool_calls:
        thoughts["tool_calls"] = tool_calls
    if thinking:
        thoughts["reasoning_content"] = "\n".join(thinking)
    return Completion("\n".join(texts), thoughts or None, _usage(data.get("usage")), finish)


class AnthropicProvider:
    slug = "anthropic"

    def catalog(self, settings: Any) -> dict[str, dict[str, Any]]:
        return {}  # config/catalog/anthropic.json

    @staticmethod
    def url(call: LlmCall) -> str:
        return f"{(call.base_url or DEFAULT_BASE_URL).rstrip('/')}/v1/messages"

    async def complete(self, call: LlmCall) -> Completion:
        body = request_body(call)
        data = await call.http.request_json("POST", self.url(call), headers=headers(call), body=body,
                                            timeout=call.timeout)
        if data.get("type") == "error":
            err = data.get("error") or {}
            raise VendorError(502, str(err.get("message")), code=err.get("type"))
        return parse(data, schema_tool(call))

    async def stream(self, call: LlmCall) -> AsyncIterator[StreamEvent]:
        body = request_body(call)
        body["stream"] = True
        answer_tool = schema_tool(call)
        blocks: dict[int, dict[str, Any]] = {}
        partial: dict[int, list[str]] = {}
        call_index: dict[int, int] = {}  # Anthropic block index → OpenAI tool-call index
        pieces = translate.ToolCallPieces()
        message: dict[str, Any] = {}
        usage: dict[str, Any] = {}
        async with call.http.open("POST", self.url(call), headers=headers(call), body=body, timeout=call.timeout) as resp:
            async for _name, data in sse_events(resp):
                try:
                    event = json.loads(data)
                except ValueError:
                    continue
                kind = event.get("type")
                if kind == "message_start":
                    message = event.get("message") or {}
                    usage.update(message.get("usage") or {})
                elif kind == "content_block_start":
                    block = blocks[event["index"]] = dict(event.get("content_block") or {})
                    if block.get("type") == "tool_use" and block.get("name") != answer_tool:
                        call_index[event["index"]] = len(pieces.calls)
                        yield StreamEvent("tool_call", tool_call=pieces.start(str(block.get("id")), str(block.get("name"))))
                elif kind == "content_block_delta":
                    block, delta = blocks.setdefault(event["index"], {}), event.get("delta") or {}
                    if delta.get("type") == "text_delta":
                        block["text"] = block.get("text", "") + delta.get("text", "")
                        yield StreamEvent("content", delta.get("text", ""))
                    elif delta.get("type") == "thinking_delta":
                        block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
                        yield StreamEvent("thoughts", delta.get("thinking", ""))
                    elif delta.get("type") == "input_json_delta":
                        piece = delta.get("partial_json", "")
                        partial.setdefault(event["index"], []).append(piece)
                        if not piece:
                            continue
                        if event["index"] in call_index:
                            yield StreamEvent("tool_call", tool_call=pieces.add(call_index[event["index"]], piece))
                        elif block.get("name") == answer_tool:
                            yield StreamEvent("content", piece)  # json_schema: the forced tool's input is the answer
                elif kind == "message_delta":
                    usage.update(event.get("usage") or {})
                    message["stop_reason"] = (event.get("delta") or {}).get("stop_reason")
                elif kind == "error":
                    err = event.get("error") or {}
                    raise VendorError(502, str(err.get("message")), code=err.get("type"))
        for index, parts in partial.items():
            if answer_tool is not None and blocks[index].get("name") == answer_tool:
                blocks[index] = {"type": "text", "text": "".join(parts)}  # the answer, exactly as it was streamed
                continue
            try:
                blocks[index]["input"] = json.loads("".join(parts) or "{}")
            except ValueError:
                blocks[index]["input"] = {}
        final = parse({"content": [blocks[i] for i in sorted(blocks)], "usage": usage,
                       "stop_reason": message.get("stop_reason")}, answer_tool)
        yield StreamEvent("done", completion=final)


@hookimpl
def register_providers(register: Callable[..., None], settings: Any) -> None:
    register(AnthropicProvider())
