"""Chat wire models (wire contract §2.5): ChatRequest in, ChatResponse out (snake_case, no aliases)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from gofannon.models import WireModel


class ChatMessage(WireModel):
    role: str = Field(pattern=r"^(user|assistant|system)$")
    content: str


class ChatRequest(WireModel):
    messages: list[ChatMessage]
    provider: str = "openai"
    model: str = "gpt-3.5-turbo"
    parameters: dict[str, Any] = Field(default_factory=dict)
    stream: bool = False
    built_in_tools: list[str] = Field(default_factory=list, alias="builtInTools")

    @model_validator(mode="after")
    def _exclusive_parameters(self) -> "ChatRequest":
        from gofannon.llm import catalog

        message = catalog.active().exclusive_violation(self.provider, self.model, self.parameters)
        if message:
            raise ValueError(message)
        return self


def chat_response(ticket_id: str, doc: dict[str, Any] | None) -> dict[str, Any]:
    """The ``ChatResponse`` of a ticket document (every key present, timestamps filled in)."""
    doc = doc or {}
    return {
        "ticket_id": doc.get("_id", ticket_id),
        "status": doc.get("status", "pending"),
        "result": doc.get("result"),
        "error": doc.get("error"),
        "created_at": doc.get("created_at"),
        "updated_at": doc.get("updated_at"),
        "completed_at": doc.get("completed_at"),
    }
