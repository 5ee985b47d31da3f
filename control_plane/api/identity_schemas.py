"""Public schemas of tokens and of "who am I" (docs/security.md). A token's secret appears in exactly one
answer: the one that created it."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from control_plane.domain.identity import ApiToken, Principal, Role
from edge_agent.protocol.messages import Name

MAX_TOKEN_LIFETIME_S = 10 * 365 * 24 * 3600


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name = Field(description="What the token is for, e.g. ci-deployer or builder-orin-01.")
    role: Role
    expires_in_s: int | None = Field(
        default=None, gt=0, le=MAX_TOKEN_LIFETIME_S, description="Lifetime in seconds; none: until revoked."
    )
    device_id: Name | None = Field(default=None, description="The device a `device` token belongs to.")


class TokenOut(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: str
    name: str
    role: Role
    device_id: str | None
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, token: ApiToken) -> TokenOut:
        return cls.model_validate(token)


class TokenCreatedOut(TokenOut):
    token: str = Field(description="The secret, shown this once: store it now.")


class WhoAmIOut(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)

    subject: str
    name: str
    role: Role
    device_id: str | None
    permissions: list[str]

    @classmethod
    def of(cls, principal: Principal, permissions: list[str]) -> WhoAmIOut:
        return cls(
            subject=principal.subject,
            name=principal.name,
            role=principal.role,
            device_id=principal.device_id,
            permissions=permissions,
        )
