"""Provider plugin ``gemini``: Google's generateContent API over HTTP — thinking (``reasoning_effort`` →
a thinking budget or level, with thought summaries), function calling and Google's built-in tools
(``google_search``, ``urlContext``, ``codeExecution``) as the catalog configures them. OpenAI's options map to
``generationConfig`` (JSON mode, schema, stop, seed, penalties) and ``toolConfig``; finish reasons come back in
OpenAI's words; function calls stream as tool-call pieces."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Callable

from gofannon import hookimpl
from gofannon.llm import Completion, LlmCall, StreamEvent, UnsupportedFeature, Usage, VendorError, message_text
from gofannon.llm.http import sse_events
from gofannon_plugins.providers import translate

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
BUDGETS = {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768, "max": 32768}
_CONFIG = {"temperature": "temperature", "top_p": "topP", "top_k": "topK", "max_tokens": "maxOutputTokens",
           "max_output_tokens": "maxOutputTokens", "stop": "stopSequences", "seed": "seed",
           "presence_penalty": "presencePenalty", "frequency_penalty": "frequencyPenalty"}


#: Gemini's finish reasons in OpenAI's words; STOP with function calls is ``tool_calls``; unknown → stop.
FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
          "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
          "IMAGE_SAFETY": "content_filter", "IMAGE_PROHIBITED_CONTENT": "content_filter"}
#: Google's documented stand-in signature for function calls Gemini 3 did not produce itself (history from elsewhere).
SKIP_SIGNATURE = "skip_thought_signature_validator"


def finish_reason(reason: str | None, called: bool) -> str | None:
    if reason is None:
        return None
    mapped = FINISH.get(reason, "stop")
    return "tool_calls" if called and mapped == "stop" else mapped


def _user_parts(provider: str, content: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for part in translate.parts(provider, content):
        if isinstance(part, str):
            out.append({"text": part})
        elif part.data is not None:
            out.append({"inlineData": {"mimeType": part.mime, "data": part.data}})
        else:
            raise UnsupportedFeature(provider, "image URLs other than data: URLs (send the image inline)")
    return out


def _signature(tc: dict[str, Any]) -> str | None:
    """The thought signature Gemini gave a function call, kept on the OpenAI tool call as Google's own
    OpenAI-compatible endpoint does (``extra_content.google.thought_signature``)."""
    extra = tc.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    sig = google.get("thought_signature") if isinstance(google, dict) else None
    return sig if isinstance(sig, str) and sig else None


def convert_contents(call: LlmCall) -> list[dict[str, Any]]:
    """OpenAI messages → Gemini contents: tool results as ``functionResponse`` parts carrying the function's
    name (looked up from the assistant's latest tool calls: Gemini's own ids repeat across turns, ``call_0``, ...),
    consecutive turns of one role merged."""
    names: dict[str, str] = {}
    needs_signature = call.model.startswith("gemini-3")
    contents: list[dict[str, Any]] = []
    for m in call.messages:
        role = m.get("role")
        parts: list[dict[str, Any]]
        if role in translate.SYSTEM_ROLES:
            continue
        if role == "tool":
            name = m.get("name") or names.get(str(m.get("tool_call_id"))) or "tool"
            role, parts = "user", [{"functionResponse": {"name": name,
                                                         "response": {"content": message_text(m.get("content"))}}}]
        elif role == "assistant":
            role = "model"
            names.update(translate.tool_names([m]))
            text = message_text(m.get("content"))
            parts = [{"text": text}] if text else []
            for i, tc in enumerate(m.get("tool_calls") or []):
                fn = tc.get("function") or {}
                part: dict[str, Any] = {"functionCall": {"name": fn.get("name"),
                                                         "args": translate.arguments(fn.get("arguments"))}}
                sig = _signature(tc) or (SKIP_SIGNATURE if needs_signature and i == 0 else None)
                if sig:
                    part["thoughtSignature"] = sig
                parts.append(part)
        else:
            role, parts = "user", _user_parts(call.provider, m.get("content"))
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    for content in contents:
        content["parts"] = content["parts"] or [{"text": ""}]
    return contents


def request_body(call: LlmCall) -> dict[str, Any]:
    p = call.parameters
    translate.refuse_parallel_off(call.provider, p)
    body: dict[str, Any] = {"contents": convert_contents(call)}
    system = translate.system_text(call.messages)
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    config: dict[str, Any] = {}
    for name, value in p.items():
        if name in _CONFIG:
            config[_CONFIG[name]] = value
    stops = translate.stop_sequences(p.get("stop"))
    config.pop("stopSequences", None)
    if stops:
        config["stopSequences"] = stops
    fmt = translate.response_format(p.get("response_format"))
    if fmt is not None:
        config["responseMimeType"] = "application/json"
        if fmt.kind == "json_schema":
            config["responseJsonSchema"] = fmt.schema
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
        if fmt is not None and not call.model.startswith("gemini-3"):
            raise UnsupportedFeature(call.provider, f"response_format {fmt.kind} together with tools on "
                                                    f"{call.model} (Gemini 3 models take both)")
    if tools:
        body["tools"] = tools
    choice = translate.tool_choice(p.get("tool_choice"), call.tools)
    if choice is not None and declarations:
        fcc: dict[str, Any] = {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY", "function": "ANY"}[choice.mode]}
        if choice.mode == "function":
            fcc["allowedFunctionNames"] = [choice.name]
        body["toolConfig"] = {"functionCallingConfig": fcc}
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
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts:
        if "functionCall" in part:
            calls.append(_tool_call(part, len(calls)))
        elif part.get("thought"):
            thoughts.append(part.get("text", ""))
        elif "text" in part:
            texts.append(part["text"])
    out: dict[str, Any] = {}
    if calls:
        out["tool_calls"] = calls
    if thoughts:
        out["reasoning_content"] = "".join(thoughts)
    return Completion("".join(texts), out or None, usage, finish_reason(finish, bool(calls)))


def _tool_call(part: dict[str, Any], index: int) -> dict[str, Any]:
    """A ``functionCall`` part as an OpenAI tool call (Gemini ids are optional: ``call_<n>`` otherwise)."""
    fc = part["functionCall"]
    call: dict[str, Any] = {"id": fc.get("id") or f"call_{index}", "type": "function",
                            "function": {"name": fc.get("name"), "arguments": json.dumps(fc.get("args") or {})}}
    if part.get("thoughtSignature"):
        call["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
    return call


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
        body = request_body(call)
        parts: list[dict[str, Any]] = []
        calls = 0
        usage = Usage()
        finish = None
        async with call.http.open("POST", self.url(call, "streamGenerateContent"), headers=self.headers(call),
                                  body=body, timeout=call.timeout, params={"alt": "sse"}) as resp:
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
                    if "functionCall" in part:  # Gemini sends each call whole, in one piece
                        delta = dict(_tool_call(part, calls), index=calls)
                        calls += 1
                        yield StreamEvent("tool_call", tool_call=delta)
                    elif "text" in part:
                        yield StreamEvent("thoughts" if part.get("thought") else "content", part["text"])
        yield StreamEvent("done", completion=parse_parts(parts, usage, finish))


@hookimpl
def register_providers(register: Callable[..., None], settings: Any) -> None:
    register(GeminiProvider())
