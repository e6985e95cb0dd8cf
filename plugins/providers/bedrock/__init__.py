"""Provider plugin ``bedrock``: Amazon Bedrock's Converse API over HTTP, authenticated with a Bedrock API key
(``AWS_BEARER_TOKEN_BEDROCK``, sent as a bearer token). One request shape serves every model family on Bedrock
(Claude, Nova, Llama, Mistral, DeepSeek, Qwen, ...). The region comes from the catalog's ``aws_region``,
else ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, else ``us-east-1``; ``BEDROCK_BASE_URL`` overrides the endpoint.
Claude models get extended thinking from ``reasoning_effort`` (adaptive thinking for Opus 4.7/4.8). Streaming is
ConverseStream, decoded from AWS's binary event-stream framing as it arrives (``eventstream``); OpenAI's tool choice,
stop sequences and JSON modes are translated, stop reasons come back as OpenAI's finish reasons."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Callable
from urllib.parse import quote

from gofannon import hookimpl
from gofannon.llm import Completion, LlmCall, StreamEvent, UnsupportedFeature, Usage, VendorError, message_text
from gofannon_plugins.providers import translate
from gofannon_plugins.providers.bedrock import eventstream

BUDGETS = {"minimal": 1024, "low": 1024, "medium": 2048, "high": 4096, "xhigh": 8192, "max": 16384}
ADAPTIVE = ("claude-opus-4-7", "claude-opus-4-8", "claude-mythos")
#: Converse stop reasons in OpenAI's words; unknown → stop.
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
          "model_context_window_exceeded": "length", "guardrail_intervened": "content_filter",
          "content_filtered": "content_filter"}
#: Image formats Converse takes (``image.format``), by media type.
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif", "image/webp": "webp"}
#: ConverseStream exception types (``:exception-type``) → HTTP status, for the service's error mapping.
STREAM_ERRORS = {"throttlingException": 429, "validationException": 400, "accessDeniedException": 403,
                 "serviceUnavailableException": 503, "internalServerException": 500,
                 "modelStreamErrorException": 502, "modelTimeoutException": 504}
#: Model families whose Converse ``toolChoice`` may force tools (Bedrock's ToolChoice reference): ``any`` on
#: Claude, Mistral Large and Nova, a named ``tool`` on Claude and Nova; the others take only ``auto``.
FORCING = {"required": (("anthropic.", "mistral.", "amazon.nova"), "a tool", "Anthropic, Mistral and Amazon Nova"),
           "function": (("anthropic.", "amazon.nova"), "a named tool", "Anthropic and Amazon Nova")}


def finish_reason(stop_reason: str | None) -> str | None:
    return None if stop_reason is None else FINISH.get(stop_reason, "stop")


def _user_blocks(provider: str, content: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for part in translate.parts(provider, content):
        if isinstance(part, str):
            out.append({"text": part})
        elif part.data is None:
            raise UnsupportedFeature(provider, "image URLs other than data: URLs (send the image inline)")
        elif part.mime not in IMAGE_FORMATS:
            raise UnsupportedFeature(provider, f"images of type {part.mime} (png, jpeg, gif and webp only)")
        else:
            out.append({"image": {"format": IMAGE_FORMATS[part.mime], "source": {"bytes": part.data}}})
    return out


def convert_messages(provider: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI messages → Converse messages; consecutive turns of one role merged (Converse wants them
    alternating, and all results of a parallel tool call in one user turn)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role")
        blocks: list[dict[str, Any]]
        if role in translate.SYSTEM_ROLES:
            continue
        if role == "tool":
            role, blocks = "user", [{"toolResult": {"toolUseId": m.get("tool_call_id"),
                                                    "content": [{"text": message_text(m.get("content"))}]}}]
        elif role == "assistant":
            text = message_text(m.get("content"))
            blocks = [{"text": text}] if text else []
            for tc in m.get("tool_calls") or []:
                fn = tc.get("function") or {}
                blocks.append({"toolUse": {"toolUseId": tc.get("id"), "name": fn.get("name"),
                                           "input": translate.arguments(fn.get("arguments"))}})
        else:
            role, blocks = "user", _user_blocks(provider, m.get("content"))
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    for message in out:
        message["content"] = message["content"] or [{"text": ""}]
    return out


def schema_tool(call: LlmCall) -> str | None:
    """The forced tool standing in for ``response_format: json_schema`` (its input is the answer), or None."""
    fmt = translate.response_format(call.parameters.get("response_format"))
    return fmt.name if fmt is not None and fmt.kind == "json_schema" else None


def request_body(call: LlmCall) -> dict[str, Any]:
    provider, p = call.provider, call.parameters
    translate.refuse_penalties(provider, p)
    translate.refuse_parallel_off(provider, p)
    messages = convert_messages(provider, call.messages)
    body: dict[str, Any] = {"messages": messages}
    system_text = translate.system_text(call.messages)
    inference: dict[str, Any] = {}
    thinking = bool(call.reasoning_effort) and "anthropic.claude" in call.model
    if p.get("max_tokens") is not None:
        inference["maxTokens"] = int(p["max_tokens"])
    if not thinking:
        if p.get("temperature") is not None:
            inference["temperature"] = p["temperature"]
        if p.get("top_p") is not None:
            inference["topP"] = p["top_p"]
    stops = translate.stop_sequences(p.get("stop"))
    if "anthropic." in call.model:
        translate.refuse_blank_stops(provider, stops)
    if stops:
        inference["stopSequences"] = stops
    if thinking:
        effort = str(call.reasoning_effort)
        if any(a in call.model for a in ADAPTIVE):
            body["additionalModelRequestFields"] = {"thinking": {"type": "adaptive"}, "output_config": {"effort": effort}}
        else:
            budget = BUDGETS.get(effort, 2048)
            body["additionalModelRequestFields"] = {"thinking": {"type": "enabled", "budget_tokens": budget}}
            inference["maxTokens"] = max(int(inference.get("maxTokens") or 0), budget + 1024)
    if inference:
        body["inferenceConfig"] = inference
    specs = []
    for tool in call.tools or []:
        fn = tool.get("function") if tool.get("type") == "function" else None
        if isinstance(fn, dict):
            specs.append({"toolSpec": {"name": fn.get("name"), "description": fn.get("description") or fn.get("name"),
                                       "inputSchema": {"json": fn.get("parameters") or {"type": "object", "properties": {}}}}})
        else:
            specs.append(tool)
    choice = translate.tool_choice(p.get("tool_choice"), call.tools)
    system_text, fmt = translate.answer_format(provider, translate.response_format(p.get("response_format")),
                                               system_text, has_tools=bool(specs), thinking=bool(thinking))
    if fmt is not None:  # json_schema: one forced tool whose input is the answer
        specs = [{"toolSpec": {"name": fmt.name, "description": "Give the answer as this tool's input.",
                               "inputSchema": {"json": fmt.schema}}}]
        choice = translate.ToolChoice("function", fmt.name)
    if system_text:
        body["system"] = [{"text": system_text}]
    used_tools = any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])
    if specs and choice is not None and choice.mode == "none":
        # Converse has no "none": leave the tools out, unless the conversation already used them (then
        # Converse insists on the toolConfig, and the model could call a tool).
        if used_tools:
            raise UnsupportedFeature(provider, "tool_choice 'none' in a conversation that already used tools")
        specs = []
    elif used_tools and not specs:
        raise UnsupportedFeature(provider, "a conversation with tool calls or results but no tools (Converse "
                                           "needs the tools' definitions with them)")
    if specs:
        body["toolConfig"] = {"tools": specs}
        if choice is not None and choice.mode in FORCING:
            families, forced, who = FORCING[choice.mode]
            if not any(f in call.model for f in families):
                asked = "response_format json_schema" if fmt is not None and fmt.kind == "json_schema" \
                    else f"tool_choice '{choice.mode}'"
                raise UnsupportedFeature(provider, f"{asked} on {call.model} (Converse forces {forced} only for "
                                                   f"{who} models)")
        if choice is not None and choice.mode != "none":
            if thinking and choice.mode in ("required", "function"):
                raise UnsupportedFeature(provider, f"tool_choice '{choice.mode}' with reasoning_effort (extended "
                                                   "thinking only allows tool_choice auto)")
            body["toolConfig"]["toolChoice"] = (
                {"auto": {}} if choice.mode == "auto" else {"any": {}} if choice.mode == "required"
                else {"tool": {"name": choice.name}})
    return body


def _tool_call(use: dict[str, Any]) -> dict[str, Any]:
    return {"id": use.get("toolUseId"), "type": "function",
            "function": {"name": use.get("name"), "arguments": json.dumps(use.get("input") or {})}}


def _usage(raw: dict[str, Any] | None) -> Usage:
    raw = raw or {}
    cached = int(raw.get("cacheReadInputTokens") or 0)
    return Usage(input_tokens=int(raw.get("inputTokens") or 0), output_tokens=int(raw.get("outputTokens") or 0),
                 cached_input_tokens=cached)


def completion(blocks: list[dict[str, Any]], usage: Usage, stop_reason: str | None,
               answer_tool: str | None = None) -> Completion:
    """Converse content blocks in the normalised shape; the ``answer_tool``'s input (json_schema) is the content."""
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    finish = finish_reason(stop_reason)
    for block in blocks:
        if "text" in block:
            texts.append(block["text"])
        elif "reasoningContent" in block:
            reasoning.append(((block["reasoningContent"] or {}).get("reasoningText") or {}).get("text", ""))
        elif "toolUse" in block and answer_tool is not None and block["toolUse"].get("name") == answer_tool:
            texts.append(json.dumps(block["toolUse"].get("input") or {}))
        elif "toolUse" in block:
            calls.append(_tool_call(block["toolUse"]))
    if answer_tool is not None and finish == "tool_calls" and not calls:
        finish = "stop"  # the forced answer tool is how json_schema answers, not a call for the client
    thoughts: dict[str, Any] = {}
    if calls:
        thoughts["tool_calls"] = calls
    if reasoning:
        thoughts["reasoning_content"] = "\n".join(reasoning)
    return Completion("\n".join(texts), thoughts or None, usage, finish)


def parse(data: dict[str, Any], answer_tool: str | None = None) -> Completion:
    blocks = ((data.get("output") or {}).get("message") or {}).get("content") or []
    return completion(blocks, _usage(data.get("usage")), data.get("stopReason"), answer_tool)


class BedrockProvider:
    slug = "bedrock"

    def __init__(self, region: str = "us-east-1") -> None:
        self.region = region

    def catalog(self, settings: Any) -> dict[str, dict[str, Any]]:
        return {}  # config/catalog/bedrock.json

    def url(self, call: LlmCall, action: str = "converse") -> str:
        base = call.base_url
        if not base:
            region = call.provider_config.get("aws_region") or self.region
            base = f"https://bedrock-runtime.{region}.amazonaws.com"
        return f"{base.rstrip('/')}/model/{quote(call.model, safe='')}/{action}"

    @staticmethod
    def headers(call: LlmCall, accept: str) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": accept}
        if call.api_key:
            headers["Authorization"] = f"Bearer {call.api_key}"
        return headers

    async def complete(self, call: LlmCall) -> Completion:
        body = request_body(call)
        data = await call.http.request_json("POST", self.url(call), headers=self.headers(call, "application/json"),
                                            body=body, timeout=call.timeout)
        return parse(data, schema_tool(call))

    async def stream(self, call: LlmCall) -> AsyncIterator[StreamEvent]:
        """ConverseStream: each event-stream message is turned into events as soon as its bytes are in."""
        body = request_body(call)
        answer_tool = schema_tool(call)
        blocks: dict[int, dict[str, Any]] = {}
        inputs: dict[int, list[str]] = {}
        call_index: dict[int, int] = {}  # content block index → OpenAI tool-call index
        pieces = translate.ToolCallPieces()
        usage = Usage()
        stop_reason: str | None = None
        async with call.http.open("POST", self.url(call, "converse-stream"), body=body, timeout=call.timeout,
                                  headers=self.headers(call, "application/vnd.amazon.eventstream")) as resp:
            try:
                async for message in eventstream.messages(resp.content.iter_any()):
                    kind = message.headers.get(":event-type")
                    if message.headers.get(":message-type") != "event":
                        raise _stream_error(message)
                    try:
                        event = json.loads(message.payload or b"{}")
                    except ValueError:
                        raise VendorError(502, f"Bedrock sent an unreadable {kind} event") from None
                    index = int(event.get("contentBlockIndex") or 0)
                    if kind == "contentBlockStart":
                        use = (event.get("start") or {}).get("toolUse")
                        if isinstance(use, dict):
                            blocks[index] = {"toolUse": {"toolUseId": use.get("toolUseId"), "name": use.get("name")}}
                            if use.get("name") != answer_tool:
                                call_index[index] = len(pieces.calls)
                                yield StreamEvent("tool_call", tool_call=pieces.start(str(use.get("toolUseId")),
                                                                                      str(use.get("name"))))
                    elif kind == "contentBlockDelta":
                        delta = event.get("delta") or {}
                        if "text" in delta:
                            block = blocks.setdefault(index, {"text": ""})
                            block["text"] = block.get("text", "") + delta["text"]
                            yield StreamEvent("content", delta["text"])
                        elif "reasoningContent" in delta:
                            text = (delta["reasoningContent"] or {}).get("text") or ""
                            block = blocks.setdefault(index, {"reasoningContent": {"reasoningText": {"text": ""}}})
                            block["reasoningContent"]["reasoningText"]["text"] += text
                            if text:
                                yield StreamEvent("thoughts", text)
                        elif "toolUse" in delta:
                            piece = str((delta["toolUse"] or {}).get("input") or "")
                            inputs.setdefault(index, []).append(piece)
                            if piece and index in call_index:
                                yield StreamEvent("tool_call", tool_call=pieces.add(call_index[index], piece))
                            elif piece:
                                yield StreamEvent("content", piece)  # json_schema: the forced tool's input
                    elif kind == "messageStop":
                        stop_reason = event.get("stopReason")
                    elif kind == "metadata":
                        usage = _usage(event.get("usage"))
            except eventstream.EventStreamError as exc:
                raise VendorError(502, f"Bedrock's event stream was broken: {exc}") from None
        for index, parts in inputs.items():
            use = blocks.get(index, {}).get("toolUse")
            if use is not None and answer_tool is not None and use.get("name") == answer_tool:
                blocks[index] = {"text": "".join(parts)}  # the answer, exactly as it was streamed
            elif use is not None:
                use["input"] = translate.arguments("".join(parts))
        yield StreamEvent("done", completion=completion([blocks[i] for i in sorted(blocks)], usage, stop_reason,
                                                        answer_tool))


def _stream_error(message: eventstream.Message) -> VendorError:
    """An ``exception`` message (its type in ``:exception-type``, its message in the JSON payload) or an ``error``
    message (``:error-code`` and ``:error-message`` headers) in the stream, as the vendor error it reports."""
    kind = str(message.headers.get(":exception-type") or message.headers.get(":error-code") or "error")
    text = str(message.headers.get(":error-message") or "")
    if not text:
        try:
            text = str(json.loads(message.payload or b"{}").get("message") or kind)
        except (ValueError, AttributeError):
            text = message.payload.decode("utf-8", "replace")[:500] or kind
    return VendorError(STREAM_ERRORS.get(kind, 502), text, code=kind)


@hookimpl
def register_providers(register: Callable[..., None], settings: Any) -> None:
    region = settings.env("AWS_REGION") or settings.env("AWS_DEFAULT_REGION") or "us-east-1"
    register(BedrockProvider(region))
