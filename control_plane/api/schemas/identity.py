"""Public schemas of tokens and of "who am I" (docs/security.md). A token's secret appears in exactly one
answer: the one that created it."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from control_plane.api.schemas.base import Out
from control_plane.domain.identity import Role
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


class TokenOut(Out):
    id: str
    name: str
    role: Role
    device_id: str | None
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


# Read from an ApiToken `with_fields(token, token=secret)`: only the digest is kept.
class TokenCreatedOut(TokenOut):
    token: str = Field(description="The secret, shown this once: store it now.")


# Read from a Principal `with_fields(principal, permissions=...)`: what its role holds.
class WhoAmIOut(Out):
    subject: str
    name: str
    role: Role
    device_id: str | None
    permissions: list[str]
