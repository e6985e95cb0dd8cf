"""Agent wire models (wire contract §2.2) and the run-code request (§1.8).

Stored agent documents keep the wire's key order (``AGENT_KEYS``) so the read path can hand them out
without rebuilding them through pydantic.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from gofannon.models import WireModel
from gofannon.models.provider import ProviderConfig

#: ``friendlyName`` must be usable as a URL segment and a Python-ish identifier (DECISIONS.md).
FRIENDLY_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
FRIENDLY_NAME_RE = re.compile(FRIENDLY_NAME_PATTERN)

#: Response/storage key order of an agent (§2.2); ``ownerId`` and ``validateInput`` are ours, appended.
AGENT_FIELDS: tuple[str, ...] = (
    "name", "description", "code", "docstring", "friendlyName", "tools", "swaggerSpecs", "inputSchema",
    "outputSchema", "invokableModels", "gofannonAgents", "composerThoughts", "composerModelConfig",
    "dataStoreConfig", "envVars",
)
AGENT_KEYS: tuple[str, ...] = (*AGENT_FIELDS, "_id", "_rev", "createdAt", "updatedAt", "ownerId", "validateInput")


class SwaggerSpec(WireModel):
    name: str
    content: str


class DataStoreConfigEntry(WireModel):
    namespace: str
    access: Literal["read", "write", "both"] = "both"
    description: str | None = None


class AgentEnvVar(WireModel):
    key: str
    value: str
    description: str | None = None


def _check_friendly_name(value: str | None) -> str | None:
    if value is None or value == "":
        return value
    if not FRIENDLY_NAME_RE.match(value):
        raise ValueError(
            f"friendlyName must match {FRIENDLY_NAME_PATTERN} (letters, digits and underscores, at most 64 characters,"
            " not starting with a digit)"
        )
    return value


class CreateAgentRequest(WireModel):
    name: str
    description: str
    code: str
    docstring: str | None = None
    friendly_name: str | None = None
    tools: dict[str, list[str]] = Field(default_factory=dict)
    swagger_specs: list[SwaggerSpec] = Field(default_factory=list)
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    invokable_models: list[ProviderConfig] | None = None
    gofannon_agents: list[str] = Field(default_factory=list)
    composer_thoughts: Any = None
    composer_model_config: ProviderConfig | None = None
    data_store_config: list[DataStoreConfigEntry] = Field(default_factory=list)
    env_vars: list[AgentEnvVar] = Field(default_factory=list)
    validate_input: bool = False

    @field_validator("friendly_name")
    @classmethod
    def _friendly_name(cls, v: str | None) -> str | None:
        return _check_friendly_name(v)


class UpdateAgentRequest(WireModel):
    """Every field optional; only keys present in the body are applied. Defaults are never validated,
    so an explicit ``null`` on a non-nullable field is a 422 while an absent key is left alone."""

    name: str = None  # type: ignore[assignment]
    description: str = None  # type: ignore[assignment]
    code: str = None  # type: ignore[assignment]
    docstring: str | None = None
    friendly_name: str | None = None
    tools: dict[str, list[str]] = None  # type: ignore[assignment]
    swagger_specs: list[SwaggerSpec] = None  # type: ignore[assignment]
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    invokable_models: list[ProviderConfig] | None = None
    gofannon_agents: list[str] = None  # type: ignore[assignment]
    composer_thoughts: Any = None
    composer_model_config: ProviderConfig | None = None
    data_store_config: list[DataStoreConfigEntry] = None  # type: ignore[assignment]
    env_vars: list[AgentEnvVar] = None  # type: ignore[assignment]
    validate_input: bool = None  # type: ignore[assignment]
    rev: str | None = Field(default=None, alias="_rev")

    @field_validator("friendly_name")
    @classmethod
    def _friendly_name(cls, v: str | None) -> str | None:
        return _check_friendly_name(v)

    def changes(self) -> dict[str, Any]:
        """The wire (camelCase) keys the body carried, with their validated values."""
        present = self.model_fields_set - {"rev"}
        return self.model_dump(by_alias=True, include=present)


class ModelOverrides(WireModel):
    max_tokens: int | None = None
    temperature: float | None = None
    reasoning_effort: str | None = None


class LlmSettings(WireModel):
    """Run-time overrides of agents' LLM calls: ``perModel`` keyed ``provider/model``, or legacy flat fields."""

    per_model: dict[str, ModelOverrides] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    reasoning_effort: str | None = None

    def for_model(self, provider: str, model: str) -> ModelOverrides | None:
        if self.per_model is not None:
            return self.per_model.get(f"{provider}/{model}")
        if self.max_tokens is None and self.temperature is None and self.reasoning_effort is None:
            return None
        return ModelOverrides(max_tokens=self.max_tokens, temperature=self.temperature,
                              reasoning_effort=self.reasoning_effort)


class RunCodeRequest(WireModel):
    code: str
    input_dict: dict[str, Any]
    tools: dict[str, list[str]]
    gofannon_agents: list[str] = Field(default_factory=list)
    llm_settings: LlmSettings | None = None
    output_schema: dict[str, Any] | None = None
    friendly_name: str | None = None
    env_vars: list[AgentEnvVar] | None = None
    agent_id: str | None = None

    @field_validator("gofannon_agents", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return [] if v is None else v
