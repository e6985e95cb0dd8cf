"""OpenAI's wire formats (chat completions and the Responses API), shared with ``openai_compat``."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

from gofannon.llm import FINISH_REASONS, Completion, LlmCall, StreamEvent, Usage, VendorError, message_text
from gofannon.llm.http import sse_events

#: Parameters OpenAI's chat completions accepts; catalog-only knobs (``show_thinking``) never go out.
CHAT_PARAMETERS = frozenset({
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "presence_penalty", "frequency_penalty",
    "seed", "stop", "n", "logprobs", "top_logprobs", "response_format", "user", "verbosity", "tool_choice",
    "parallel_tool_calls", "logit_bias", "service_tier", "web_search_options", "prediction", "modalities",
})
INTERNAL_PARAMETERS = frozenset({"show_thinking", "reasoningEffort"})
TERMINAL = {"completed", "failed", "cancelled", "incomplete"}


def is_reasoning_model(model: str) -> bool:
    name = model.rsplit("/", 1)[-1]
    return name.startswith(("o1", "o3", "o4", "gpt-5"))


def auth_headers(call: LlmCall) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if call.api_key:
        headers["Authorization"] = f"Bearer {call.api_key}"
    for k, v in (call.provider_config.get("headers") or {}).items():
        headers[str(k)] = str(v)
    return headers


def chat_body(call: LlmCall, *, passthrough: bool = False) -> dict[str, Any]:
    """The chat-completions request. ``passthrough`` (OpenAI-compatible servers) forwards parameters
    OpenAI does not know, as those servers take their own options, and sends developer messages as system
    messages (many servers' chat templates know only system, user, assistant and tool)."""
    params = {k: v for k, v in call.parameters.items() if k not in INTERNAL_PARAMETERS}
    if not passthrough:
        params = {k: v for k, v in params.items() if k in CHAT_PARAMETERS}
    if "num_predict" in params and "max_tokens" not in params:
        params["max_tokens"] = params.pop("num_predict")
    if is_reasoning_model(call.model) and "max_tokens" in params and not passthrough:
        params.setdefault("max_completion_tokens", params.pop("max_tokens"))
    messages = call.messages
    if passthrough and any(m.get("role") == "developer" for m in messages):
        messages = [dict(m, role="system") if m.get("role") == "developer" else m for m in messages]
    body: dict[str, Any] = {"model": call.model, "messages": messages, **params}
    if call.reasoning_effort:
        body["reasoning_effort"] = call.reasoning_effort
    if call.tools:
        body["tools"] = call.tools
    return body


def _usage_from_chat(raw: dict[str, Any] | None) -> Usage:
    raw = raw or {}
    return Usage(
        input_tokens=int(raw.get("prompt_tokens") or 0),
        output_tokens=int(raw.get("completion_tokens") or 0),
        cached_input_tokens=int((raw.get("prompt_tokens_details") or {}).get("cached_tokens") or 0),
        reasoning_tokens=int((raw.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0),
    )


def _thoughts(reasoning: str | None, tool_calls: list[dict[str, Any]] | None, extra: dict[str, Any] | None = None) -> Any:
    thoughts: dict[str, Any] = {}
    if tool_calls:
        thoughts["tool_calls"] = tool_calls
    if reasoning:
        thoughts["reasoning_content"] = reasoning
    thoughts.update(extra or {})
    return thoughts or None


def chat_finish(reason: Any, called: bool) -> str | None:
    """A chat-completions ``finish_reason`` in OpenAI's own words: OpenAI's pass as they are; what other
    compatible servers say instead (``function_call``, ``max_tokens``, ``eos``, ...) is mapped."""
    if reason is None or reason in FINISH_REASONS:
        return reason  # type: ignore[no-any-return]
    if reason == "function_call":
        return "tool_calls"
    if reason in ("max_tokens", "max_output_tokens", "model_length"):
        return "length"
    return "tool_calls" if called else "stop"


def parse_chat(data: dict[str, Any]) -> Completion:
    choices = data.get("choices") or []
    if not choices:
        raise VendorError(502, f"the provider answered no choices: {json.dumps(data)[:200]}")
    message = choices[0].get("message") or {}
    content = message.get("content")
    if isinstance(content, list):
        content = "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    extra = {"citations": data["citations"]} if data.get("citations") else None
    return Completion(content=content or "", thoughts=_thoughts(reasoning, message.get("tool_calls"), extra),
                      usage=_usage_from_chat(data.get("usage")),
                      finish_reason=chat_finish(choices[0].get("finish_reason"), bool(message.get("tool_calls"))))


async def complete_chat(call: LlmCall, url: str, *, passthrough: bool = False) -> Completion:
    data = await call.http.request_json("POST", url, headers=auth_headers(call),
                                        body=chat_body(call, passthrough=passthrough), timeout=call.timeout)
    return parse_chat(data)


async def stream_chat(call: LlmCall, url: str, *, passthrough: bool = False) -> AsyncIterator[StreamEvent]:
    body = chat_body(call, passthrough=passthrough)
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    content: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    usage = Usage()
    finish: str | None = None
    async with call.http.open("POST", url, headers=auth_headers(call), body=body, timeout=call.timeout) as resp:
        async for _event, data in sse_events(resp):
            if data.strip() == "[DONE]":
                break
            try:
                chunk = json.loads(data)
            except ValueError:
                continue
            if not isinstance(chunk, dict):
                continue
            err = chunk.get("error")
            if err and not chunk.get("choices"):  # the vendor failed mid-stream and said so in the stream
                message = err.get("message") if isinstance(err, dict) else err
                code = err.get("code") or err.get("type") if isinstance(err, dict) else None
                raise VendorError(502, str(message or "the provider's stream ended in an error"),
                                  code=str(code) if code else None)
            if chunk.get("usage"):
                usage = _usage_from_chat(chunk["usage"])
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                finish = choice.get("finish_reason") or finish
                think = delta.get("reasoning_content") or delta.get("reasoning")
                if think:
                    reasoning.append(think)
                    yield StreamEvent("thoughts", think)
                if delta.get("content"):
                    content.append(delta["content"])
                    yield StreamEvent("content", delta["content"])
                for tc in delta.get("tool_calls") or []:
                    index = int(tc.get("index", len(calls)))
                    slot = calls.setdefault(index, {"id": None, "type": "function",
                                                    "function": {"name": "", "arguments": ""}})
                    slot["id"] = tc.get("id") or slot["id"]
                    fn = tc.get("function") or {}
                    slot["function"]["name"] += fn.get("name") or ""
                    slot["function"]["arguments"] += fn.get("arguments") or ""
                    piece: dict[str, Any] = {"index": index, "function": {"arguments": fn.get("arguments") or ""}}
                    if tc.get("id"):
                        piece["id"], piece["type"] = tc["id"], "function"
                    if fn.get("name"):
                        piece["function"]["name"] = fn["name"]
                    yield StreamEvent("tool_call", tool_call=piece)
    tool_calls = [calls[i] for i in sorted(calls)] or None
    yield StreamEvent("done", completion=Completion("".join(content), _thoughts("".join(reasoning), tool_calls),
                                                    usage, chat_finish(finish, bool(tool_calls))))


# -- Responses API ------------------------------------------------------------------------------------
def responses_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Chat-style function tools become Responses-style; built-in tools (web_search, ...) pass as given."""
    out = []
    for tool in tools or []:
        if tool.get("type") == "function" and isinstance(tool.get("function"), dict):
            out.append({"type": "function", **tool["function"]})
        else:
            out.append(tool)
    return out or None


def responses_input(call: LlmCall) -> list[dict[str, Any]]:
    """OpenAI chat messages as Responses input items: text and image parts, assistant tool calls as
    ``function_call`` items and tool results as ``function_call_output`` (system messages go to ``instructions``)."""
    items: list[dict[str, Any]] = []
    for m in call.messages:
        role, content = m.get("role"), m.get("content")
        if role == "tool":
            items.append({"type": "function_call_output", "call_id": m.get("tool_call_id"),
                          "output": message_text(content)})
        elif role == "assistant":
            if message_text(content):
                items.append({"role": "assistant", "content": message_text(content)})
            for tc in m.get("tool_calls") or []:
                fn = tc.get("function") or {}
                items.append({"type": "function_call", "call_id": tc.get("id"), "name": fn.get("name"),
                              "arguments": fn.get("arguments") or "{}"})
        elif role in ("user", "developer"):
            if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "image_url" for p in content):
                parts: list[dict[str, Any]] = []
                for part in content:
                    if isinstance(part, dict) and part.get("type") == "image_url":
                        ref = part.get("image_url")
                        url = ref.get("url") if isinstance(ref, dict) else ref
                        parts.append({"type": "input_image", "image_url": url,
                                      **({"detail": ref["detail"]} if isinstance(ref, dict) and ref.get("detail") else {})})
                    elif isinstance(part, dict) and part.get("text"):
                        parts.append({"type": "input_text", "text": part["text"]})
                items.append({"role": role, "content": parts})
            elif message_text(content):
                items.append({"role": role, "content": message_text(content)})
    return items


#: Chat options the Responses API has no equivalent for: a call using them goes to chat completions.
CHAT_ONLY = ("stop", "seed", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs", "logit_bias", "n")


def responses_body(call: LlmCall) -> dict[str, Any] | None:
    """The Responses request, or None when the chat path must be used: no user text, or an option only chat
    completions has."""
    if any(call.parameters.get(name) is not None for name in CHAT_ONLY):
        return None
    instructions = "\n\n".join(message_text(m.get("content")) for m in call.messages if m.get("role") == "system")
    items = responses_input(call)
    if not any(i.get("role") == "user" for i in items):
        return None
    body: dict[str, Any] = {"model": call.model, "input": items, "background": True, "store": True}
    if instructions:
        body["instructions"] = instructions
    if call.reasoning_effort:
        body["reasoning"] = {"effort": call.reasoning_effort, "summary": "auto"}
    tools = responses_tools(call.tools)
    if tools:
        body["tools"] = tools
    params = call.parameters
    if params.get("max_tokens") is not None or params.get("max_output_tokens") is not None:
        body["max_output_tokens"] = params.get("max_output_tokens", params.get("max_tokens"))
    for name in ("temperature", "top_p", "parallel_tool_calls", "user", "service_tier"):
        if name in params and not (call.reasoning_effort and name in ("temperature", "top_p")):
            body[name] = params[name]
    choice = params.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        choice = {"type": "function", "name": choice["function"].get("name")}  # the Responses API's flat shape
    if choice is not None:
        body["tool_choice"] = choice
    fmt = params.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("json_schema"), dict):
        body["text"] = {"format": {"type": "json_schema", **fmt["json_schema"]}}
    elif isinstance(fmt, dict) and fmt.get("type") in ("json_object", "text"):
        body["text"] = {"format": {"type": fmt["type"]}}
    return body


def responses_finish(data: dict[str, Any], called: bool) -> str | None:
    """A response's status in OpenAI chat's words: completed → stop (tool_calls when it called a function);
    incomplete → length or content_filter, by its reason."""
    status = data.get("status")
    if status == "completed":
        return "tool_calls" if called else "stop"
    if status == "incomplete":
        reason = (data.get("incomplete_details") or {}).get("reason")
        return "content_filter" if reason == "content_filter" else "length"
    return None


def parse_response(data: dict[str, Any]) -> Completion:
    summary: list[str] = []
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for item in data.get("output") or []:
        kind = item.get("type")
        if kind == "reasoning":
            summary.extend(s.get("text", "") for s in item.get("summary") or [] if isinstance(s, dict))
        elif kind == "message":
            texts.extend(p.get("text", "") for p in item.get("content") or []
                         if isinstance(p, dict) and p.get("type") in ("output_text", "text"))
        elif kind == "function_call":
            tool_calls.append({"id": item.get("call_id") or item.get("id"), "type": "function",
                               "function": {"name": item.get("name"), "arguments": item.get("arguments", "")}})
    usage_raw = data.get("usage") or {}
    usage = Usage(
        input_tokens=int(usage_raw.get("input_tokens") or 0),
        output_tokens=int(usage_raw.get("output_tokens") or 0),
        cached_input_tokens=int((usage_raw.get("input_tokens_details") or {}).get("cached_tokens") or 0),
        reasoning_tokens=int((usage_raw.get("output_tokens_details") or {}).get("reasoning_tokens") or 0),
    )
    thoughts: dict[str, Any] = {}
    if summary:
        thoughts["summary"] = summary
    if tool_calls:
        thoughts["tool_calls"] = tool_calls
    return Completion("".join(texts), thoughts or None, usage, responses_finish(data, bool(tool_calls)))


async def complete_responses(call: LlmCall, base: str, body: dict[str, Any]) -> Completion:
    """Create a background response and poll it until it ends: no cap besides the call's timeout
    (the reference gave up after 30 s, failing long reasoning requests)."""
    headers = auth_headers(call)
    data = await call.http.request_json("POST", f"{base}/responses", headers=headers, body=body, timeout=call.timeout)
    interval = 0.05
    try:
        while data.get("status") not in TERMINAL and data.get("status") is not None:
            await asyncio.sleep(interval)
            interval = min(2.0, interval * 2)
            data = await call.http.request_json("GET", f"{base}/responses/{data['id']}", headers=headers,
                                                timeout=call.timeout)
    except asyncio.CancelledError:  # our timeout (or a stopped run): don't leave it running, and paid for
        if data.get("id"):
            await asyncio.shield(_cancel(call, f"{base}/responses/{data['id']}/cancel", headers))
        raise
    status = data.get("status")
    if status in ("failed", "cancelled"):
        err = data.get("error") or {}
        raise VendorError(502, str(err.get("message") or f"the response ended {status}"), code=err.get("code"))
    return parse_response(data)


async def stream_responses(call: LlmCall, base: str, body: dict[str, Any]) -> AsyncIterator[StreamEvent]:
    """The Responses API streamed (``stream: true`` instead of background polling): text, reasoning summaries
    and function calls as they arrive; the final response object gives the whole answer and its usage."""
    body = {**body, "stream": True}
    body.pop("background", None)
    call_index: dict[int, int] = {}  # output_index → tool-call index
    final: dict[str, Any] | None = None
    async with call.http.open("POST", f"{base}/responses", headers=auth_headers(call), body=body,
                              timeout=call.timeout) as resp:
        async for _event, data in sse_events(resp):
            try:
                event = json.loads(data)
            except ValueError:
                continue
            kind = event.get("type")
            if kind == "response.output_text.delta" and event.get("delta"):
                yield StreamEvent("content", event["delta"])
            elif kind == "response.reasoning_summary_text.delta" and event.get("delta"):
                yield StreamEvent("thoughts", event["delta"])
            elif kind == "response.output_item.added" and (event.get("item") or {}).get("type") == "function_call":
                item = event["item"]
                index = call_index[int(event.get("output_index") or 0)] = len(call_index)
                yield StreamEvent("tool_call", tool_call={
                    "index": index, "id": item.get("call_id") or item.get("id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments") or ""}})
            elif kind == "response.function_call_arguments.delta" and event.get("delta"):
                at = call_index.get(int(event.get("output_index") or 0))
                if at is not None:
                    yield StreamEvent("tool_call", tool_call={"index": at, "function": {"arguments": event["delta"]}})
            elif kind in ("response.completed", "response.incomplete"):
                final = event.get("response") or {}
            elif kind in ("response.failed", "error"):
                err = (event.get("response") or {}).get("error") or event.get("error") or event
                raise VendorError(502, str(err.get("message") or "the response failed"), code=err.get("code"))
    if final is None:
        raise VendorError(502, "the response stream ended before the response was complete")
    yield StreamEvent("done", completion=parse_response(final))


async def _cancel(call: LlmCall, url: str, headers: dict[str, str]) -> None:
    try:
        async with call.http.open("POST", url, headers=headers, timeout=5) as resp:
            await resp.read()
    except Exception:  # noqa: BLE001 - best effort: the response expires on its own
        pass
