"""Public schema of an audit record (`GET /v1/audit`): every field the hash covers, and the hashes, so that a
client can recompute the chain itself (control_plane/domain/audit.py)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from control_plane.api.schemas.base import Out
from control_plane.domain.audit import AuditOutcome


class AuditRecordOut(Out):
    seq: int = Field(description="Position in the log: 1, 2, 3, ... without gaps.")
    at: datetime
    request_id: str = Field(description="The X-Request-ID of the answer.")
    subject: str = Field(description="Who: `token:<id>`, `oidc:<sub>`, or `anonymous`.")
    name: str | None
    role: str | None
    method: str
    route: str | None = Field(description="The route template, e.g. /v1/devices/{device_id}; null if none matched.")
    path: str
    status: int
    outcome: AuditOutcome
    detail: str | None = Field(description="The server's error detail for a status >= 400 (at most 500 chars).")
    prev_hash: str
    hash: str = Field(description="sha256 over the canonical JSON of prev_hash and the fields above.")
