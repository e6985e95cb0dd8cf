"""LLM providers: the plugin contract and the values that cross it.

A provider plugin registers an object satisfying ``Provider`` through ``register_providers``. The kernel
knows no vendor: it resolves a catalog provider (``config/catalog/<slug>.json``) to a plugin, hands the
plugin a fully prepared ``LlmCall`` (key, base URL, validated parameters, tools, timeout and an HTTP
helper with retries) and gets back a ``Completion`` in one normalised shape, whatever the vendor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.llm.http import LlmHttp
    from gofannon.settings import Settings


@dataclass
class Usage:
    """Token counts as the vendor reported them; ``output_tokens`` includes reasoning tokens."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0

    def add(self, other: "Usage") -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cached_input_tokens += other.cached_input_tokens
        self.reasoning_tokens += other.reasoning_tokens


@dataclass
class Completion:
    """One model answer. ``thoughts`` follows the reference: a dict (``reasoning_content``, ``tool_calls``
    in OpenAI's function-call shape, ``summary`` for the Responses API) or None when there is nothing."""

    content: str
    thoughts: Any = None
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None  # OpenAI's words: stop | length | tool_calls | content_filter

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """The model's tool calls in OpenAI's shape (``[{id, type: "function", function: {name, arguments}}]``)."""
        if isinstance(self.thoughts, dict):
            return list(self.thoughts.get("tool_calls") or [])
        return []


@dataclass
class StreamEvent:
    """A piece of a streamed answer: ``kind`` is ``content`` or ``thoughts`` (with ``text``), ``tool_call``
    (with ``tool_call``, a piece of one call in OpenAI's delta shape: ``{index, id?, type?, function: {name?,
    arguments}}``; ``id`` and ``name`` come with the call's first piece, ``arguments`` arrive in pieces), or
    ``done`` (with the final ``completion``, whose ``tool_calls`` hold the calls whole)."""

    kind: str
    text: str = ""
    completion: Completion | None = None
    tool_call: dict[str, Any] | None = None


@dataclass
class LlmCall:
    """Everything a plugin needs for one call, prepared by ``gofannon.llm.service``."""

    provider: str  # catalog slug (e.g. "ollama", served by the openai_compat plugin)
    model: str
    messages: list[dict[str, Any]]
    parameters: dict[str, Any]  # validated, nulls dropped, reasoning_effort removed
    reasoning_effort: str | None  # None when disabled
    tools: list[dict[str, Any]] | None
    api_key: str | None
    base_url: str | None
    model_config: dict[str, Any]  # the catalog entry ({} for a model the catalog does not list)
    provider_config: dict[str, Any]  # the catalog provider (internal keys included)
    timeout: float
    http: "LlmHttp"
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. cache_prefix


@runtime_checkable
class Provider(Protocol):
    """What ``register_providers`` registers.

    ``slug`` names the plugin; catalog providers pick it by their ``plugin`` key (default: their own
    slug). ``catalog(settings)`` returns provider configs this plugin contributes (``{slug: {...,
    "models": {...}}}``); files under ``config/catalog/`` override them model by model.
    """

    slug: str

    def catalog(self, settings: "Settings") -> dict[str, dict[str, Any]]: ...

    async def complete(self, call: LlmCall) -> Completion: ...

    def stream(self, call: LlmCall) -> AsyncIterator[StreamEvent]: ...


@dataclass
class LlmResult:
    """What ``call_llm`` returns: the answer, its token usage and what it cost the caller (USD)."""

    content: str
    thoughts: Any
    usage: Usage
    cost: float
    priced: bool
    provider: str
    model: str
    finish_reason: str | None = None

    def __iter__(self):  # type: ignore[no-untyped-def]
        """``content, thoughts = await call_llm(...)`` works, as the reference's tuple did."""
        return iter((self.content, self.thoughts))


#: The ``finish_reason`` values a provider reports (OpenAI's); plugins map their vendor's stop reasons onto them.
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter"})

#: OpenAI chat-completions request options a caller may put in ``LlmCall.parameters`` (the ``/v1`` gateway
#: passes them under these names; ``max_completion_tokens`` arrives as ``max_tokens``). A plugin translates
#: the ones its vendor has and raises ``UnsupportedFeature`` for one it cannot honour.
OPENAI_OPTIONS = frozenset({
    "temperature", "top_p", "max_tokens", "stop", "seed", "presence_penalty", "frequency_penalty",
    "tool_choice", "parallel_tool_calls", "response_format", "user",
})


class UnsupportedFeature(Exception):
    """A provider cannot do what the call asks (e.g. ``response_format: json_schema`` on a vendor without it).
    The service answers 400 with this message, before anything is charged."""

    def __init__(self, provider: str, what: str) -> None:
        self.provider, self.what = provider, what
        super().__init__(f"{provider} does not support {what}")


class VendorError(Exception):
    """A vendor answered an error (after retries). Mapped to a user-facing error by the service."""

    def __init__(self, status: int, message: str, *, code: str | None = None) -> None:
        self.status, self.message, self.code = status, message, code
        super().__init__(f"{status}: {message}")


__all__ = ["FINISH_REASONS", "OPENAI_OPTIONS", "Completion", "LlmCall", "LlmResult", "Provider", "StreamEvent",
           "UnsupportedFeature", "Usage", "VendorError"]


def message_text(content: Any) -> str:
    """The text of a chat message's ``content``: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("text"))
    return "" if content is None else str(content)
