"""Pydantic wire models. Inputs accept both the camelCase alias and the snake_case field name.

Every model builds its validator and serializer on first use (``defer_build``), not at import: the kernel
defines ~40 of them, and building them all (with pydantic's one-off plugin scan of the installed
distributions) took ~25 ms of ``gofannon serve``'s start-up; a model's first use now costs ~1 ms once.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python, both accepted on input; unknown keys ignored."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", defer_build=True)

    def wire(self, **kw: object) -> dict[str, object]:
        return self.model_dump(by_alias=True, **kw)  # type: ignore[arg-type]


def _not_a_boolean(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic's lax mode would read true as 1.0: a budget of "true" is a mistake
        raise ValueError("must be a number, not true or false")
    return value


#: A finite amount of money (USD): NaN or infinity in a budget would poison every later comparison, and
#: a boolean is refused rather than read as 0 or 1.
Money = Annotated[float, BeforeValidator(_not_a_boolean), Field(allow_inf_nan=False)]
#: A whole number given as a number (pydantic's lax mode would read true as 1).
Count = Annotated[int, BeforeValidator(_not_a_boolean)]
