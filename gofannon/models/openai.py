"""The OpenAI chat-completions request body, for ``/openapi.json``.

``gofannon.services.gateway.parse_request`` validates bodies by hand (faster than a model on the hot
path, and its errors name OpenAI's ``param``); this model documents the same fields.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class ChatCompletionBody(BaseModel):
    """OpenAI's ``POST /v1/chat/completions`` body; fields not listed are ignored, as OpenAI does."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    model: str
    messages: list[dict[str, Any]]
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    user: str | None = None
    n: Literal[1] | None = None
