"""Provider plugin ``openai_compat``: any server speaking OpenAI's chat completions — ollama, OpenRouter,
Perplexity, vLLM, llama.cpp — chosen by the catalog provider's ``base_url`` (overridable with
``<SLUG>_BASE_URL``) and optional ``api_path`` (default ``/chat/completions``). Options the server knows
and OpenAI does not (ollama's ``top_k``, ``repeat_penalty``) are forwarded."""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable

from gofannon import hookimpl
from gofannon.errors import BadRequest
from gofannon.llm import Completion, LlmCall, StreamEvent
from gofannon_plugins.providers.openai import wire
from gofannon_plugins.providers.translate import check_openai_options


class OpenAICompatProvider:
    slug = "openai_compat"

    def catalog(self, settings: Any) -> dict[str, dict[str, Any]]:
        return {}  # ollama, openrouter and perplexity are config/catalog/*.json files

    @staticmethod
    def url(call: LlmCall) -> str:
        if not call.base_url:
            raise BadRequest(f"Provider '{call.provider}' has no base URL configured.")
        path = str(call.provider_config.get("api_path") or "/chat/completions")
        return call.base_url.rstrip("/") + "/" + path.lstrip("/")

    async def complete(self, call: LlmCall) -> Completion:
        check_openai_options(call)
        return await wire.complete_chat(call, self.url(call), passthrough=True)

    def stream(self, call: LlmCall) -> AsyncIterator[StreamEvent]:
        check_openai_options(call)
        return wire.stream_chat(call, self.url(call), passthrough=True)  # the wire's generator itself: see openai


@hookimpl
def register_providers(register: Callable[..., None], settings: Any) -> None:
    register(OpenAICompatProvider())
