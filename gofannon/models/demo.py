"""Demo app wire models (wire contract §1.12, §2.4): a saved single-page app that calls deployed agents.

Unlike agents, demos keep the reference's snake_case timestamps (``created_at``/``updated_at``).
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field

from gofannon.models import WireModel
from gofannon.models.provider import ProviderConfig

DEMOS = "demos"

#: Response/storage key order of a demo (§2.4); ``ownerId`` is ours, appended.
DEMO_KEYS: tuple[str, ...] = (
    "name", "description", "selectedApis", "modelConfig", "userPrompt", "generatedCode", "composerThoughts",
    "_id", "_rev", "created_at", "updated_at", "ownerId",
)


class DeployedApi(WireModel):
    friendly_name: str
    agent_id: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]


class GeneratedCode(WireModel):
    html: str = ""
    css: str = ""
    js: str = ""
    thoughts: Any = None


class CreateDemoAppRequest(WireModel):
    name: str
    description: str | None = None
    selected_apis: list[DeployedApi]
    composer: ProviderConfig = Field(validation_alias=AliasChoices("modelConfig", "model_config"),
                                     serialization_alias="modelConfig")
    user_prompt: str
    generated_code: GeneratedCode
    composer_thoughts: Any = None

    def document(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "selectedApis": [api.wire() for api in self.selected_apis],
            "modelConfig": self.composer.wire(),
            "userPrompt": self.user_prompt,
            "generatedCode": self.generated_code.wire(),
            "composerThoughts": self.composer_thoughts,
        }


class GenerateDemoCodeRequest(WireModel):
    user_prompt: str
    selected_apis: list[DeployedApi]
    composer: ProviderConfig = Field(validation_alias=AliasChoices("modelConfig", "model_config"),
                                     serialization_alias="modelConfig")
    built_in_tools: list[str] = Field(default_factory=list)


def ordered(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored demo in the wire's key order (unknown keys dropped)."""
    out = {k: doc.get(k) for k in DEMO_KEYS if k in doc or k in ("_rev", "composerThoughts", "description")}
    if doc.get("workspaceId"):
        out["workspaceId"] = doc["workspaceId"]  # only demos of a shared workspace carry one (docs/workspaces.md)
    return out
