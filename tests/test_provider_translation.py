"""The provider contract behind the OpenAI-compatible gateway: OpenAI's request options, messages and tools are
translated for each vendor (checked in the request the vendor's local protocol server received), answers come
back with OpenAI's finish reasons and tool calls, streams yield content and tool-call pieces as the vendor sends
them, and what a vendor cannot do is a 400 before anything is sent or charged. Driven through ``call_llm`` /
``stream_llm`` on a real kernel, as the gateway drives them."""

from __future__ import annotations

import asyncio
import json
import struct
import zlib
from typing import Any, AsyncIterator, Callable

import pytest

from fakes import FakeLLMServer, Reply
from fakes.llm_servers import eventstream_message
from gofannon.errors import GofannonError
from gofannon.kernel import Kernel
from gofannon.llm import StreamEvent
from gofannon.llm.service import call_llm, stream_llm
from gofannon_plugins.providers.bedrock import eventstream

LOOKUP = {"type": "function", "function": {"name": "lookup", "description": "Look a word up",
                                           "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}
CLOCK = {"type": "function", "function": {"name": "clock", "description": "The time",
                                          "parameters": {"type": "object", "properties": {}}}}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}

#: A conversation with everything OpenAI's messages can hold: system and developer instructions, a user
#: message with text and two images, an assistant turn calling two tools at once, both results, a follow-up.
CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "You are terse."},
    {"role": "developer", "content": "Prefer metric units."},
    {"role": "user", "content": [{"type": "text", "text": "What is in these?"},
                                 {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                                 {"type": "image_url", "image_url": {"url": "https://example.org/cat.jpg"}}]},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "cat"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "clock", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "call_a", "content": "a small feline"},
    {"role": "tool", "tool_call_id": "call_b", "content": "12:00"},
    {"role": "user", "content": "Summarise."},
]
#: The same without the http(s) image, for vendors that take images inline only.
INLINE_ONLY = [dict(m, content=m["content"][:2]) if i == 2 else m for i, m in enumerate(CONVERSATION)]


@pytest.fixture
async def kernel(make_settings: Callable[..., Any], fake_llm: FakeLLMServer) -> AsyncIterator[Kernel]:
    k = Kernel(make_settings(**fake_llm.env, LLM_RATE_LIMIT_BACKOFF_CAP="0", GOFANNON_STORAGE="memory"))
    await k.open()
    yield k
    await k.close()


async def collect(kernel: Kernel, provider: str, model: str, messages: list[dict[str, Any]],
                  params: dict[str, Any] | None = None, tools: list[dict[str, Any]] | None = None) -> list[StreamEvent]:
    return [e async for e in stream_llm(kernel, "alice", provider, model, messages, params or {}, tools=tools)]


def assemble(events: list[StreamEvent]) -> list[dict[str, Any]]:
    """Tool calls put together from their stream pieces, as an OpenAI client does."""
    calls: dict[int, dict[str, Any]] = {}
    for e in events:
        if e.kind == "tool_call":
            tc = e.tool_call or {}
            slot = calls.setdefault(tc["index"], {"id": None, "name": None, "arguments": ""})
            slot["id"] = tc.get("id") or slot["id"]
            slot["name"] = (tc.get("function") or {}).get("name") or slot["name"]
            slot["arguments"] += (tc.get("function") or {}).get("arguments") or ""
    return [calls[i] for i in sorted(calls)]


def check_stream(events: list[StreamEvent], text: str, calls: list[tuple[str, dict[str, Any]]]) -> None:
    """Content in several pieces and tool calls in pieces (id and name first), all before ``done``."""
    kinds = [e.kind for e in events]
    assert kinds[-1] == "done" and kinds.count("done") == 1
    pieces = [e.text for e in events if e.kind == "content"]
    assert "".join(pieces) == text and (len(pieces) > 1 or len(text) <= 8)
    got = assemble(events)
    assert [(c["name"], json.loads(c["arguments"])) for c in got] == calls
    firsts = {}
    for e in events:
        if e.kind == "tool_call":
            firsts.setdefault(e.tool_call["index"], e.tool_call)  # type: ignore[index]
    assert all(f.get("id") and f["function"].get("name") for f in firsts.values())
    final = events[-1].completion
    assert final is not None and final.content == text
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in final.tool_calls] == calls
    assert [c["id"] for c in final.tool_calls] == [c["id"] for c in got]


async def refused(kernel: Kernel, fake: FakeLLMServer, provider: str, model: str, messages: list[dict[str, Any]],
                  params: dict[str, Any], tools: list[dict[str, Any]] | None = None) -> str:
    """The 400 detail for an unsupported request, checked to be the same streamed and to send nothing."""
    from gofannon.services import users

    charged = len((await users.get_or_create_user(kernel, "alice"))["usageInfo"]["usage"])
    with pytest.raises(GofannonError) as info:
        await call_llm(kernel, "alice", provider, model, messages, params, tools=tools)
    assert info.value.status == 400
    with pytest.raises(GofannonError) as streamed:
        await collect(kernel, provider, model, messages, params, tools)
    assert streamed.value.status == 400 and streamed.value.detail == info.value.detail
    assert fake.requests == []
    assert len((await users.get_or_create_user(kernel, "alice"))["usageInfo"]["usage"]) == charged  # nothing charged
    return str(info.value.detail)


TWO_CALLS = [{"name": "lookup", "arguments": {"q": "dog"}, "id": "c1"}, {"name": "clock", "arguments": {}, "id": "c2"}]


# -- Anthropic -----------------------------------------------------------------------------------------
ANTHROPIC = "claude-sonnet-4-5-20250929"


async def test_anthropic_request_translates_openai_messages_tools_and_options(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("", tool_calls=TWO_CALLS))
    result = await call_llm(kernel, "alice", "anthropic", ANTHROPIC, CONVERSATION,
                            {"tool_choice": {"type": "function", "function": {"name": "lookup"}},
                             "parallel_tool_calls": False, "stop": "END", "user": "u-42", "max_tokens": 300,
                             "seed": 7, "presence_penalty": 0, "response_format": {"type": "json_object"}},
                            tools=[LOOKUP, CLOCK])
    sent = fake_llm.requests[-1].json
    assert sent["system"].startswith("You are terse.\n\nPrefer metric units.") and "JSON object" in sent["system"]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    first, calls, results = (m["content"] for m in sent["messages"])
    assert first[0] == {"type": "text", "text": "What is in these?"}
    assert first[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    assert first[2] == {"type": "image", "source": {"type": "url", "url": "https://example.org/cat.jpg"}}
    assert calls == [{"type": "tool_use", "id": "call_a", "name": "lookup", "input": {"q": "cat"}},
                     {"type": "tool_use", "id": "call_b", "name": "clock", "input": {}}]
    assert results == [{"type": "tool_result", "tool_use_id": "call_a", "content": "a small feline"},
                       {"type": "tool_result", "tool_use_id": "call_b", "content": "12:00"},
                       {"type": "text", "text": "Summarise."}]
    assert [t["name"] for t in sent["tools"]] == ["lookup", "clock"] and "input_schema" in sent["tools"][0]
    assert sent["tool_choice"] == {"type": "tool", "name": "lookup", "disable_parallel_tool_use": True}
    assert sent["stop_sequences"] == ["END"] and sent["metadata"] == {"user_id": "u-42"}
    assert sent["max_tokens"] == 300 and "seed" not in sent and "presence_penalty" not in sent
    assert result.finish_reason == "tool_calls"
    assert [(c["id"], c["function"]["name"]) for c in result.thoughts["tool_calls"]] == [("c1", "lookup"), ("c2", "clock")]


async def test_anthropic_blocks_agents_write_in_anthropics_own_shape_pass_unchanged(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    native = [{"type": "text", "text": "Read this.", "cache_control": {"type": "ephemeral"}},
              {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "A memo."}},
              {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]
    said = [{"type": "text", "text": "Noted."}]
    await call_llm(kernel, "alice", "anthropic", ANTHROPIC, [{"role": "user", "content": native},
                                                             {"role": "assistant", "content": said},
                                                             {"role": "user", "content": "And?"}], {})
    assert fake_llm.requests[-1].json["messages"] == [{"role": "user", "content": native},
                                                      {"role": "assistant", "content": said},
                                                      {"role": "user", "content": "And?"}]


@pytest.mark.parametrize("choice,expected", [("auto", {"type": "auto"}), ("none", {"type": "none"}),
                                             ("required", {"type": "any"})])
async def test_anthropic_tool_choice_words(kernel: Kernel, fake_llm: FakeLLMServer, choice: str, expected: dict[str, Any]) -> None:
    await call_llm(kernel, "alice", "anthropic", ANTHROPIC, [{"role": "user", "content": "hi"}],
                   {"tool_choice": choice}, tools=[LOOKUP])
    assert fake_llm.requests[-1].json["tool_choice"] == expected


@pytest.mark.parametrize("finish,expected", [("length", "length"), ("content_filter", "content_filter"),
                                             ("stop_sequence", "stop"), ("end_turn", "stop"), ("pause_turn", "stop")])
async def test_anthropic_stop_reasons_become_openai_finish_reasons(kernel: Kernel, fake_llm: FakeLLMServer,
                                                                   finish: str, expected: str) -> None:
    fake_llm.script(Reply("cut", finish=finish), Reply("cut", finish=finish))
    result = await call_llm(kernel, "alice", "anthropic", ANTHROPIC, [{"role": "user", "content": "hi"}], {})
    assert result.finish_reason == expected
    events = await collect(kernel, "anthropic", ANTHROPIC, [{"role": "user", "content": "hi"}])
    assert events[-1].completion.finish_reason == expected  # type: ignore[union-attr]


async def test_anthropic_stream_yields_text_and_tool_call_pieces_with_usage(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("Let me look those up.", tool_calls=TWO_CALLS, input_tokens=31, output_tokens=17))
    events = await collect(kernel, "anthropic", ANTHROPIC, [{"role": "user", "content": "hi"}], {}, [LOOKUP, CLOCK])
    check_stream(events, "Let me look those up.", [("lookup", {"q": "dog"}), ("clock", {})])
    assert len([e for e in events if e.kind == "tool_call"]) > 2  # arguments arrived in pieces
    final = events[-1].completion
    assert final.finish_reason == "tool_calls"  # type: ignore[union-attr]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (31, 17)  # type: ignore[union-attr]


async def test_anthropic_json_schema_is_a_forced_tool_whose_input_is_the_answer(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "place", "schema": SCHEMA}}
    fake_llm.script(Reply("", tool_calls=[{"name": "place", "arguments": {"city": "Oslo"}}]),
                    Reply("", tool_calls=[{"name": "place", "arguments": {"city": "Bergen"}}]))
    result = await call_llm(kernel, "alice", "anthropic", ANTHROPIC, [{"role": "user", "content": "where?"}],
                            {"response_format": fmt})
    sent = fake_llm.requests[-1].json
    assert sent["tools"] == [{"name": "place", "description": "Give the answer as this tool's input.", "input_schema": SCHEMA}]
    assert sent["tool_choice"] == {"type": "tool", "name": "place"}
    assert json.loads(result.content) == {"city": "Oslo"} and result.finish_reason == "stop" and result.thoughts is None
    events = await collect(kernel, "anthropic", ANTHROPIC, [{"role": "user", "content": "where?"}], {"response_format": fmt})
    streamed = "".join(e.text for e in events if e.kind == "content")
    assert json.loads(streamed) == {"city": "Bergen"} and events[-1].completion.content == streamed  # type: ignore[union-attr]
    assert not [e for e in events if e.kind == "tool_call"] and events[-1].completion.finish_reason == "stop"  # type: ignore[union-attr]


async def test_anthropic_refuses_what_the_messages_api_cannot_do(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}
    assert await refused(kernel, fake_llm, "anthropic", ANTHROPIC, msgs, {"response_format": fmt}, [LOOKUP]) == \
        "anthropic does not support response_format json_schema together with tools"
    detail = await refused(kernel, fake_llm, "anthropic", ANTHROPIC, msgs,
                           {"tool_choice": "required", "reasoning_effort": "high"}, [LOOKUP])
    assert detail.startswith("anthropic does not support tool_choice 'required' with reasoning_effort")
    assert await refused(kernel, fake_llm, "anthropic", ANTHROPIC, msgs, {"frequency_penalty": 0.5}) == \
        "anthropic does not support frequency_penalty"
    assert await refused(kernel, fake_llm, "anthropic", ANTHROPIC, msgs, {"stop": ["END", "\n"]}) == \
        "anthropic does not support stop sequences made only of whitespace"
    detail = await refused(kernel, fake_llm, "anthropic", ANTHROPIC,
                           [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}], {})
    assert detail == "anthropic does not support message content parts of type 'input_audio'"


async def test_malformed_openai_options_are_a_400_naming_the_problem(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    for params, tools, words in (
            ({"tool_choice": "sometimes"}, [LOOKUP], "tool_choice must be"),
            ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, [LOOKUP], "not among the tools"),
            ({"tool_choice": "required"}, None, "needs tools"),
            ({"response_format": {"type": "yaml"}}, None, "response_format type must be"),
            ({"stop": 5}, None, "stop must be")):
        for provider, model in (("anthropic", ANTHROPIC), ("gemini", "gemini-2.5-flash"),
                                ("bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0")):
            with pytest.raises(GofannonError) as info:
                await call_llm(kernel, "alice", provider, model, msgs, params, tools=tools)
            assert info.value.status == 400 and words in info.value.detail, (provider, params)
    with pytest.raises(GofannonError) as info:
        await call_llm(kernel, "alice", "anthropic", ANTHROPIC,
                       [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}], {})
    assert info.value.status == 400 and "data: URL or an http(s) URL" in info.value.detail
    assert fake_llm.requests == []


# -- Gemini --------------------------------------------------------------------------------------------
async def test_gemini_request_translates_openai_messages_tools_and_options(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("", tool_calls=[{"name": "clock", "arguments": {}}]))
    result = await call_llm(kernel, "alice", "gemini", "gemini-2.5-flash", INLINE_ONLY,
                            {"tool_choice": {"type": "function", "function": {"name": "clock"}}, "stop": ["END", "FIN"],
                             "seed": 3, "user": "u-1"}, tools=[LOOKUP, CLOCK])
    sent = fake_llm.requests[-1].json
    assert sent["systemInstruction"] == {"parts": [{"text": "You are terse.\n\nPrefer metric units."}]}
    assert [c["role"] for c in sent["contents"]] == ["user", "model", "user"]
    first, calls, results = (c["parts"] for c in sent["contents"])
    assert first == [{"text": "What is in these?"}, {"inlineData": {"mimeType": "image/png", "data": PNG}}]
    assert calls == [{"functionCall": {"name": "lookup", "args": {"q": "cat"}}},
                     {"functionCall": {"name": "clock", "args": {}}}]
    assert results == [{"functionResponse": {"name": "lookup", "response": {"content": "a small feline"}}},
                       {"functionResponse": {"name": "clock", "response": {"content": "12:00"}}},
                       {"text": "Summarise."}]
    assert sent["tools"] == [{"functionDeclarations": [LOOKUP["function"], CLOCK["function"]]}]
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["clock"]}}
    config = sent["generationConfig"]
    assert config == {"stopSequences": ["END", "FIN"], "seed": 3}
    assert result.finish_reason == "tool_calls" and result.thoughts["tool_calls"][0]["function"]["name"] == "clock"


@pytest.mark.parametrize("fmt,config", [
    ({"type": "json_object"}, {"responseMimeType": "application/json"}),
    ({"type": "json_schema", "json_schema": {"name": "place", "schema": SCHEMA, "strict": True}},
     {"responseMimeType": "application/json", "responseJsonSchema": SCHEMA}),
    ({"type": "text"}, None)])
async def test_gemini_response_format_is_its_json_mode(kernel: Kernel, fake_llm: FakeLLMServer,
                                                       fmt: dict[str, Any], config: dict[str, Any] | None) -> None:
    fake_llm.script(Reply('{"city": "Oslo"}'))
    result = await call_llm(kernel, "alice", "gemini", "gemini-2.5-flash", [{"role": "user", "content": "where?"}],
                            {"response_format": fmt})
    assert fake_llm.requests[-1].json.get("generationConfig") == config
    assert json.loads(result.content) == {"city": "Oslo"} and result.finish_reason == "stop"


async def test_gemini_names_each_function_response_after_the_call_of_its_own_turn(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    def turn(name: str, result: str) -> list[dict[str, Any]]:  # Gemini gives calls no ids: call_0 in every turn
        return [{"role": "assistant", "content": "", "tool_calls": [
                    {"id": "call_0", "type": "function", "function": {"name": name, "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_0", "content": result}]

    msgs = [{"role": "user", "content": "hi"}, *turn("lookup", "a"), *turn("clock", "b")]
    await call_llm(kernel, "alice", "gemini", "gemini-2.5-flash", msgs, {}, tools=[LOOKUP, CLOCK])
    responses = [p["functionResponse"]["name"] for c in fake_llm.requests[-1].json["contents"] for p in c["parts"]
                 if "functionResponse" in p]
    assert responses == ["lookup", "clock"]


@pytest.mark.parametrize("choice,mode", [("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")])
async def test_gemini_tool_choice_modes(kernel: Kernel, fake_llm: FakeLLMServer, choice: str, mode: str) -> None:
    await call_llm(kernel, "alice", "gemini", "gemini-2.5-flash", [{"role": "user", "content": "hi"}],
                   {"tool_choice": choice}, tools=[LOOKUP])
    assert fake_llm.requests[-1].json["toolConfig"] == {"functionCallingConfig": {"mode": mode}}


@pytest.mark.parametrize("finish,expected", [("length", "length"), ("SAFETY", "content_filter"),
                                             ("RECITATION", "content_filter"), ("PROHIBITED_CONTENT", "content_filter"),
                                             ("OTHER", "stop")])
async def test_gemini_finish_reasons_become_openai_ones(kernel: Kernel, fake_llm: FakeLLMServer, finish: str, expected: str) -> None:
    fake_llm.script(Reply("x", finish=finish), Reply("x", finish=finish))
    result = await call_llm(kernel, "alice", "gemini", "gemini-2.5-flash", [{"role": "user", "content": "hi"}], {})
    assert result.finish_reason == expected
    events = await collect(kernel, "gemini", "gemini-2.5-flash", [{"role": "user", "content": "hi"}])
    assert events[-1].completion.finish_reason == expected  # type: ignore[union-attr]


async def test_gemini_stream_yields_text_and_tool_calls_with_the_last_chunks_usage(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("Checking both things now.", tool_calls=TWO_CALLS, input_tokens=40, output_tokens=12))
    events = await collect(kernel, "gemini", "gemini-2.5-flash", [{"role": "user", "content": "hi"}], {}, [LOOKUP, CLOCK])
    check_stream(events, "Checking both things now.", [("lookup", {"q": "dog"}), ("clock", {})])
    final = events[-1].completion
    assert final.finish_reason == "tool_calls"  # type: ignore[union-attr]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (40, 12)  # type: ignore[union-attr]


async def test_gemini_3_thought_signatures_travel_with_the_tool_calls(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("", tool_calls=[{"name": "lookup", "arguments": {"q": "x"}}], signature="sig-123"))
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]
    result = await call_llm(kernel, "alice", "gemini", "gemini-3-pro-preview", msgs, {}, tools=[LOOKUP])
    call = result.thoughts["tool_calls"][0]
    assert call["extra_content"] == {"google": {"thought_signature": "sig-123"}}
    followup = msgs + [{"role": "assistant", "content": "", "tool_calls": [call]},
                       {"role": "tool", "tool_call_id": call["id"], "content": "found"}]
    await call_llm(kernel, "alice", "gemini", "gemini-3-pro-preview", followup, {}, tools=[LOOKUP])
    assert fake_llm.requests[-1].json["contents"][1]["parts"][0]["thoughtSignature"] == "sig-123"
    # a history from another model has no signature: Gemini 3 is told to skip the check
    foreign = msgs + [{"role": "assistant", "content": "", "tool_calls": [dict(call, extra_content=None)]},
                      {"role": "tool", "tool_call_id": call["id"], "content": "found"}]
    await call_llm(kernel, "alice", "gemini", "gemini-3-pro-preview", foreign, {}, tools=[LOOKUP])
    assert fake_llm.requests[-1].json["contents"][1]["parts"][0]["thoughtSignature"] == "skip_thought_signature_validator"


async def test_gemini_refuses_what_it_cannot_do(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    detail = await refused(kernel, fake_llm, "gemini", "gemini-2.5-flash", CONVERSATION, {})
    assert detail.startswith("gemini does not support image URLs other than data: URLs")
    detail = await refused(kernel, fake_llm, "gemini", "gemini-2.5-flash", [{"role": "user", "content": "hi"}],
                           {"parallel_tool_calls": False}, [LOOKUP])
    assert detail.startswith("gemini does not support parallel_tool_calls: false")
    detail = await refused(kernel, fake_llm, "gemini", "gemini-2.5-flash", [{"role": "user", "content": "hi"}],
                           {"response_format": {"type": "json_object"}}, [LOOKUP])
    assert detail == ("gemini does not support response_format json_object together with tools on gemini-2.5-flash "
                      "(Gemini 3 models take both)")
    await call_llm(kernel, "alice", "gemini", "gemini-3-pro-preview", [{"role": "user", "content": "hi"}],
                   {"response_format": {"type": "json_object"}}, tools=[LOOKUP])
    sent = fake_llm.requests[-1].json
    assert sent["generationConfig"]["responseMimeType"] == "application/json" and "functionDeclarations" in sent["tools"][0]


# -- Amazon Bedrock ------------------------------------------------------------------------------------
BEDROCK = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


async def test_bedrock_request_translates_openai_messages_tools_and_options(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("", tool_calls=TWO_CALLS))
    result = await call_llm(kernel, "alice", "bedrock", BEDROCK, INLINE_ONLY,
                            {"tool_choice": {"type": "function", "function": {"name": "lookup"}}, "stop": "END",
                             "max_tokens": 200, "response_format": {"type": "json_object"}}, tools=[LOOKUP, CLOCK])
    sent = fake_llm.requests[-1].json
    assert len(sent["system"]) == 1 and sent["system"][0]["text"].startswith("You are terse.\n\nPrefer metric units.")
    assert "JSON object" in sent["system"][0]["text"]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    first, calls, results = (m["content"] for m in sent["messages"])
    assert first == [{"text": "What is in these?"}, {"image": {"format": "png", "source": {"bytes": PNG}}}]
    assert calls == [{"toolUse": {"toolUseId": "call_a", "name": "lookup", "input": {"q": "cat"}}},
                     {"toolUse": {"toolUseId": "call_b", "name": "clock", "input": {}}}]
    assert results == [{"toolResult": {"toolUseId": "call_a", "content": [{"text": "a small feline"}]}},
                       {"toolResult": {"toolUseId": "call_b", "content": [{"text": "12:00"}]}},
                       {"text": "Summarise."}]
    assert sent["toolConfig"]["tools"][0] == {"toolSpec": {"name": "lookup", "description": "Look a word up",
                                                           "inputSchema": {"json": LOOKUP["function"]["parameters"]}}}
    assert sent["toolConfig"]["toolChoice"] == {"tool": {"name": "lookup"}}
    assert sent["inferenceConfig"] == {"maxTokens": 200, "stopSequences": ["END"]}
    assert result.finish_reason == "tool_calls" and len(result.thoughts["tool_calls"]) == 2


@pytest.mark.parametrize("choice,expected", [("auto", {"auto": {}}), ("required", {"any": {}})])
async def test_bedrock_tool_choice_words(kernel: Kernel, fake_llm: FakeLLMServer, choice: str, expected: dict[str, Any]) -> None:
    await call_llm(kernel, "alice", "bedrock", BEDROCK, [{"role": "user", "content": "hi"}], {"tool_choice": choice},
                   tools=[LOOKUP])
    assert fake_llm.requests[-1].json["toolConfig"]["toolChoice"] == expected


async def test_bedrock_tool_choice_none_leaves_the_tools_out(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    await call_llm(kernel, "alice", "bedrock", BEDROCK, [{"role": "user", "content": "hi"}], {"tool_choice": "none"},
                   tools=[LOOKUP])
    assert "toolConfig" not in fake_llm.requests[-1].json
    fake_llm.requests.clear()
    detail = await refused(kernel, fake_llm, "bedrock", BEDROCK, INLINE_ONLY, {"tool_choice": "none"}, [LOOKUP, CLOCK])
    assert detail == "bedrock does not support tool_choice 'none' in a conversation that already used tools"


@pytest.mark.parametrize("finish,expected", [("length", "length"), ("content_filter", "content_filter"),
                                             ("guardrail_intervened", "content_filter"), ("stop_sequence", "stop"),
                                             ("model_context_window_exceeded", "length")])
async def test_bedrock_stop_reasons_become_openai_finish_reasons(kernel: Kernel, fake_llm: FakeLLMServer,
                                                                 finish: str, expected: str) -> None:
    fake_llm.script(Reply("x", finish=finish), Reply("x", finish=finish))
    result = await call_llm(kernel, "alice", "bedrock", BEDROCK, [{"role": "user", "content": "hi"}], {})
    assert result.finish_reason == expected
    events = await collect(kernel, "bedrock", BEDROCK, [{"role": "user", "content": "hi"}])
    assert events[-1].completion.finish_reason == expected  # type: ignore[union-attr]


async def test_bedrock_streams_through_converse_stream(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("Looking up both for you.", thoughts="two lookups", tool_calls=TWO_CALLS,
                          input_tokens=55, output_tokens=21))
    events = await collect(kernel, "bedrock", BEDROCK, [{"role": "user", "content": "hi"}],
                           {"reasoning_effort": "low"}, [LOOKUP, CLOCK])
    sent = fake_llm.requests[-1]
    assert sent.path == f"/model/{BEDROCK}/converse-stream"
    assert sent.headers["Accept"] == "application/vnd.amazon.eventstream"
    check_stream(events, "Looking up both for you.", [("lookup", {"q": "dog"}), ("clock", {})])
    assert [e.text for e in events if e.kind == "thoughts"] == ["two lookups"]
    final = events[-1].completion
    assert final.finish_reason == "tool_calls" and final.thoughts["reasoning_content"] == "two lookups"  # type: ignore[union-attr]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (55, 21)  # type: ignore[union-attr]
    from gofannon.services import users

    entry = (await users.get_or_create_user(kernel, "alice"))["usageInfo"]["usage"][-1]
    assert entry["metadata"]["inputTokens"] == 55 and entry["responseCost"] > 0


async def test_bedrock_json_schema_streams_the_forced_tools_input_as_content(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("", tool_calls=[{"name": "place", "arguments": {"city": "Oslo"}}]))
    fmt = {"type": "json_schema", "json_schema": {"name": "place", "schema": SCHEMA}}
    events = await collect(kernel, "bedrock", BEDROCK, [{"role": "user", "content": "where?"}], {"response_format": fmt})
    sent = fake_llm.requests[-1].json
    assert sent["toolConfig"]["toolChoice"] == {"tool": {"name": "place"}}
    assert sent["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"] == {"json": SCHEMA}
    streamed = "".join(e.text for e in events if e.kind == "content")
    assert json.loads(streamed) == {"city": "Oslo"} and events[-1].completion.content == streamed  # type: ignore[union-attr]
    assert events[-1].completion.finish_reason == "stop" and not events[-1].completion.tool_calls  # type: ignore[union-attr]


async def test_bedrock_stream_exception_ends_the_call_with_the_vendors_message(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("partial", error="Too many requests, please wait before trying again.", error_code="throttlingException"))
    seen: list[str] = []
    with pytest.raises(GofannonError) as info:
        async for event in stream_llm(kernel, "alice", "bedrock", BEDROCK, [{"role": "user", "content": "hi"}], {}):
            seen.append(event.kind)
    assert "content" in seen and "done" not in seen
    assert info.value.status == 502 and "rate limiting" in info.value.detail and "Too many requests" in info.value.detail


@pytest.mark.parametrize("damage", ["checksum", "cut off"])
async def test_a_broken_bedrock_event_stream_is_a_502_after_what_arrived_whole(kernel: Kernel, fake_llm: FakeLLMServer,
                                                                               damage: str) -> None:
    good = frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "whole"}})
    bad = bytearray(frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "damaged"}}))
    if damage == "checksum":
        bad[-8] ^= 0x20
    else:
        bad = bad[:-5]
    fake_llm.script(Reply(raw=good + bytes(bad)))
    texts: list[str] = []
    with pytest.raises(GofannonError) as info:
        async for event in stream_llm(kernel, "alice", "bedrock", BEDROCK, [{"role": "user", "content": "hi"}], {}):
            texts.append(event.text)
    assert texts == ["whole"]
    assert info.value.status == 502 and "event stream was broken" in info.value.detail


async def test_a_bedrock_error_message_in_the_stream_carries_its_headers_message(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    def header(name: str, value: str) -> bytes:
        return bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value)) + value.encode()

    headers = header(":message-type", "error") + header(":error-code", "InternalFailure") + \
        header(":error-message", "The stream broke upstream")
    prelude = struct.pack(">II", 12 + len(headers) + 4, len(headers))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers
    fake_llm.script(Reply(raw=body + struct.pack(">I", zlib.crc32(body))))
    with pytest.raises(GofannonError) as info:
        await collect(kernel, "bedrock", BEDROCK, [{"role": "user", "content": "hi"}])
    assert info.value.status == 502 and "The stream broke upstream" in info.value.detail


async def test_bedrock_refuses_what_converse_cannot_do(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    detail = await refused(kernel, fake_llm, "bedrock", BEDROCK, CONVERSATION, {})
    assert detail.startswith("bedrock does not support image URLs other than data: URLs")
    detail = await refused(kernel, fake_llm, "bedrock", BEDROCK, [{"role": "user", "content": "hi"}],
                           {"parallel_tool_calls": False}, [LOOKUP])
    assert detail.startswith("bedrock does not support parallel_tool_calls: false")
    tiff = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}]}]
    assert await refused(kernel, fake_llm, "bedrock", BEDROCK, tiff, {}) == \
        "bedrock does not support images of type image/tiff (png, jpeg, gif and webp only)"
    assert await refused(kernel, fake_llm, "bedrock", BEDROCK, [{"role": "user", "content": "hi"}],
                         {"presence_penalty": 1}) == "bedrock does not support presence_penalty"
    assert await refused(kernel, fake_llm, "bedrock", BEDROCK, INLINE_ONLY, {}) == (
        "bedrock does not support a conversation with tool calls or results but no tools (Converse needs the tools' "
        "definitions with them)")
    llama = "us.meta.llama3-3-70b-instruct-v1:0"
    assert await refused(kernel, fake_llm, "bedrock", llama, [{"role": "user", "content": "hi"}],
                         {"tool_choice": "required"}, [LOOKUP]) == (
        f"bedrock does not support tool_choice 'required' on {llama} (Converse forces a tool only for Anthropic, "
        "Mistral and Amazon Nova models)")
    mistral = "mistral.mistral-large-2407-v1:0"
    assert await refused(kernel, fake_llm, "bedrock", mistral, [{"role": "user", "content": "hi"}],
                         {"tool_choice": {"type": "function", "function": {"name": "lookup"}}}, [LOOKUP]) == (
        f"bedrock does not support tool_choice 'function' on {mistral} (Converse forces a named tool only for "
        "Anthropic and Amazon Nova models)")
    await call_llm(kernel, "alice", "bedrock", mistral, [{"role": "user", "content": "hi"}], {"tool_choice": "required"},
                   tools=[LOOKUP])
    assert fake_llm.requests[-1].json["toolConfig"]["toolChoice"] == {"any": {}}
    fake_llm.requests.clear()
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}
    detail = await refused(kernel, fake_llm, "bedrock", llama, [{"role": "user", "content": "hi"}], {"response_format": fmt})
    assert detail.startswith(f"bedrock does not support response_format json_schema on {llama}")


def frame(event_type: str, payload: dict[str, Any]) -> bytes:
    return eventstream_message(event_type, payload)


def test_event_stream_decoder_takes_messages_split_anywhere_and_checks_both_crcs() -> None:
    data = frame("messageStart", {"role": "assistant"}) + frame("contentBlockDelta", {"delta": {"text": "hé"}})
    for cut in range(1, len(data)):
        decoder = eventstream.Decoder()
        decoder.feed(data[:cut])
        got = list(decoder.ready())
        decoder.feed(data[cut:])
        got += list(decoder.ready())
        decoder.close()
        assert [(m.headers[":event-type"], json.loads(m.payload)) for m in got] == \
            [("messageStart", {"role": "assistant"}), ("contentBlockDelta", {"delta": {"text": "hé"}})]
    def decode(raw: bytes | bytearray) -> list[eventstream.Message]:
        decoder = eventstream.Decoder()
        decoder.feed(bytes(raw))
        return list(decoder.ready())

    corrupt_payload = bytearray(data)
    corrupt_payload[-6] ^= 0xFF
    with pytest.raises(eventstream.EventStreamError, match="message checksum"):
        decode(corrupt_payload)
    corrupt_prelude = bytearray(data)
    corrupt_prelude[3] ^= 0x01
    with pytest.raises(eventstream.EventStreamError, match="prelude checksum"):
        decode(corrupt_prelude)
    cut_off = eventstream.Decoder()
    cut_off.feed(data[:-3])
    assert len(list(cut_off.ready())) == 1  # the first message is whole
    with pytest.raises(eventstream.EventStreamError, match="ended inside a message"):
        cut_off.close()


def test_event_stream_decoder_reads_every_header_type() -> None:
    def header(name: str, kind: int, value: bytes) -> bytes:
        return bytes([len(name)]) + name.encode() + bytes([kind]) + value

    headers = (header("t", 0, b"") + header("f", 1, b"") + header("b", 2, b"\xff") + header("s", 3, b"\x01\x00")
               + header("i", 4, struct.pack(">i", -5)) + header("l", 5, struct.pack(">q", 2 ** 40))
               + header("x", 6, struct.pack(">H", 2) + b"\x00\x01") + header(":event-type", 7, struct.pack(">H", 3) + b"abc")
               + header("ts", 8, struct.pack(">q", 1700000000000)) + header("u", 9, bytes(range(16))))
    total = 12 + len(headers) + 2 + 4
    prelude = struct.pack(">II", total, len(headers))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + b"{}"
    decoder = eventstream.Decoder()
    decoder.feed(body + struct.pack(">I", zlib.crc32(body)))
    [message] = decoder.ready()
    assert message.headers == {"t": True, "f": False, "b": -1, "s": 256, "i": -5, "l": 2 ** 40, "x": b"\x00\x01",
                               ":event-type": "abc", "ts": 1700000000000, "u": bytes(range(16))}
    assert message.payload == b"{}"


# -- OpenAI and OpenAI-compatible servers ------------------------------------------------------------------
async def test_openai_chat_passes_everything_through(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("cut short", finish="length"))
    params = {"tool_choice": {"type": "function", "function": {"name": "lookup"}}, "parallel_tool_calls": False,
              "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": SCHEMA}},
              "stop": ["END"], "seed": 1, "presence_penalty": 0.5, "frequency_penalty": 0.1, "user": "u-9",
              "top_p": 0.5, "max_tokens": 50}
    result = await call_llm(kernel, "alice", "openai", "gpt-4o", CONVERSATION, params, tools=[LOOKUP, CLOCK])
    sent = fake_llm.requests[-1].json
    assert sent["messages"] == CONVERSATION  # developer role, image parts, tool calls and results as sent
    assert {k: sent[k] for k in params} == params and sent["tools"] == [LOOKUP, CLOCK]
    assert result.finish_reason == "length"


async def test_openai_reasoning_models_get_max_completion_tokens_and_the_effort(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    # a model the catalog does not list (so not routed to the Responses API), named like a reasoning model
    await call_llm(kernel, "alice", "openai", "o4-mini-ft", [{"role": "developer", "content": "Be exact."},
                                                             {"role": "user", "content": "hi"}],
                   {"max_tokens": 64, "reasoning_effort": "high"})
    sent = fake_llm.requests[-1].json
    assert sent["max_completion_tokens"] == 64 and "max_tokens" not in sent and sent["reasoning_effort"] == "high"
    assert sent["messages"][0] == {"role": "developer", "content": "Be exact."}


async def test_openai_compatible_servers_get_developer_messages_as_system(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("", tool_calls=[{"name": "lookup", "arguments": {"q": "x"}}]))
    result = await call_llm(kernel, "alice", "ollama", "llama2", CONVERSATION,
                            {"tool_choice": "required", "response_format": {"type": "json_object"}, "stop": "END"},
                            tools=[LOOKUP, CLOCK])
    sent = fake_llm.requests[-1].json
    assert [m["role"] for m in sent["messages"]] == ["system", "system", "user", "assistant", "tool", "tool", "user"]
    assert sent["messages"][1]["content"] == "Prefer metric units." and sent["messages"][2:] == CONVERSATION[2:]
    assert sent["tool_choice"] == "required" and sent["response_format"] == {"type": "json_object"}
    assert sent["stop"] == "END" and sent["tools"] == [LOOKUP, CLOCK]
    assert result.finish_reason == "tool_calls"


@pytest.mark.parametrize("said,expected", [("eos", "stop"), ("max_tokens", "length"), ("function_call", "tool_calls"),
                                           ("content_filter", "content_filter")])
async def test_compatible_servers_finish_reasons_are_put_in_openais_words(kernel: Kernel, fake_llm: FakeLLMServer,
                                                                          said: str, expected: str) -> None:
    fake_llm.script(Reply("x", finish=said), Reply("x", finish=said))
    result = await call_llm(kernel, "alice", "ollama", "llama2", [{"role": "user", "content": "hi"}], {})
    assert result.finish_reason == expected
    events = await collect(kernel, "ollama", "llama2", [{"role": "user", "content": "hi"}])
    assert events[-1].completion.finish_reason == expected  # type: ignore[union-attr]


@pytest.mark.parametrize("provider,model", [("openai", "gpt-4-turbo"), ("ollama", "llama2")])
async def test_chat_completions_stream_yields_tool_call_pieces(kernel: Kernel, fake_llm: FakeLLMServer,
                                                               provider: str, model: str) -> None:
    fake_llm.script(Reply("Two lookups coming.", tool_calls=TWO_CALLS, input_tokens=9, output_tokens=4))
    events = await collect(kernel, provider, model, [{"role": "user", "content": "hi"}], {}, [LOOKUP, CLOCK])
    check_stream(events, "Two lookups coming.", [("lookup", {"q": "dog"}), ("clock", {})])
    final = events[-1].completion
    assert final.finish_reason == "tool_calls" and final.usage.output_tokens == 4  # type: ignore[union-attr]
    assert fake_llm.requests[-1].json["stream_options"] == {"include_usage": True}


async def test_openai_responses_api_gets_the_conversation_tools_and_format(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("", tool_calls=[{"name": "lookup", "arguments": {"q": "x"}}]), Reply("plain"))
    fmt = {"type": "json_schema", "json_schema": {"name": "place", "schema": SCHEMA, "strict": True}}
    result = await call_llm(kernel, "alice", "openai", "gpt-5", CONVERSATION,
                            {"tool_choice": {"type": "function", "function": {"name": "lookup"}}, "response_format": fmt,
                             "parallel_tool_calls": False}, tools=[LOOKUP, CLOCK])
    created = fake_llm.requests[0]
    assert created.path == "/v1/responses"
    body = created.json
    assert body["instructions"] == "You are terse."
    assert body["input"][0] == {"role": "developer", "content": "Prefer metric units."}
    assert body["input"][1]["content"] == [
        {"type": "input_text", "text": "What is in these?"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"},
        {"type": "input_image", "image_url": "https://example.org/cat.jpg"}]
    assert body["input"][2:6] == [
        {"type": "function_call", "call_id": "call_a", "name": "lookup", "arguments": '{"q": "cat"}'},
        {"type": "function_call", "call_id": "call_b", "name": "clock", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_a", "output": "a small feline"},
        {"type": "function_call_output", "call_id": "call_b", "output": "12:00"}]
    assert body["tool_choice"] == {"type": "function", "name": "lookup"} and body["parallel_tool_calls"] is False
    assert body["text"] == {"format": {"type": "json_schema", "name": "place", "schema": SCHEMA, "strict": True}}
    assert result.finish_reason == "tool_calls" and result.thoughts["tool_calls"][0]["function"]["name"] == "lookup"
    plain = await call_llm(kernel, "alice", "openai", "gpt-5", [{"role": "user", "content": "hi"}], {"reasoning_effort": "low"})
    assert plain.finish_reason == "stop"  # not the response's status, "completed"


async def test_openai_responses_api_streams_when_streamed(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("Thinking about both.", thoughts="summary here", tool_calls=TWO_CALLS,
                          input_tokens=70, output_tokens=30))
    events = await collect(kernel, "openai", "gpt-5", [{"role": "user", "content": "hi"}],
                           {"reasoning_effort": "medium"}, [LOOKUP, CLOCK])
    sent = fake_llm.requests[-1]
    assert sent.path == "/v1/responses" and sent.json["stream"] is True and "background" not in sent.json
    assert len(fake_llm.requests) == 1  # no polling
    check_stream(events, "Thinking about both.", [("lookup", {"q": "dog"}), ("clock", {})])
    assert [e.text for e in events if e.kind == "thoughts"] == ["summary here"]
    final = events[-1].completion
    assert final.thoughts["summary"] == ["summary here"] and final.finish_reason == "tool_calls"  # type: ignore[union-attr]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (70, 30)  # type: ignore[union-attr]


async def test_openai_responses_incomplete_answer_is_length(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("cut", finish="length"), Reply("cut", finish="length"))
    result = await call_llm(kernel, "alice", "openai", "gpt-5", [{"role": "user", "content": "hi"}], {"reasoning_effort": "low"})
    assert result.finish_reason == "length" and result.content == "cut"
    events = await collect(kernel, "openai", "gpt-5", [{"role": "user", "content": "hi"}], {"reasoning_effort": "low"})
    assert events[-1].completion.finish_reason == "length"  # type: ignore[union-attr]


async def test_openai_options_the_responses_api_lacks_use_chat_completions(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    await call_llm(kernel, "alice", "openai", "gpt-5", [{"role": "user", "content": "hi"}],
                   {"reasoning_effort": "low", "stop": ["END"]}, tools=[LOOKUP])
    sent = fake_llm.requests[-1]
    assert sent.path == "/v1/chat/completions" and sent.json["stop"] == ["END"] and sent.json["reasoning_effort"] == "low"


# -- every streaming provider really streams ---------------------------------------------------------------
@pytest.mark.parametrize("provider,model,params", [
    ("openai", "gpt-4o", {}), ("openai", "gpt-5", {"reasoning_effort": "low"}), ("ollama", "llama2", {}),
    ("anthropic", ANTHROPIC, {}), ("gemini", "gemini-2.5-flash", {}), ("bedrock", BEDROCK, {})])
async def test_the_first_piece_arrives_while_the_vendor_is_still_answering(
        kernel: Kernel, fake_llm: FakeLLMServer, provider: str, model: str, params: dict[str, Any]) -> None:
    hold = asyncio.Event()
    fake_llm.script(Reply("first piece, then the rest of it", hold=hold))
    stream = stream_llm(kernel, "alice", provider, model, [{"role": "user", "content": "hi"}], params)
    first = await anext(stream)
    while first.kind != "content":
        first = await anext(stream)
    assert first.text == "first pi" and not hold.is_set()  # the fake is paused until we let it go on
    hold.set()
    rest = [e async for e in stream]
    assert first.text + "".join(e.text for e in rest if e.kind == "content") == "first piece, then the rest of it"
    assert rest[-1].kind == "done"


@pytest.mark.parametrize("provider,model,params", [
    ("openai", "gpt-4o", {}), ("openai", "gpt-5", {"reasoning_effort": "low"}), ("anthropic", ANTHROPIC, {}),
    ("gemini", "gemini-2.5-flash", {}), ("bedrock", BEDROCK, {})])
async def test_closing_a_stream_hangs_up_on_the_vendor(kernel: Kernel, fake_llm: FakeLLMServer, provider: str,
                                                       model: str, params: dict[str, Any]) -> None:
    """What the gateway does when its client disconnects: the vendor's connection closes, so generation stops."""
    hold = asyncio.Event()
    fake_llm.script(Reply("first piece, then a long rest nobody will read", hold=hold))
    stream = stream_llm(kernel, "alice", provider, model, [{"role": "user", "content": "hi"}], params)
    async for event in stream:
        if event.kind == "content":
            break
    await stream.aclose()
    hold.set()  # the vendor goes on writing, into a closed connection
    for _ in range(500):
        if fake_llm.abandoned:
            break
        await asyncio.sleep(0.01)
    assert fake_llm.abandoned == [fake_llm.requests[-1].path]
