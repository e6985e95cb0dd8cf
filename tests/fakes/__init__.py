"""Fake external services for tests (registered in tests/conftest.py through ``pytest_plugins``)."""

from __future__ import annotations

from typing import AsyncIterator

import pytest

from fakes.llm_servers import KEY, FakeLLMServer, Recorded, Reply

__all__ = ["KEY", "FakeLLMServer", "Recorded", "Reply", "fake_openai", "fake_llm"]


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeLLMServer]:
    """A fake LLM vendor server on 127.0.0.1 speaking OpenAI (chat completions, Responses), Anthropic and
    Gemini; ``fake_llm.env`` points every bundled provider at it."""
    async with FakeLLMServer() as server:
        yield server


@pytest.fixture
async def fake_openai(fake_llm: FakeLLMServer) -> FakeLLMServer:
    """The same fake server, named for tests that only use OpenAI: ``serve(**fake_openai.env)``."""
    return fake_llm
