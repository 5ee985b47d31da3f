"""`GET /v1/audit`: the audit log, oldest first, with its hashes (admin only: permissions.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from control_plane.api.deps import AuditDep
from control_plane.api.schemas.audit import AuditRecordOut
from control_plane.domain.audit import MAX_PAGE
from control_plane.domain.bounds import INT64_MAX

router = APIRouter(tags=["audit"])


@router.get("/v1/audit")
def audit_log(
    audit: AuditDep,
    after: Annotated[
        int, Query(ge=0, le=INT64_MAX, description="Only records with a larger seq (page on with the last seq).")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="At most this many records.")] = 100,
) -> list[AuditRecordOut]:
    return [AuditRecordOut.model_validate(r) for r in audit.page(after, limit)]
