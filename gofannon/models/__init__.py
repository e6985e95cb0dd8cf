"""Pydantic wire models. Inputs accept both the camelCase alias and the snake_case field name."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python, both accepted on input; unknown keys ignored."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def wire(self, **kw: object) -> dict[str, object]:
        return self.model_dump(by_alias=True, **kw)  # type: ignore[arg-type]
