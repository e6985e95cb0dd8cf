"""Each bundled provider plugin against a local server speaking its vendor's protocol, through call_llm
(billing, key choice, retries, error messages) on a real kernel."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Callable

import pytest

from fakes import KEY, FakeLLMServer, Reply
from gofannon import hookimpl
from gofannon.errors import GofannonError
from gofannon.kernel import Kernel
from gofannon.llm.service import call_llm, call_llm_tuple, stream_llm

TOOL = {"type": "function", "function": {"name": "lookup", "description": "Look up",
                                         "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}


class EventSink:
    """A record_event plugin keeping what the kernel records."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    @hookimpl
    def record_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)


@pytest.fixture
async def kernel(make_settings: Callable[..., Any], fake_llm: FakeLLMServer) -> AsyncIterator[Kernel]:
    k = Kernel(make_settings(**fake_llm.env, LLM_RATE_LIMIT_BACKOFF_CAP="0", GOFANNON_STORAGE="memory"))
    k.sink = EventSink()  # type: ignore[attr-defined]
    k.pm.register(k.sink, name="test-sink")  # type: ignore[attr-defined]
    await k.open()
    yield k
    await k.close()


async def usage_of(kernel: Kernel, uid: str = "alice") -> dict[str, Any]:
    from gofannon.services import users

    return (await users.get_or_create_user(kernel, uid))["usageInfo"]  # type: ignore[no-any-return]


# -- OpenAI chat completions --------------------------------------------------------------------------
async def test_openai_chat_sends_parameters_and_returns_tool_calls_in_thoughts(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("", tool_calls=[{"name": "lookup", "arguments": {"q": "x"}}], input_tokens=3, output_tokens=4))
    result = await call_llm(kernel, "alice", "openai", "gpt-4-turbo", [{"role": "user", "content": "hi"}],
                            {"max_tokens": 100, "temperature": None, "show_thinking": True}, tools=[TOOL])
    sent = fake_llm.requests[-1].json
    assert sent["max_tokens"] == 100 and "temperature" not in sent and "show_thinking" not in sent
    assert sent["tools"] == [TOOL]
    assert fake_llm.requests[-1].api_key == KEY
    call = result.thoughts["tool_calls"][0]
    assert call["function"]["name"] == "lookup" and json.loads(call["function"]["arguments"]) == {"q": "x"}
    assert result.usage.input_tokens == 3 and result.usage.output_tokens == 4


async def test_reasoning_models_get_max_completion_tokens_and_effort(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    await call_llm(kernel, "alice", "openai", "o3-custom", [{"role": "user", "content": "hi"}],
                   {"max_tokens": 100, "reasoning_effort": "low"})
    sent = fake_llm.requests[-1].json
    assert sent["max_completion_tokens"] == 100 and sent["reasoning_effort"] == "low"


async def test_responses_model_with_tools_returns_function_calls(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("", tool_calls=[{"name": "lookup", "arguments": {"q": "z"}}]))
    result = await call_llm(kernel, "alice", "openai", "gpt-5", [{"role": "user", "content": "hi"}], {}, tools=[TOOL])
    created = fake_llm.requests[0].json
    assert created["tools"][0]["name"] == "lookup" and created["tools"][0]["type"] == "function"
    assert result.thoughts["tool_calls"][0]["function"]["name"] == "lookup"


async def test_tuple_form_gives_content_and_thoughts(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("hello", thoughts="thinking..."))
    content, thoughts = await call_llm_tuple(kernel, "alice", "openai", "gpt-4o", [{"role": "user", "content": "hi"}], {})
    assert content == "hello" and thoughts == {"reasoning_content": "thinking..."}


async def test_streamed_answer_arrives_in_pieces_and_is_billed_once(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("a fairly long streamed answer", input_tokens=1000, output_tokens=500))
    pieces, final = [], None
    async for event in stream_llm(kernel, "alice", "openai", "gpt-4o", [{"role": "user", "content": "hi"}], {}):
        if event.kind == "content":
            pieces.append(event.text)
        elif event.kind == "done":
            final = event.completion
    assert len(pieces) > 1 and "".join(pieces) == "a fairly long streamed answer"
    assert final is not None and final.usage.output_tokens == 500
    usage = await usage_of(kernel)
    assert len(usage["usage"]) == 1 and usage["usage"][0]["responseCost"] > 0


# -- OpenAI Responses API -----------------------------------------------------------------------------
async def test_responses_model_with_reasoning_polls_the_background_response_until_done(
        kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("deep answer", thoughts="step by step", polls=4))
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "why?"}]
    result = await call_llm(kernel, "alice", "openai", "gpt-5.2", msgs, {"reasoning_effort": "high"})
    assert result.content == "deep answer" and result.thoughts == {"summary": ["step by step"]}
    created = fake_llm.requests[0]
    assert created.path == "/v1/responses"
    assert created.json["instructions"] == "Be brief." and created.json["background"] is True
    assert created.json["reasoning"] == {"effort": "high", "summary": "auto"}
    assert [r.method for r in fake_llm.requests[1:]] == ["GET"] * 5


async def test_responses_model_without_reasoning_or_tools_uses_chat_completions(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    await call_llm(kernel, "alice", "openai", "gpt-5.2", [{"role": "user", "content": "hi"}], {"reasoning_effort": "disable"})
    assert fake_llm.requests[0].path == "/v1/chat/completions"


# -- Anthropic -----------------------------------------------------------------------------------------
async def test_anthropic_messages_with_thinking_and_tool_use(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("The answer", thoughts="Let me think", tool_calls=[{"name": "lookup", "arguments": {"q": "y"}}],
                          input_tokens=50, output_tokens=70))
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hi"}]
    result = await call_llm(kernel, "alice", "anthropic", "claude-sonnet-4-5-20250929", msgs,
                            {"reasoning_effort": "medium", "temperature": 0.3}, tools=[TOOL])
    sent = fake_llm.requests[-1]
    assert sent.path == "/v1/messages" and sent.headers["x-api-key"] == KEY
    assert sent.json["system"] == "You are terse." and sent.json["messages"] == [{"role": "user", "content": "hi"}]
    assert sent.json["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert "temperature" not in sent.json  # not allowed together with thinking
    assert sent.json["tools"][0]["input_schema"]["properties"] == {"q": {"type": "string"}}
    assert result.content == "The answer"
    assert result.thoughts["reasoning_content"] == "Let me think"
    assert result.thoughts["tool_calls"][0]["function"]["name"] == "lookup"
    assert result.usage.output_tokens == 70


async def test_anthropic_stream(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("streamed from claude", thoughts="hmm", output_tokens=9))
    kinds, final = [], None
    async for event in stream_llm(kernel, "alice", "anthropic", "claude-haiku-4-5-20251001",
                                  [{"role": "user", "content": "hi"}], {}):
        kinds.append(event.kind)
        final = event.completion or final
    assert "thoughts" in kinds and kinds[-1] == "done"
    assert final is not None and final.content == "streamed from claude" and final.usage.output_tokens == 9


async def test_anthropic_overloaded_is_retried(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply(status=529, error="Overloaded"), Reply("after retry"))
    result = await call_llm(kernel, "alice", "anthropic", "claude-3-haiku-20240307", [{"role": "user", "content": "x"}], {})
    assert result.content == "after retry" and len(fake_llm.requests) == 2


# -- Gemini --------------------------------------------------------------------------------------------
async def test_gemini_generate_content_with_thinking_and_google_search(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("Paris", thoughts="capital of France", input_tokens=8, output_tokens=2))
    msgs = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Which country?"}, {"role": "user", "content": "France"}]
    result = await call_llm(kernel, "alice", "gemini", "gemini-2.5-flash", msgs,
                            {"reasoning_effort": "low", "temperature": 0.2}, tools=[{"google_search": {}}])
    sent = fake_llm.requests[-1]
    assert sent.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent.headers["x-goog-api-key"] == KEY
    assert sent.json["systemInstruction"] == {"parts": [{"text": "Answer in one word."}]}
    assert [c["role"] for c in sent.json["contents"]] == ["user", "model", "user"]
    assert sent.json["generationConfig"]["temperature"] == 0.2
    assert sent.json["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 1024}
    assert sent.json["tools"] == [{"google_search": {}}]
    assert result.content == "Paris" and result.thoughts == {"reasoning_content": "capital of France"}


async def test_gemini_stream(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("streamed gemini"))
    text = []
    async for event in stream_llm(kernel, "alice", "gemini", "gemini-2.5-pro", [{"role": "user", "content": "hi"}], {}):
        if event.kind == "content":
            text.append(event.text)
    assert "".join(text) == "streamed gemini"
    assert fake_llm.requests[-1].query.get("alt") == "sse"


# -- Amazon Bedrock ------------------------------------------------------------------------------------
async def test_bedrock_converse_with_a_bedrock_api_key_and_claude_thinking(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("from bedrock", thoughts="pondering", tool_calls=[{"name": "lookup", "arguments": {"q": 1}}],
                          input_tokens=1000, output_tokens=100))
    msgs = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi"}]
    model = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    result = await call_llm(kernel, "alice", "bedrock", model, msgs, {"reasoning_effort": "high", "max_tokens": 500},
                            tools=[TOOL])
    sent = fake_llm.requests[-1]
    assert sent.path == f"/model/{model}/converse" and sent.api_key == KEY
    assert sent.json["system"] == [{"text": "Be kind."}]
    assert sent.json["messages"] == [{"role": "user", "content": [{"text": "hi"}]}]
    assert sent.json["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 4096}}
    assert sent.json["inferenceConfig"]["maxTokens"] == 5120
    assert sent.json["toolConfig"]["tools"][0]["toolSpec"]["name"] == "lookup"
    assert result.content == "from bedrock" and result.thoughts["reasoning_content"] == "pondering"
    assert result.thoughts["tool_calls"][0]["function"]["arguments"] == '{"q": 1}'
    assert result.priced and result.cost > 0


# -- OpenAI-compatible servers -------------------------------------------------------------------------
async def test_ollama_goes_to_its_openai_compatible_endpoint_with_its_own_options(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    result = await call_llm(kernel, "alice", "ollama", "llama2", [{"role": "user", "content": "hi"}],
                            {"temperature": 0.5, "top_k": 20, "num_predict": 64})
    sent = fake_llm.requests[-1]
    assert sent.path == "/v1/chat/completions" and "Authorization" not in sent.headers
    assert sent.json["top_k"] == 20 and sent.json["max_tokens"] == 64
    assert result.content == fake_llm.default.content


async def test_perplexity_citations_come_back_in_thoughts(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("cited", citations=["https://example.org"]))
    result = await call_llm(kernel, "alice", "perplexity", "sonar", [{"role": "user", "content": "hi"}], {})
    assert fake_llm.requests[-1].path == "/chat/completions"
    assert result.thoughts == {"citations": ["https://example.org"]}


# -- the service around the plugins --------------------------------------------------------------------
async def test_rate_limits_are_retried_then_succeed(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply(status=429, error="Rate limit"), Reply(status=503, error="busy"), Reply("finally"))
    result = await call_llm(kernel, "alice", "openai", "gpt-4o", [{"role": "user", "content": "x"}], {})
    assert result.content == "finally" and len(fake_llm.requests) == 3


async def test_persistent_server_errors_end_as_a_502_naming_the_provider(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.respond(lambda req: Reply(status=500, error="The server had an error"))
    with pytest.raises(GofannonError) as info:
        await call_llm(kernel, "alice", "openai", "gpt-4o", [{"role": "user", "content": "x"}], {})
    assert info.value.status == 502
    assert "openai" in str(info.value.detail) and "The server had an error" in str(info.value.detail)
    assert len(fake_llm.requests) == kernel.settings.llm_retries + 1


async def test_context_window_error_has_the_reference_message(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply(status=400, error="This model's maximum context length is 128000 tokens.",
                          error_code="context_length_exceeded"))
    with pytest.raises(GofannonError) as info:
        await call_llm(kernel, "alice", "openai", "gpt-4o", [{"role": "user", "content": "x"}], {})
    assert info.value.detail == ("Prompt exceeded gpt-4o's context window of 128000 tokens. "
                                 "Use hierarchical consolidation to process data in smaller groups.")
    assert any(e["eventType"] == "context_window_exceeded" for e in kernel.sink.events)  # type: ignore[attr-defined]


async def test_out_of_range_parameter_is_a_422_before_any_call(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    with pytest.raises(GofannonError) as info:
        await call_llm(kernel, "alice", "ollama", "llama2", [{"role": "user", "content": "x"}], {"temperature": 7})
    assert info.value.status == 422 and "between 0.0 and 1.0" in info.value.detail
    assert fake_llm.requests == []


async def test_users_own_key_is_used_before_the_servers(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    from gofannon.auth import Identity
    from gofannon.services import users

    alice = Identity(uid="alice", provider_type="dev_stub")
    await users.set_api_key(kernel, alice, "openai", "sk-alices-own-key-123456")
    await call_llm(kernel, alice, "openai", "gpt-4o", [{"role": "user", "content": "x"}], {})
    assert fake_llm.requests[-1].api_key == "sk-alices-own-key-123456"


async def test_unpriced_model_costs_nothing_and_says_so(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    result = await call_llm(kernel, "alice", "openai", "my-private-finetune", [{"role": "user", "content": "x"}], {})
    assert result.cost == 0 and result.priced is False
    entry = (await usage_of(kernel))["usage"][-1]
    assert entry["responseCost"] == 0 and entry["metadata"]["unpriced"] is True
    event = [e for e in kernel.sink.events if e["eventType"] == "llm_request"][-1]  # type: ignore[attr-defined]
    assert event["metadata"]["model"] == "my-private-finetune" and event["userId"] == "alice"


async def test_unknown_provider_and_missing_key_are_clear_400s(kernel: Kernel, fake_llm: FakeLLMServer,
                                                               make_settings: Callable[..., Any]) -> None:
    with pytest.raises(GofannonError) as info:
        await call_llm(kernel, "alice", "nope", "m", [{"role": "user", "content": "x"}], {})
    assert info.value.status == 400 and info.value.detail == "Unknown provider 'nope'."
    bare = Kernel(make_settings(GOFANNON_STORAGE="memory"))
    await bare.open()
    try:
        with pytest.raises(GofannonError) as info:
            await call_llm(bare, "alice", "anthropic", "claude-3-haiku-20240307", [{"role": "user", "content": "x"}], {})
        assert info.value.status == 400 and "No API key for anthropic" in info.value.detail
    finally:
        await bare.close()


async def test_a_model_slower_than_the_timeout_is_a_504(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("late", delay=5))
    with pytest.raises(GofannonError) as info:
        await call_llm(kernel, "alice", "openai", "gpt-4o", [{"role": "user", "content": "x"}], {}, timeout=0.3)
    assert info.value.status == 504 and "did not answer within 0.3 s" in info.value.detail


async def test_malformed_messages_from_agent_code_are_a_422(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    for bad in ([], ["hi"], [{"content": "no role"}], "hi"):
        with pytest.raises(GofannonError) as info:
            await call_llm(kernel, "alice", "openai", "gpt-4o", bad, {})  # type: ignore[arg-type]
        assert info.value.status == 422
    assert fake_llm.requests == []


async def test_a_background_response_still_running_at_the_timeout_is_cancelled(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply("too slow", polls=10_000))
    with pytest.raises(GofannonError) as info:
        await call_llm(kernel, "alice", "openai", "o3", [{"role": "user", "content": "x"}],
                       {"reasoning_effort": "high"}, timeout=0.5)
    assert info.value.status == 504
    assert fake_llm.requests[-1].path.endswith("/cancel")


async def test_an_exhausted_vendor_quota_is_not_retried(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.respond(lambda req: Reply(status=429, error="You exceeded your current quota.", error_code="insufficient_quota"))
    with pytest.raises(GofannonError) as info:
        await call_llm(kernel, "alice", "openai", "gpt-4o", [{"role": "user", "content": "x"}], {})
    assert info.value.status == 502 and "exceeded your current quota" in info.value.detail
    assert len(fake_llm.requests) == 1


async def test_a_wrong_base_url_is_a_502_naming_the_provider(kernel: Kernel, fake_llm: FakeLLMServer) -> None:
    fake_llm.script(Reply(status=200, content="x"))
    kernel.settings.environ = {**kernel.settings.environ, "OPENAI_BASE_URL": fake_llm.url + "/nowhere"}
    with pytest.raises(GofannonError) as info:
        await call_llm(kernel, "alice", "openai", "gpt-4o", [{"role": "user", "content": "x"}], {})
    assert info.value.status == 502 and info.value.detail.startswith("openai returned an error (404)")
