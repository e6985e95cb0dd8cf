"""Fake LLM vendor servers: real HTTP on 127.0.0.1 speaking OpenAI, Anthropic and Gemini protocols.

One ``FakeLLMServer`` answers all three protocols (and the OpenAI Responses API, including background
polling); tests script the answers and read back the requests it received:

    fake_openai.script(Reply("hello", input_tokens=12, output_tokens=3))   # next answers, in order
    fake_openai.respond(lambda req: Reply(req.last_user_text.upper()))    # otherwise, computed
    fake_openai.requests[-1].json                                         # what the caller sent

With nothing scripted it answers ``default`` (``Reply("Hello from the fake model")``). Point the kernel at it
with ``OPENAI_BASE_URL=fake.openai_base_url`` (``fake.env`` has the variables and a key).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web

KEY = "sk-fake-test-key"


@dataclass
class Reply:
    """One scripted answer. ``status >= 400`` answers the vendor's error shape with ``error`` as message."""

    content: str = "Hello from the fake model"
    thoughts: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # [{"name", "arguments": {...}, "id"?}]
    input_tokens: int = 10
    output_tokens: int = 5
    status: int = 200
    error: str | None = None
    error_code: str | None = None  # e.g. "invalid_api_key", "context_length_exceeded"
    delay: float = 0.0  # seconds before answering
    polls: int = 0  # Responses API background mode: answers "in_progress" this many times first
    citations: list[str] = field(default_factory=list)  # OpenAI-compatible (perplexity) "citations"


@dataclass
class Recorded:
    """A request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    json: Any

    @property
    def api_key(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return auth[7:]
        return self.headers.get("x-api-key") or self.headers.get("x-goog-api-key") or self.query.get("key")

    @property
    def last_user_text(self) -> str:
        """Text of the last user message, whatever the protocol."""
        body = self.json or {}
        msgs = body.get("messages") or body.get("contents") or body.get("input") or []
        if isinstance(msgs, str):
            return msgs
        for msg in reversed(msgs):
            if msg.get("role") != "user":
                continue
            content = msg.get("content", msg.get("parts"))
            if isinstance(content, str):
                return content
            parts = [p.get("text", "") for p in content or [] if isinstance(p, dict)]
            return "".join(parts)
        return ""


Responder = Callable[[Recorded], "Reply | str"]


class FakeLLMServer:
    """Serves ``/v1/chat/completions``, ``/v1/responses`` (+ ``GET /v1/responses/{id}``, cancel), ``/v1/messages``
    (Anthropic), ``/v1beta/models/{model}:generateContent|streamGenerateContent`` (Gemini) and
    ``/model/{model}/converse`` (Amazon Bedrock)."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.queue: list[Reply] = []
        self.responder: Responder | None = None
        self.default = Reply()
        self.valid_keys: set[str] | None = None  # when set, other keys get the vendor's 401
        self._ids = itertools.count(1)
        self._background: dict[str, tuple[Reply, int]] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- scripting ----------------------------------------------------------------------------------
    def script(self, *replies: "Reply | str") -> None:
        """Queue answers, consumed in order before the responder/default."""
        self.queue.extend(r if isinstance(r, Reply) else Reply(r) for r in replies)

    def respond(self, fn: Responder | None) -> None:
        """Compute answers from the request once the queue is empty."""
        self.responder = fn

    def reset(self) -> None:
        self.requests.clear()
        self.queue.clear()
        self.responder = None
        self.valid_keys = None

    # -- addresses ----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def env(self) -> dict[str, str]:
        """Environment pointing every bundled provider at this server, with a key for each."""
        return {
            "OPENAI_BASE_URL": self.openai_base_url, "OPENAI_API_KEY": KEY,
            "ANTHROPIC_BASE_URL": self.url, "ANTHROPIC_API_KEY": KEY,
            "GEMINI_BASE_URL": self.url, "GEMINI_API_KEY": KEY,
            "OLLAMA_BASE_URL": self.url, "OPENROUTER_BASE_URL": self.openai_base_url, "OPENROUTER_API_KEY": KEY,
            "PERPLEXITY_BASE_URL": self.url, "PERPLEXITYAI_API_KEY": KEY,
            "BEDROCK_BASE_URL": self.url, "AWS_BEARER_TOKEN_BEDROCK": KEY,
        }

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> "FakeLLMServer":
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_get("/v1/responses/{rid}", self._responses_poll)
        app.router.add_post("/v1/responses/{rid}/cancel", self._responses_cancel)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_post("/v1beta/models/{target}", self._gemini)
        app.router.add_post("/model/{model}/converse", self._converse)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, shutdown_timeout=0.2)  # slow replies don't hold teardown
        await site.start()
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "FakeLLMServer":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- internals ----------------------------------------------------------------------------------
    async def _record(self, request: web.Request) -> Recorded:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        rec = Recorded(request.method, request.path, dict(request.headers), dict(request.query), body)
        self.requests.append(rec)
        return rec

    async def _next(self, rec: Recorded) -> Reply:
        if self.queue:
            reply = self.queue.pop(0)
        elif self.responder is not None:
            got = self.responder(rec)
            if asyncio.iscoroutine(got):
                got = await got
            reply = got if isinstance(got, Reply) else Reply(str(got))
        else:
            reply = self.default
        if self.valid_keys is not None and rec.api_key not in self.valid_keys:
            reply = Reply(status=401, error="Incorrect API key provided", error_code="invalid_api_key")
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return reply

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):06d}"

    @staticmethod
    def _openai_error(reply: Reply) -> web.Response:
        body = {"error": {"message": reply.error or "error", "type": "invalid_request_error",
                          "param": None, "code": reply.error_code}}
        return web.json_response(body, status=reply.status)

    # -- OpenAI chat completions --------------------------------------------------------------------
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        reply = await self._next(rec)
        if reply.status >= 400:
            return self._openai_error(reply)
        body = rec.json or {}
        model = body.get("model", "fake-model")
        cid = self._id("chatcmpl")
        usage = {"prompt_tokens": reply.input_tokens, "completion_tokens": reply.output_tokens,
                 "total_tokens": reply.input_tokens + reply.output_tokens}
        tool_calls = [
            {"id": tc.get("id") or f"call_{i}", "type": "function",
             "function": {"name": tc["name"], "arguments": json.dumps(tc.get("arguments", {}))}}
            for i, tc in enumerate(reply.tool_calls)
        ]
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": reply.content}
            if reply.thoughts:
                message["reasoning_content"] = reply.thoughts
            if tool_calls:
                message["tool_calls"] = tool_calls
            out: dict[str, Any] = {
                "id": cid, "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "message": message,
                             "finish_reason": "tool_calls" if tool_calls else "stop"}],
                "usage": usage,
            }
            if reply.citations:
                out["citations"] = reply.citations
            return web.json_response(out)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def send(delta: dict[str, Any], finish: str | None = None, use: Any = None) -> None:
            chunk: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": 0, "model": model,
                                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if use is not None:
                chunk["choices"], chunk["usage"] = [], use
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send({"role": "assistant", "content": ""})
        if reply.thoughts:
            await send({"reasoning_content": reply.thoughts})
        for piece in _pieces(reply.content):
            await send({"content": piece})
        for i, tc in enumerate(tool_calls):
            await send({"tool_calls": [{"index": i, **tc}]})
        await send({}, "tool_calls" if tool_calls else "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            await send({}, None, usage)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    # -- OpenAI Responses API -----------------------------------------------------------------------
    def _response_body(self, rid: str, model: str, reply: Reply, status: str) -> dict[str, Any]:
        output: list[dict[str, Any]] = []
        if status == "completed":
            if reply.thoughts:
                output.append({"type": "reasoning", "id": self._id("rs"),
                               "summary": [{"type": "summary_text", "text": reply.thoughts}]})
            for i, tc in enumerate(reply.tool_calls):
                output.append({"type": "function_call", "id": self._id("fc"), "call_id": tc.get("id") or f"call_{i}",
                               "name": tc["name"], "arguments": json.dumps(tc.get("arguments", {}))})
            output.append({"type": "message", "id": self._id("msg"), "role": "assistant", "status": "completed",
                           "content": [{"type": "output_text", "text": reply.content, "annotations": []}]})
        return {
            "id": rid, "object": "response", "created_at": 0, "status": status, "model": model,
            "output": output,
            "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens,
                      "total_tokens": reply.input_tokens + reply.output_tokens} if status == "completed" else None,
        }

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        reply = await self._next(rec)
        if reply.status >= 400:
            return self._openai_error(reply)
        body = rec.json or {}
        rid = self._id("resp")
        model = body.get("model", "fake-model")
        if body.get("background"):
            self._background[rid] = (reply, reply.polls)
            return web.json_response(self._response_body(rid, model, reply, "queued"))
        return web.json_response(self._response_body(rid, model, reply, "completed"))

    async def _responses_poll(self, request: web.Request) -> web.StreamResponse:
        rid = request.match_info["rid"]
        self.requests.append(Recorded("GET", request.path, dict(request.headers), dict(request.query), None))
        if rid not in self._background:
            return self._openai_error(Reply(status=404, error=f"No response found with id '{rid}'."))
        reply, left = self._background[rid]
        if left > 0:
            self._background[rid] = (reply, left - 1)
            return web.json_response(self._response_body(rid, "fake-model", reply, "in_progress"))
        return web.json_response(self._response_body(rid, "fake-model", reply, "completed"))

    async def _responses_cancel(self, request: web.Request) -> web.StreamResponse:
        rid = request.match_info["rid"]
        self.requests.append(Recorded("POST", request.path, dict(request.headers), dict(request.query), None))
        reply, _ = self._background.pop(rid, (Reply(), 0))
        return web.json_response(self._response_body(rid, "fake-model", reply, "cancelled"))

    # -- Anthropic Messages -------------------------------------------------------------------------
    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        reply = await self._next(rec)
        if reply.status >= 400:
            kind = {401: "authentication_error", 429: "rate_limit_error", 529: "overloaded_error"}.get(
                reply.status, "invalid_request_error")
            return web.json_response({"type": "error", "error": {"type": kind, "message": reply.error or "error"}},
                                     status=reply.status)
        body = rec.json or {}
        content: list[dict[str, Any]] = []
        if reply.thoughts:
            content.append({"type": "thinking", "thinking": reply.thoughts, "signature": "sig"})
        if reply.content:
            content.append({"type": "text", "text": reply.content})
        for i, tc in enumerate(reply.tool_calls):
            content.append({"type": "tool_use", "id": tc.get("id") or f"toolu_{i}", "name": tc["name"],
                            "input": tc.get("arguments", {})})
        msg = {"id": self._id("msg"), "type": "message", "role": "assistant", "model": body.get("model"),
               "content": content, "stop_reason": "tool_use" if reply.tool_calls else "end_turn",
               "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens}}
        if not body.get("stream"):
            return web.json_response(msg)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def event(name: str, data: dict[str, Any]) -> None:
            await resp.write(f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode())

        start = dict(msg, content=[], usage={"input_tokens": reply.input_tokens, "output_tokens": 0})
        await event("message_start", {"message": start})
        for i, block in enumerate(content):
            if block["type"] == "thinking":
                await event("content_block_start", {"index": i, "content_block": {"type": "thinking", "thinking": ""}})
                await event("content_block_delta", {"index": i, "delta": {"type": "thinking_delta",
                                                                         "thinking": block["thinking"]}})
            elif block["type"] == "text":
                await event("content_block_start", {"index": i, "content_block": {"type": "text", "text": ""}})
                for piece in _pieces(block["text"]):
                    await event("content_block_delta", {"index": i, "delta": {"type": "text_delta", "text": piece}})
            else:
                await event("content_block_start", {"index": i, "content_block": dict(block, input={})})
                await event("content_block_delta", {"index": i, "delta": {
                    "type": "input_json_delta", "partial_json": json.dumps(block["input"])}})
            await event("content_block_stop", {"index": i})
        await event("message_delta", {"delta": {"stop_reason": msg["stop_reason"]},
                                      "usage": {"output_tokens": reply.output_tokens}})
        await event("message_stop", {})
        await resp.write_eof()
        return resp

    # -- Amazon Bedrock Converse ---------------------------------------------------------------------
    async def _converse(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        reply = await self._next(rec)
        if reply.status >= 400:
            return web.json_response({"message": reply.error or "error"}, status=reply.status)
        content: list[dict[str, Any]] = []
        if reply.thoughts:
            content.append({"reasoningContent": {"reasoningText": {"text": reply.thoughts, "signature": "sig"}}})
        if reply.content:
            content.append({"text": reply.content})
        for i, tc in enumerate(reply.tool_calls):
            content.append({"toolUse": {"toolUseId": tc.get("id") or f"tooluse_{i}", "name": tc["name"],
                                        "input": tc.get("arguments", {})}})
        return web.json_response({
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": "tool_use" if reply.tool_calls else "end_turn",
            "usage": {"inputTokens": reply.input_tokens, "outputTokens": reply.output_tokens,
                      "totalTokens": reply.input_tokens + reply.output_tokens},
        })

    # -- Gemini generateContent ---------------------------------------------------------------------
    async def _gemini(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        model, _, method = request.match_info["target"].partition(":")
        reply = await self._next(rec)
        if reply.status >= 400:
            status_name = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                           429: "RESOURCE_EXHAUSTED"}.get(reply.status, "INTERNAL")
            return web.json_response({"error": {"code": reply.status, "message": reply.error or "error",
                                                "status": status_name}}, status=reply.status)
        parts: list[dict[str, Any]] = []
        if reply.thoughts:
            parts.append({"text": reply.thoughts, "thought": True})
        if reply.content:
            parts.append({"text": reply.content})
        for tc in reply.tool_calls:
            parts.append({"functionCall": {"name": tc["name"], "args": tc.get("arguments", {})}})
        usage = {"promptTokenCount": reply.input_tokens, "candidatesTokenCount": reply.output_tokens,
                 "totalTokenCount": reply.input_tokens + reply.output_tokens}
        out = {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
               "usageMetadata": usage, "modelVersion": model}
        if method != "streamGenerateContent":
            return web.json_response(out)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for part in parts:
            chunk = {"candidates": [{"content": {"role": "model", "parts": [part]}, "index": 0}], "modelVersion": model}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        final = {"candidates": [{"content": {"role": "model", "parts": []}, "finishReason": "STOP", "index": 0}],
                 "usageMetadata": usage, "modelVersion": model}
        await resp.write(f"data: {json.dumps(final)}\n\n".encode())
        await resp.write_eof()
        return resp


def _pieces(text: str, size: int = 8) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]
