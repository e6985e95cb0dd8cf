"""Fake LLM vendor servers: real HTTP on 127.0.0.1 speaking OpenAI, Anthropic, Gemini and Bedrock protocols.

One ``FakeLLMServer`` answers all of them (and the OpenAI Responses API, including background polling and
streaming, and Bedrock's ConverseStream in AWS's binary event-stream framing); tests script the answers and
read back the requests it received:

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
import struct
import zlib
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
    #: Why the answer ended, in OpenAI's words (stop | length | tool_calls | content_filter), sent in each
    #: vendor's own word (Anthropic max_tokens, Gemini MAX_TOKENS, ...); any other value is sent as given.
    #: None: tool_calls when there are tool calls, else stop.
    finish: str | None = None
    signature: str | None = None  # Gemini: the thoughtSignature of the first function call
    #: Streams pause after their first piece of text until this is set: a test proves the first piece reached
    #: it while the vendor was still answering (real streaming, no timing involved).
    hold: asyncio.Event | None = None
    raw: bytes | None = None  # Bedrock ConverseStream: send these bytes as the stream instead (broken framing)


@dataclass
class Recorded:
    """A request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    json: Any
    #: ``host:port`` the request came from: one value for calls that reused one connection.
    peer: str = ""

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

#: Reply.finish (OpenAI's words) in each vendor's words.
_FINISH_WORDS = {
    "anthropic": {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"},
    "gemini": {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "content_filter": "SAFETY"},
    "bedrock": {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "content_filter": "content_filtered"},
}


def finish_word(reply: Reply, vendor: str | None = None) -> str:
    """The stop reason a vendor sends for ``reply``."""
    finish = reply.finish or ("tool_calls" if reply.tool_calls else "stop")
    return _FINISH_WORDS.get(vendor or "", {}).get(finish, finish)


def eventstream_message(event_type: str, payload: dict[str, Any], message_type: str = "event") -> bytes:
    """One AWS event-stream message (what Bedrock's ConverseStream sends): prelude with its CRC32, string
    headers, the JSON payload, and the CRC32 of the whole message."""
    headers = b""
    kind_header = ":exception-type" if message_type == "exception" else ":event-type"
    for name, value in ((kind_header, event_type), (":content-type", "application/json"),
                        (":message-type", message_type)):
        raw = value.encode()
        headers += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(raw)) + raw
    body = json.dumps(payload).encode()
    total = 12 + len(headers) + len(body) + 4
    prelude = struct.pack(">II", total, len(headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + body
    return message + struct.pack(">I", zlib.crc32(message))


class FakeLLMServer:
    """Serves ``/v1/chat/completions``, ``/v1/responses`` (+ ``GET /v1/responses/{id}``, cancel), ``/v1/messages``
    (Anthropic), ``/v1beta/models/{model}:generateContent|streamGenerateContent`` (Gemini) and
    ``/model/{model}/converse`` and ``/model/{model}/converse-stream`` (Amazon Bedrock)."""

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
        self.abandoned: list[str] = []  # paths of streams whose client hung up before the answer was all sent
        #: Seconds between a chat stream's ``[DONE]`` and the end of its body (a vendor's last bytes arriving in a
        #: later packet); 0 sends them at once.
        self.done_gap = 0.0

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
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._note_hangups])
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_get("/v1/responses/{rid}", self._responses_poll)
        app.router.add_post("/v1/responses/{rid}/cancel", self._responses_cancel)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_post("/v1beta/models/{target}", self._gemini)
        app.router.add_post("/model/{model}/converse", self._converse)
        app.router.add_post("/model/{model}/converse-stream", self._converse_stream)
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
    @web.middleware
    async def _note_hangups(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """A stream whose client went away fails on its next write: note it (tests check the call stopped)."""
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except ConnectionResetError:
            self.abandoned.append(request.path)
            raise

    async def _record(self, request: web.Request) -> Recorded:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        rec = Recorded(request.method, request.path, dict(request.headers), dict(request.query), body,
                       f"{peer[0]}:{peer[1]}" if peer else "")
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
        tool_calls: list[dict[str, Any]] = [
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
                             "finish_reason": finish_word(reply)}],
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
        for n, piece in enumerate(_pieces(reply.content)):
            await send({"content": piece})
            await _held(reply, n)
        for i, tc in enumerate(tool_calls):  # as OpenAI does: id and name first, then the arguments in pieces
            await send({"tool_calls": [{"index": i, "id": tc["id"], "type": "function",
                                        "function": {"name": tc["function"]["name"], "arguments": ""}}]})
            for piece in _pieces(tc["function"]["arguments"]):
                await send({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
        await send({}, finish_word(reply))
        if (body.get("stream_options") or {}).get("include_usage"):
            await send({}, None, usage)
        await resp.write(b"data: [DONE]\n\n")
        if self.done_gap:
            await asyncio.sleep(self.done_gap)
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
        incomplete = status == "completed" and reply.finish in ("length", "content_filter")
        return {
            "id": rid, "object": "response", "created_at": 0, "status": "incomplete" if incomplete else status,
            "model": model, "output": output,
            "incomplete_details": {"reason": "max_output_tokens" if reply.finish == "length" else "content_filter"}
            if incomplete else None,
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
        if body.get("stream"):
            return await self._responses_stream(request, rid, model, reply)
        if body.get("background"):
            self._background[rid] = (reply, reply.polls)
            return web.json_response(self._response_body(rid, model, reply, "queued"))
        return web.json_response(self._response_body(rid, model, reply, "completed"))

    async def _responses_stream(self, request: web.Request, rid: str, model: str, reply: Reply) -> web.StreamResponse:
        """The Responses API's ``stream: true``: typed server-sent events, the whole response last."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def event(data: dict[str, Any]) -> None:
            await resp.write(f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode())

        await event({"type": "response.created", "response": self._response_body(rid, model, reply, "in_progress")})
        whole = self._response_body(rid, model, reply, "completed")
        for index, item in enumerate(whole["output"]):
            if item["type"] == "reasoning":
                await event({"type": "response.reasoning_summary_text.delta", "output_index": index,
                             "summary_index": 0, "delta": item["summary"][0]["text"]})
            elif item["type"] == "function_call":
                await event({"type": "response.output_item.added", "output_index": index,
                             "item": dict(item, arguments="", status="in_progress")})
                for piece in _pieces(item["arguments"]):
                    await event({"type": "response.function_call_arguments.delta", "output_index": index,
                                 "item_id": item["id"], "delta": piece})
            else:
                for n, piece in enumerate(_pieces(reply.content)):
                    await event({"type": "response.output_text.delta", "output_index": index, "content_index": 0,
                                 "delta": piece})
                    await _held(reply, n)
        await event({"type": "response.completed", "response": whole})
        await resp.write_eof()
        return resp

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
               "content": content, "stop_reason": finish_word(reply, "anthropic"),
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
                for n, piece in enumerate(_pieces(block["text"])):
                    await event("content_block_delta", {"index": i, "delta": {"type": "text_delta", "text": piece}})
                    await _held(reply, n)
            else:
                await event("content_block_start", {"index": i, "content_block": dict(block, input={})})
                for piece in _pieces(json.dumps(block["input"])):
                    await event("content_block_delta", {"index": i, "delta": {
                        "type": "input_json_delta", "partial_json": piece}})
            await event("content_block_stop", {"index": i})
        await event("message_delta", {"delta": {"stop_reason": msg["stop_reason"]},
                                      "usage": {"output_tokens": reply.output_tokens}})
        await event("message_stop", {})
        await resp.write_eof()
        return resp

    # -- Amazon Bedrock Converse ---------------------------------------------------------------------
    @staticmethod
    def _converse_content(reply: Reply) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = []
        if reply.thoughts:
            content.append({"reasoningContent": {"reasoningText": {"text": reply.thoughts, "signature": "sig"}}})
        if reply.content:
            content.append({"text": reply.content})
        for i, tc in enumerate(reply.tool_calls):
            content.append({"toolUse": {"toolUseId": tc.get("id") or f"tooluse_{i}", "name": tc["name"],
                                        "input": tc.get("arguments", {})}})
        return content

    async def _converse(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        reply = await self._next(rec)
        if reply.status >= 400:
            return web.json_response({"message": reply.error or "error"}, status=reply.status)
        content = self._converse_content(reply)
        return web.json_response({
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": finish_word(reply, "bedrock"),
            "usage": {"inputTokens": reply.input_tokens, "outputTokens": reply.output_tokens,
                      "totalTokens": reply.input_tokens + reply.output_tokens},
        })

    async def _converse_stream(self, request: web.Request) -> web.StreamResponse:
        """ConverseStream: the answer as AWS event-stream messages, text and tool input in pieces, usage last.
        ``Reply.error`` with ``status`` 200 and ``error_code`` set sends an exception message mid-stream."""
        rec = await self._record(request)
        reply = await self._next(rec)
        if reply.status >= 400:
            return web.json_response({"message": reply.error or "error"}, status=reply.status)
        resp = web.StreamResponse(headers={"Content-Type": "application/vnd.amazon.eventstream"})
        await resp.prepare(request)
        if reply.raw is not None:
            await resp.write(reply.raw)
            await resp.write_eof()
            return resp

        async def send(event_type: str, payload: dict[str, Any], message_type: str = "event") -> None:
            await resp.write(eventstream_message(event_type, payload, message_type))

        await send("messageStart", {"role": "assistant"})
        for i, block in enumerate(self._converse_content(reply)):
            if "reasoningContent" in block:
                await send("contentBlockDelta", {"contentBlockIndex": i, "delta": {"reasoningContent": {
                    "text": block["reasoningContent"]["reasoningText"]["text"]}}})
            elif "text" in block:
                for n, piece in enumerate(_pieces(block["text"])):
                    await send("contentBlockDelta", {"contentBlockIndex": i, "delta": {"text": piece}})
                    await _held(reply, n)
            else:
                use = block["toolUse"]
                await send("contentBlockStart", {"contentBlockIndex": i, "start": {"toolUse": {
                    "toolUseId": use["toolUseId"], "name": use["name"]}}})
                for piece in _pieces(json.dumps(use["input"])):
                    await send("contentBlockDelta", {"contentBlockIndex": i, "delta": {"toolUse": {"input": piece}}})
            await send("contentBlockStop", {"contentBlockIndex": i})
            if reply.error and reply.error_code:
                await send(reply.error_code, {"message": reply.error}, "exception")
                await resp.write_eof()
                return resp
        await send("messageStop", {"stopReason": finish_word(reply, "bedrock")})
        await send("metadata", {"usage": {"inputTokens": reply.input_tokens, "outputTokens": reply.output_tokens,
                                          "totalTokens": reply.input_tokens + reply.output_tokens},
                                "metrics": {"latencyMs": 1}})
        await resp.write_eof()
        return resp

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
        for i, tc in enumerate(reply.tool_calls):
            parts.append({"functionCall": {"name": tc["name"], "args": tc.get("arguments", {})}})
            if i == 0 and reply.signature:
                parts[-1]["thoughtSignature"] = reply.signature
        usage = {"promptTokenCount": reply.input_tokens, "candidatesTokenCount": reply.output_tokens,
                 "totalTokenCount": reply.input_tokens + reply.output_tokens}
        finish = finish_word(reply, "gemini")
        out = {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}],
               "usageMetadata": usage, "modelVersion": model}
        if method != "streamGenerateContent":
            return web.json_response(out)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        streamed = [dict(part, text=piece) for part in parts if "text" in part for piece in _pieces(part["text"])]
        streamed += [part for part in parts if "text" not in part]  # function calls come whole, as Gemini sends them
        for n, part in enumerate(streamed):
            chunk = {"candidates": [{"content": {"role": "model", "parts": [part]}, "index": 0}], "modelVersion": model}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await _held(reply, n)
        final = {"candidates": [{"content": {"role": "model", "parts": []}, "finishReason": finish, "index": 0}],
                 "usageMetadata": usage, "modelVersion": model}
        await resp.write(f"data: {json.dumps(final)}\n\n".encode())
        await resp.write_eof()
        return resp


async def _held(reply: Reply, n: int) -> None:
    """After the first piece of a stream, wait for the test's ``hold`` event (if any); after every piece of a held
    stream, give the loop a turn, so that a client that hung up meanwhile is noticed by the next write (uvloop
    reports a reset connection on its next turn, not inside the write that met it)."""
    if reply.hold is None:
        return
    if n == 0:
        await asyncio.wait_for(reply.hold.wait(), 10)
    await asyncio.sleep(0.005)


def _pieces(text: str, size: int = 8) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]
