"""Public schema of builders as last seen (`GET /v1/builders`). What a builder sends (claim, heartbeat, failure)
is the build protocol's (model_builds/protocol.py); registrations of builders are in api/builder_schemas.py."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, field_validator, model_validator

from control_plane.api.schemas.base import Out, with_fields
from control_plane.domain.registry import BuilderRecord

# What a BuilderRecord keeps in `info` (its claim, as stored) rather than as attributes.
_FROM_INFO = ("kinds", "gpu_class", "compute_capability", "tensorrt_version", "gpu_name", "reasons")


# Read from a BuilderRecord: what the builder claimed comes from its stored `info`.
class BuilderOut(Out):
    builder_id: str
    subject: str | None = Field(description="The identity the builder authenticated as.")
    hostname: str
    last_seen: datetime
    kinds: list[str]
    gpu_class: str | None
    compute_capability: str | None
    tensorrt_version: str | None
    gpu_name: str | None
    reasons: list[str]

    @model_validator(mode="before")
    @classmethod
    def _of_record(cls, value: Any) -> Any:
        if isinstance(value, BuilderRecord):
            return with_fields(value, **{name: value.info.get(name) for name in _FROM_INFO})
        return value

    @field_validator("kinds", "reasons", mode="before")
    @classmethod
    def _words(cls, value: Any) -> list[str]:
        return [str(x) for x in value or []]
