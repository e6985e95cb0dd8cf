"""Provider plugin ``bedrock``: Amazon Bedrock's Converse API over HTTP, authenticated with a Bedrock API key
(``AWS_BEARER_TOKEN_BEDROCK``, sent as a bearer token). One request shape serves every model family on Bedrock
(Claude, Nova, Llama, Mistral, DeepSeek, Qwen, ...). The region comes from the catalog's ``aws_region``,
else ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, else ``us-east-1``; ``BEDROCK_BASE_URL`` overrides the endpoint.
Claude models get extended thinking from ``reasoning_effort`` (adaptive thinking for Opus 4.7/4.8)."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Callable
from urllib.parse import quote

from gofannon import hookimpl
from gofannon.llm import Completion, LlmCall, StreamEvent, Usage, message_text

BUDGETS = {"minimal": 1024, "low": 1024, "medium": 2048, "high": 4096, "xhigh": 8192, "max": 16384}
ADAPTIVE = ("claude-opus-4-7", "claude-opus-4-8", "claude-mythos")


def request_body(call: LlmCall) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for m in call.messages:
        role = m.get("role")
        if role == "system":
            continue
        if role == "tool":
            block = {"toolResult": {"toolUseId": m.get("tool_call_id"), "content": [{"text": message_text(m.get("content"))}]}}
            messages.append({"role": "user", "content": [block]})
            continue
        blocks: list[dict[str, Any]] = [{"text": message_text(m.get("content"))}] if message_text(m.get("content")) else []
        for tc in m.get("tool_calls") or []:
            fn = tc.get("function") or {}
            try:
                args = json.loads(fn.get("arguments") or "{}")
            except ValueError:
                args = {}
            blocks.append({"toolUse": {"toolUseId": tc.get("id"), "name": fn.get("name"), "input": args}})
        messages.append({"role": "assistant" if role == "assistant" else "user", "content": blocks or [{"text": ""}]})
    body: dict[str, Any] = {"messages": messages}
    system = [{"text": message_text(m.get("content"))} for m in call.messages if m.get("role") == "system"]
    if system:
        body["system"] = system
    p = call.parameters
    inference: dict[str, Any] = {}
    thinking = bool(call.reasoning_effort) and "anthropic.claude" in call.model
    if p.get("max_tokens") is not None:
        inference["maxTokens"] = int(p["max_tokens"])
    if not thinking:
        if p.get("temperature") is not None:
            inference["temperature"] = p["temperature"]
        if p.get("top_p") is not None:
            inference["topP"] = p["top_p"]
    if p.get("stop") is not None:
        inference["stopSequences"] = [p["stop"]] if isinstance(p["stop"], str) else p["stop"]
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
    if specs:
        body["toolConfig"] = {"tools": specs}
    return body


def parse(data: dict[str, Any]) -> Completion:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in ((data.get("output") or {}).get("message") or {}).get("content") or []:
        if "text" in block:
            texts.append(block["text"])
        elif "reasoningContent" in block:
            reasoning.append(((block["reasoningContent"] or {}).get("reasoningText") or {}).get("text", ""))
        elif "toolUse" in block:
            use = block["toolUse"]
            calls.append({"id": use.get("toolUseId"), "type": "function",
                          "function": {"name": use.get("name"), "arguments": json.dumps(use.get("input") or {})}})
    usage_raw = data.get("usage") or {}
    usage = Usage(input_tokens=int(usage_raw.get("inputTokens") or 0), output_tokens=int(usage_raw.get("outputTokens") or 0),
                  cached_input_tokens=int(usage_raw.get("cacheReadInputTokens") or 0))
    thoughts: dict[str, Any] = {}
    if calls:
        thoughts["tool_calls"] = calls
    if reasoning:
        thoughts["reasoning_content"] = "\n".join(reasoning)
    return Completion("\n".join(texts), thoughts or None, usage, data.get("stopReason"))


class BedrockProvider:
    slug = "bedrock"

    def __init__(self, region: str = "us-east-1") -> None:
        self.region = region

    def catalog(self, settings: Any) -> dict[str, dict[str, Any]]:
        return {}  # config/catalog/bedrock.json

    def url(self, call: LlmCall) -> str:
        base = call.base_url
        if not base:
            region = call.provider_config.get("aws_region") or self.region
            base = f"https://bedrock-runtime.{region}.amazonaws.com"
        return f"{base.rstrip('/')}/model/{quote(call.model, safe='')}/converse"

    async def complete(self, call: LlmCall) -> Completion:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if call.api_key:
            headers["Authorization"] = f"Bearer {call.api_key}"
        data = await call.http.request_json("POST", self.url(call), headers=headers, body=request_body(call),
                                            timeout=call.timeout)
        return parse(data)

    async def stream(self, call: LlmCall) -> AsyncIterator[StreamEvent]:
        completion = await self.complete(call)  # ConverseStream speaks AWS event-stream framing; answered whole
        if completion.content:
            yield StreamEvent("content", completion.content)
        yield StreamEvent("done", completion=completion)


@hookimpl
def register_providers(register: Callable[..., None], settings: Any) -> None:
    region = settings.env("AWS_REGION") or settings.env("AWS_DEFAULT_REGION") or "us-east-1"
    register(BedrockProvider(region))
