"""ProviderConfig: a provider, a model and its parameters (composer config, invokable models, chat settings)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from gofannon.models import WireModel


class ProviderConfig(WireModel):
    provider: str
    model: str
    parameters: dict[str, Any]
    built_in_tool: str | None = Field(default=None, alias="builtInTool")

    @model_validator(mode="after")
    def _exclusive_parameters(self) -> "ProviderConfig":
        from gofannon.llm import catalog

        message = catalog.active().exclusive_violation(self.provider, self.model, self.parameters)
        if message:
            raise ValueError(message)
        return self
