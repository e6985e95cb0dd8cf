"""Provider plugin ``gemini``: Google's generateContent API over HTTP — thinking (``reasoning_effort`` →
a thinking budget or level, with thought summaries), function calling and Google's built-in tools
(``google_search``, ``urlContext``, ``codeExecution``) as the catalog configures them."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Callable

from gofannon import hookimpl
from gofannon.llm import Completion, LlmCall, StreamEvent, Usage, VendorError, message_text
from gofannon.llm.http import sse_events

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
BUDGETS = {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768, "max": 32768}
_CONFIG = {"temperature": "temperature", "top_p": "topP", "top_k": "topK", "max_tokens": "maxOutputTokens",
           "max_output_tokens": "maxOutputTokens", "stop": "stopSequences", "seed": "seed",
           "presence_penalty": "presencePenalty", "frequency_penalty": "frequencyPenalty"}


def request_body(call: LlmCall) -> dict[str, Any]:
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for m in call.messages:
        role = m.get("role")
        if role == "system":
            continue
        if role == "tool":
            name = m.get("name") or names.get(str(m.get("tool_call_id")), "tool")
            contents.append({"role": "user", "parts": [{"functionResponse": {
                "name": name, "response": {"content": message_text(m.get("content"))}}}]})
            continue
        parts: list[dict[str, Any]] = [{"text": message_text(m.get("content"))}] if message_text(m.get("content")) else []
        for tc in m.get("tool_calls") or []:
            fn = tc.get("function") or {}
            names[str(tc.get("id"))] = fn.get("name", "")
            try:
                args = json.loads(fn.get("arguments") or "{}")
            except ValueError:
                args = {}
            parts.append({"functionCall": {"name": fn.get("name"), "args": args}})
        contents.append({"role": "model" if role == "assistant" else "user", "parts": parts or [{"text": ""}]})
    body: dict[str, Any] = {"contents": contents}
    system = "\n\n".join(message_text(m.get("content")) for m in call.messages if m.get("role") == "system")
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    config: dict[str, Any] = {}
    for name, value in call.parameters.items():
        if name in _CONFIG:
            config[_CONFIG[name]] = [value] if name == "stop" and isinstance(value, str) else value
    if call.reasoning_effort:
        if call.model.startswith("gemini-3"):
            level = "low" if call.reasoning_effort in ("minimal", "low") else "high"
            config["thinkingConfig"] = {"includeThoughts": True, "thinkingLevel": level}
        else:
            config["thinkingConfig"] = {"includeThoughts": True,
                                        "thinkingBudget": BUDGETS.get(call.reasoning_effort, 8192)}
    if config:
        body["generationConfig"] = config
    declarations: list[dict[str, Any]] = []
    tools: list[dict[str, Any]] = []
    for tool in call.tools or []:
        fn = tool.get("function") if tool.get("type") == "function" else None
        if isinstance(fn, dict):
            declarations.append({k: v for k, v in fn.items() if k in ("name", "description", "parameters")})
        else:
            tools.append(tool)
    if declarations:
        tools.insert(0, {"functionDeclarations": declarations})
    if tools:
        body["tools"] = tools
    return body


def _usage(raw: dict[str, Any] | None) -> Usage:
    raw = raw or {}
    thoughts = int(raw.get("thoughtsTokenCount") or 0)
    return Usage(input_tokens=int(raw.get("promptTokenCount") or 0),
                 output_tokens=int(raw.get("candidatesTokenCount") or 0) + thoughts,
                 cached_input_tokens=int(raw.get("cachedContentTokenCount") or 0), reasoning_tokens=thoughts)


def _parts(data: dict[str, Any]) -> list[dict[str, Any]]:
    candidates = data.get("candidates") or []
    if not candidates:
        return []
    return list((candidates[0].get("content") or {}).get("parts") or [])


def parse_parts(parts: list[dict[str, Any]], usage: Usage, finish: str | None) -> Completion:
    texts, thoughts, calls = [], [], []
    for i, part in enumerate(parts):
        if "functionCall" in part:
            fc = part["functionCall"]
            calls.append({"id": fc.get("id") or f"call_{i}", "type": "function",
                          "function": {"name": fc.get("name"), "arguments": json.dumps(fc.get("args") or {})}})
        elif part.get("thought"):
            thoughts.append(part.get("text", ""))
        elif "text" in part:
            texts.append(part["text"])
    out: dict[str, Any] = {}
    if calls:
        out["tool_calls"] = calls
    if thoughts:
        out["reasoning_content"] = "".join(thoughts)
    return Completion("".join(texts), out or None, usage, finish)


def _check_blocked(data: dict[str, Any]) -> None:
    reason = (data.get("promptFeedback") or {}).get("blockReason")
    if reason and not data.get("candidates"):
        raise VendorError(400, f"Gemini blocked the prompt ({reason})")


class GeminiProvider:
    slug = "gemini"

    def catalog(self, settings: Any) -> dict[str, dict[str, Any]]:
        return {}  # config/catalog/gemini.json

    @staticmethod
    def url(call: LlmCall, method: str) -> str:
        return f"{(call.base_url or DEFAULT_BASE_URL).rstrip('/')}/v1beta/models/{call.model}:{method}"

    @staticmethod
    def headers(call: LlmCall) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if call.api_key:
            h["x-goog-api-key"] = call.api_key
        return h

    async def complete(self, call: LlmCall) -> Completion:
        data = await call.http.request_json("POST", self.url(call, "generateContent"), headers=self.headers(call),
                                            body=request_body(call), timeout=call.timeout)
        _check_blocked(data)
        finish = ((data.get("candidates") or [{}])[0]).get("finishReason")
        return parse_parts(_parts(data), _usage(data.get("usageMetadata")), finish)

    async def stream(self, call: LlmCall) -> AsyncIterator[StreamEvent]:
        parts: list[dict[str, Any]] = []
        usage = Usage()
        finish = None
        async with call.http.open("POST", self.url(call, "streamGenerateContent"), headers=self.headers(call),
                                  body=request_body(call), timeout=call.timeout, params={"alt": "sse"}) as resp:
            async for _name, data in sse_events(resp):
                try:
                    chunk = json.loads(data)
                except ValueError:
                    continue
                _check_blocked(chunk)
                if chunk.get("usageMetadata"):
                    usage = _usage(chunk["usageMetadata"])
                finish = ((chunk.get("candidates") or [{}])[0]).get("finishReason") or finish
                for part in _parts(chunk):
                    parts.append(part)
                    if "text" in part:
                        yield StreamEvent("thoughts" if part.get("thought") else "content", part["text"])
        yield StreamEvent("done", completion=parse_parts(parts, usage, finish))


@hookimpl
def register_providers(register: Callable[..., None], settings: Any) -> None:
    register(GeminiProvider())
