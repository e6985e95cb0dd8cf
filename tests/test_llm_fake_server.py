"""The fake vendor server answers what a test scripted, in each vendor's wire shape."""

from __future__ import annotations

import aiohttp

from fakes import FakeLLMServer, Reply


async def test_fake_openai_answers_scripted_replies_then_the_default(fake_openai: FakeLLMServer) -> None:
    fake_openai.script(Reply("first", input_tokens=7, output_tokens=2))
    async with aiohttp.ClientSession() as s:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        async with s.post(f"{fake_openai.openai_base_url}/chat/completions", json=body) as r:
            first = await r.json()
        async with s.post(f"{fake_openai.openai_base_url}/chat/completions", json=body) as r:
            second = await r.json()
    assert first["choices"][0]["message"]["content"] == "first"
    assert first["usage"]["prompt_tokens"] == 7
    assert second["choices"][0]["message"]["content"] == fake_openai.default.content
    assert fake_openai.requests[0].last_user_text == "hi"


async def test_fake_openai_streams_chunks_and_usage(fake_openai: FakeLLMServer) -> None:
    fake_openai.script(Reply("a streamed answer"))
    body = {"model": "m", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{fake_openai.openai_base_url}/chat/completions", json=body) as r:
            text = await r.text()
    assert "a stream" in text and '"usage"' in text and text.rstrip().endswith("[DONE]")


async def test_fake_responses_background_polls_until_completed(fake_openai: FakeLLMServer) -> None:
    fake_openai.script(Reply("done", polls=2))
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{fake_openai.openai_base_url}/responses",
                          json={"model": "o3", "input": "hi", "background": True}) as r:
            created = await r.json()
        statuses = []
        for _ in range(3):
            async with s.get(f"{fake_openai.openai_base_url}/responses/{created['id']}") as r:
                statuses.append((await r.json())["status"])
    assert created["status"] == "queued"
    assert statuses == ["in_progress", "in_progress", "completed"]
