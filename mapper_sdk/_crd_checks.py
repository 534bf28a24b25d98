"""Checks on validated CRD objects that pydantic does not make, and its messages made short.

- ``message``: one pydantic error as a short message people can act on;
- ``too_deep_free_form``: free-form values (``configData``, unknown fields) nested deeper than
  ``_yaml.MAX_FREE_FORM_DEPTH``, found by walking only the fields that can hold them.
"""

from __future__ import annotations

import re
from typing import Any, get_args

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from mapper_sdk import _yaml

Path = tuple[str | int, ...]

_FIXED_MESSAGES = {
    "missing": "is required",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "list_type": "must be a list",
    "extra_forbidden": "unknown field",
}
_BOUNDS = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}
_QUOTED = re.compile(r"'([^']*)'")


def message(error: ErrorDetails) -> str:
    """A short, actionable message for one pydantic error."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    fixed = _FIXED_MESSAGES.get(kind)
    if fixed is not None:
        return fixed
    if kind in _BOUNDS:
        op, key = _BOUNDS[kind]
        return f"must be {op} {ctx[key]}"
    if kind in ("enum", "literal_error"):
        choices = _QUOTED.findall(str(ctx.get("expected", ""))) or [str(ctx.get("expected"))]
        return (
            f"must be {choices[0]}"
            if len(choices) == 1
            else f"must be one of: {', '.join(choices)}"
        )
    if kind == "string_too_short":
        least = ctx.get("min_length", 1)
        return "must not be empty" if least == 1 else f"must be at least {least} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    return error["msg"][:1].lower() + error["msg"][1:]


TOO_DEEP = f"nested deeper than {_yaml.MAX_FREE_FORM_DEPTH} levels"

# Per model class, the fields that can hold free-form values, directly or further down:
# (attribute, YAML name, True if the field itself is free-form).
_Plan = tuple[tuple[str, str, bool], ...]
_PLANS: dict[type[BaseModel], _Plan] = {}


def _plan(cls: type[BaseModel]) -> _Plan:
    plan = _PLANS.get(cls)
    if plan is None:
        _PLANS[cls] = ()  # a placeholder, in case a model contains itself
        entries = []
        for name, info in cls.model_fields.items():
            if _holds_any(info.annotation):
                entries.append((name, info.alias or name, True))
            elif any(_plan(m) for m in _model_classes(info.annotation)):
                entries.append((name, info.alias or name, False))
        plan = _PLANS[cls] = tuple(entries)
    return plan


def _model_classes(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _model_classes(arg)]


def _holds_any(annotation: Any) -> bool:
    return annotation is Any or any(_holds_any(arg) for arg in get_args(annotation))


def too_deep_free_form(obj: BaseModel, path: Path = ()) -> Path | None:
    """The path to the first free-form value of ``obj`` nested too deep, or ``None``.

    Only runs for documents whose text does not already rule it out (see ``_yaml.parse``).
    """
    for attr, name, free in _plan(type(obj)):
        value = getattr(obj, attr)
        if value is None:
            continue
        if free:
            inner = _yaml.too_deep(value)
            found = None if inner is None else (*path, name, *inner)
        elif type(value) is list:
            found = _too_deep_in_list(value, (*path, name))
        else:
            found = too_deep_free_form(value, (*path, name))
        if found is not None:
            return found
    return None


def _too_deep_in_list(items: list[BaseModel], path: Path) -> Path | None:
    for index, item in enumerate(items):
        found = too_deep_free_form(item, (*path, index))
        if found is not None:
            return found
    return None
