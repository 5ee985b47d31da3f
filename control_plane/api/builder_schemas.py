"""Public schemas of builder registrations (docs/builds.md "Whose word"): an admin registers a builder for the
hardware whose TensorRT plans it may deliver; the builder's token secret appears in that one answer only."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from control_plane.domain.build_trust import BuilderRegistration
from control_plane.services.builder_registry import RegisteredBuilder
from edge_agent.protocol.messages import Name


class BuilderRegistrationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name = Field(description="The builder's name, e.g. orin-builder-01 (also its token's name).")
    compute_capability: str = Field(pattern=r"^\d+\.\d+$", description="The GPU's compute capability, e.g. 8.7.")
    tensorrt: str = Field(
        max_length=32, description="The TensorRT release it builds with: 10.3.0, or a pattern such as 10.3 or 10.x."
    )
    gpu_class: Name | None = Field(default=None, description="Only plans of this GPU class (default: any class).")


class BuilderRegistrationOut(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)

    subject: str
    name: str
    compute_capability: str
    tensorrt: str
    gpu_class: str | None
    created_by: str
    created_at: datetime

    @classmethod
    def of(cls, registration: BuilderRegistration) -> BuilderRegistrationOut:
        return cls.model_validate(registration)


class RegisteredBuilderOut(BuilderRegistrationOut):
    token_id: str
    token: str = Field(description="The builder's bearer token, shown this once: store it on the builder now.")

    @classmethod
    def created(cls, registered: RegisteredBuilder) -> RegisteredBuilderOut:
        return cls(
            **BuilderRegistrationOut.of(registered.registration).model_dump(),
            token_id=registered.token.id,
            token=registered.secret,
        )
