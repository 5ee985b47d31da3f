"""What every answer of the API shares: frozen, and read from a domain value by attribute name.

`XOut.model_validate(value)` builds an answer from a domain dataclass (pydantic's `from_attributes`); a schema
whose fields are named or shaped differently from its domain value says how in a `model_validator(mode="before")`
that returns `with_fields(value, ...)`. This module must never import a domain module: it is the mechanism only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict


class Out(BaseModel):
    """A public answer: immutable, validated from a domain value's attributes."""

    model_config = ConfigDict(frozen=True, from_attributes=True)


class _WithFields:
    """`value` seen through `fields`: an attribute named in `fields` comes from there, any other from `value`."""

    __slots__ = ("_fields", "_value")

    def __init__(self, value: object, fields: Mapping[str, Any]) -> None:
        self._value = value
        self._fields = fields

    def __getattr__(self, name: str) -> Any:
        if name in self._fields:
            return self._fields[name]
        return getattr(self._value, name)


def with_fields(value: object, **fields: Any) -> object:
    """`value` with the answer's fields it lacks (or holds under another name or shape) given by keyword: what an
    `Out` reads instead of the value's own attributes."""
    return _WithFields(value, fields)
