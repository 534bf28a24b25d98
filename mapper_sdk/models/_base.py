"""Shared pydantic configuration for the KubeEdge CRD models."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel


def _scalar_to_str(value: Any) -> Any:
    # The CRD schema types these as strings, but people write `minimum: 0` and YAML makes it
    # a number; accept it rather than make them quote every bound.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    return value


LenientStr = Annotated[str, BeforeValidator(_scalar_to_str)]
"""A string field that also accepts a YAML number or boolean and keeps its text."""

FreeForm = dict[str, Any]
"""A free-form object (``x-kubernetes-preserve-unknown-fields``), kept exactly as given."""

Cycle = Annotated[int, Field(ge=0)]
"""A collect/report cycle as written in the CRD (milliseconds; see ``binding.cycle_ms``)."""


class CrdModel(BaseModel):
    """Base of every CRD object: camelCase names, frozen, unknown fields kept for warnings.

    Unknown fields are kept (``extra="allow"``) rather than refused so that objects written for
    a newer KubeEdge still load; the loader reports them as warnings with their location.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="allow",
        str_strip_whitespace=False,
    )
