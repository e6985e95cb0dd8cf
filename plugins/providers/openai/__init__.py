"""Provider plugin ``openai``: chat completions, and the Responses API for models with
``api_style: "responses"`` (reasoning effort with summaries, built-in tools such as web_search)."""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable

from gofannon import hookimpl
from gofannon.llm import Completion, LlmCall, StreamEvent
from gofannon_plugins.providers.openai import wire
from gofannon_plugins.providers.translate import check_openai_options

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIProvider:
    slug = "openai"

    def catalog(self, settings: Any) -> dict[str, dict[str, Any]]:
        return {}  # the bundled catalog lives in config/catalog/openai.json

    @staticmethod
    def base(call: LlmCall) -> str:
        return (call.base_url or DEFAULT_BASE_URL).rstrip("/")

    @staticmethod
    def responses_path(call: LlmCall) -> bool:
        """The reference's rule: Responses only for ``api_style: responses`` with tools or reasoning."""
        return call.model_config.get("api_style") == "responses" and bool(call.tools or call.reasoning_effort)

    async def complete(self, call: LlmCall) -> Completion:
        check_openai_options(call)
        if self.responses_path(call):
            body = wire.responses_body(call)
            if body is not None:
                return await wire.complete_responses(call, self.base(call), body)
        return await wire.complete_chat(call, f"{self.base(call)}/chat/completions")

    def stream(self, call: LlmCall) -> AsyncIterator[StreamEvent]:
        """The wire's own generator, not one wrapping it: closing the stream (a client hung up) closes the
        vendor's connection at once, with no inner generator left for the garbage collector to close."""
        check_openai_options(call)
        body = wire.responses_body(call) if self.responses_path(call) else None
        if body is not None:
            return wire.stream_responses(call, self.base(call), body)
        return wire.stream_chat(call, f"{self.base(call)}/chat/completions")


@hookimpl
def register_providers(register: Callable[..., None], settings: Any) -> None:
    register(OpenAIProvider())
