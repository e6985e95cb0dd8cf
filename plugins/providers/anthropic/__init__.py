"""Provider plugin ``anthropic``: the Messages API over HTTP — extended thinking (a token budget from
``reasoning_effort``, or adaptive thinking with an effort for the models that take it), tool use, prompt
caching of a ``cache_prefix``. Answers come back in the normalised shape: tool uses as OpenAI-style
``tool_calls``, thinking as ``reasoning_content``."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Callable

from gofannon import hookimpl
from gofannon.llm import Completion, LlmCall, StreamEvent, Usage, VendorError, message_text
from gofannon.llm.http import sse_events

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
#: Thinking budgets for ``reasoning_effort`` (litellm's mapping, extended to xhigh/max).
BUDGETS = {"minimal": 1024, "low": 1024, "medium": 2048, "high": 4096, "xhigh": 8192, "max": 16384}
ADAPTIVE_MODELS = ("claude-opus-4-7", "claude-opus-4-8", "claude-mythos")


def convert_messages(messages: list[dict[str, Any]], cache_prefix: str | None) -> tuple[str | None, list[dict[str, Any]]]:
    """OpenAI-style messages → (system, Anthropic messages)."""
    system = "\n\n".join(message_text(m.get("content")) for m in messages if m.get("role") == "system") or None
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role")
        if role == "system":
            continue
        if role == "tool":
            block = {"type": "tool_result", "tool_use_id": m.get("tool_call_id"), "content": message_text(m.get("content"))}
            out.append({"role": "user", "content": [block]})
            continue
        content = m.get("content")
        if role == "assistant" and m.get("tool_calls"):
            blocks: list[dict[str, Any]] = [{"type": "text", "text": message_text(content)}] if message_text(content) else []
            for tc in m["tool_calls"]:
                fn = tc.get("function") or {}
                try:
                    args = json.loads(fn.get("arguments") or "{}")
                except ValueError:
                    args = {}
                blocks.append({"type": "tool_use", "id": tc.get("id"), "name": fn.get("name"), "input": args})
            content = blocks
        out.append({"role": "assistant" if role == "assistant" else "user", "content": content})
    if cache_prefix and out:
        first = out[0]
        blocks = first["content"] if isinstance(first["content"], list) else [{"type": "text", "text": message_text(first["content"])}]
        first["content"] = [{"type": "text", "text": cache_prefix, "cache_control": {"type": "ephemeral"}}, *blocks]
    return system, out


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


def request_body(call: LlmCall) -> dict[str, Any]:
    system, messages = convert_messages(call.messages, call.extra.get("cache_prefix"))
    p = call.parameters
    body: dict[str, Any] = {"model": call.model, "messages": messages,
                            "max_tokens": int(p.get("max_tokens") or DEFAULT_MAX_TOKENS)}
    if system:
        body["system"] = system
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
    for name, target in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k"),
                         ("stop", "stop_sequences"), ("stop_sequences", "stop_sequences")):
        if name in p and not (thinking and name in ("temperature", "top_k", "top_p")):
            value = p[name]
            body[target] = [value] if target == "stop_sequences" and isinstance(value, str) else value
    tools = convert_tools(call.tools)
    if tools:
        body["tools"] = tools
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


def parse(data: dict[str, Any]) -> Completion:
    texts: list[str] = []
    thinking: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in data.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "thinking":
            thinking.append(block.get("thinking", ""))
        elif kind == "tool_use":
            tool_calls.append({"id": block.get("id"), "type": "function",
                               "function": {"name": block.get("name"), "arguments": json.dumps(block.get("input") or {})}})
    thoughts: dict[str, Any] = {}
    if tool_calls:
        thoughts["tool_calls"] = tool_calls
    if thinking:
        thoughts["reasoning_content"] = "\n".join(thinking)
    return Completion("\n".join(texts), thoughts or None, _usage(data.get("usage")), data.get("stop_reason"))


class AnthropicProvider:
    slug = "anthropic"

    def catalog(self, settings: Any) -> dict[str, dict[str, Any]]:
        return {}  # config/catalog/anthropic.json

    @staticmethod
    def url(call: LlmCall) -> str:
        return f"{(call.base_url or DEFAULT_BASE_URL).rstrip('/')}/v1/messages"

    async def complete(self, call: LlmCall) -> Completion:
        data = await call.http.request_json("POST", self.url(call), headers=headers(call), body=request_body(call),
                                            timeout=call.timeout)
        if data.get("type") == "error":
            err = data.get("error") or {}
            raise VendorError(502, str(err.get("message")), code=err.get("type"))
        return parse(data)

    async def stream(self, call: LlmCall) -> AsyncIterator[StreamEvent]:
        body = request_body(call)
        body["stream"] = True
        blocks: dict[int, dict[str, Any]] = {}
        partial: dict[int, list[str]] = {}
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
                    blocks[event["index"]] = dict(event.get("content_block") or {})
                elif kind == "content_block_delta":
                    block, delta = blocks.setdefault(event["index"], {}), event.get("delta") or {}
                    if delta.get("type") == "text_delta":
                        block["text"] = block.get("text", "") + delta.get("text", "")
                        yield StreamEvent("content", delta.get("text", ""))
                    elif delta.get("type") == "thinking_delta":
                        block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
                        yield StreamEvent("thoughts", delta.get("thinking", ""))
                    elif delta.get("type") == "input_json_delta":
                        partial.setdefault(event["index"], []).append(delta.get("partial_json", ""))
                elif kind == "message_delta":
                    usage.update(event.get("usage") or {})
                    message["stop_reason"] = (event.get("delta") or {}).get("stop_reason")
                elif kind == "error":
                    err = event.get("error") or {}
                    raise VendorError(502, str(err.get("message")), code=err.get("type"))
        for index, pieces in partial.items():
            try:
                blocks[index]["input"] = json.loads("".join(pieces) or "{}")
            except ValueError:
                blocks[index]["input"] = {}
        final = parse({"content": [blocks[i] for i in sorted(blocks)], "usage": usage,
                       "stop_reason": message.get("stop_reason")})
        yield StreamEvent("done", completion=final)


@hookimpl
def register_providers(register: Callable[..., None], settings: Any) -> None:
    register(AnthropicProvider())
