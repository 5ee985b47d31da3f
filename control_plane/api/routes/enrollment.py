"""Enrollment: tokens (operators), a device asking for its identity (`POST /v1/enroll`, authenticated by an
enrollment token or the device's own token, before its small body is read), approval and denial, labels."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse

from control_plane.api.deps import EnrollmentDep, FleetDep, PrincipalDep
from control_plane.api.schemas.base import with_fields
from control_plane.api.schemas.devices import DeviceOut
from control_plane.api.schemas.enrollment import (
    DenyIn,
    EnrollmentOut,
    EnrollmentTokenCreatedOut,
    EnrollmentTokenIn,
    EnrollmentTokenOut,
    LabelsIn,
    RefusalOut,
)
from edge_agent.protocol.enrollment import (
    ACCEPTS_TUNNEL,
    ENROLL_ACCEPTS_HEADER,
    ENROLL_PATH,
    EnrollAnswer,
    EnrollmentStatus,
    EnrollRequest,
)

router = APIRouter(tags=["enrollment"])

_STATUS_CODES = {EnrollmentStatus.APPROVED: 200, EnrollmentStatus.PENDING: 202, EnrollmentStatus.DENIED: 403}


@router.post("/v1/enrollment-tokens", status_code=201)
def create_token(
    body: EnrollmentTokenIn, principal: PrincipalDep, enrollment: EnrollmentDep
) -> EnrollmentTokenCreatedOut:
    """A new enrollment token; its secret is in this answer only."""
    expires_at = enrollment.now() + timedelta(seconds=body.expires_in_s) if body.expires_in_s else None
    token, secret = enrollment.create_token(
        body.name,
        principal.subject,
        expires_at=expires_at,
        max_uses=body.max_uses,
        labels=body.labels,
        channel=body.channel,
        gpu_class=body.gpu_class,
        auto_approve=body.auto_approve,
    )
    return EnrollmentTokenCreatedOut.model_validate(with_fields(token, token=secret))


@router.get("/v1/enrollment-tokens")
def list_tokens(enrollment: EnrollmentDep) -> list[EnrollmentTokenOut]:
    return [EnrollmentTokenOut.model_validate(t) for t in enrollment.list_tokens()]


@router.post("/v1/enrollment-tokens/{token_id}/revoke")
def revoke_token(token_id: str, enrollment: EnrollmentDep) -> EnrollmentTokenOut:
    """No new enrollment with it from now on, and its pending requests are refused."""
    return EnrollmentTokenOut.model_validate(enrollment.revoke_token(token_id))


@router.post(
    ENROLL_PATH,
    responses={
        202: {"model": EnrollAnswer, "description": "Pending"},
        # Denied (an EnrollAnswer), or a credential that may not enroll (a refusal's detail).
        403: {"model": EnrollAnswer | RefusalOut, "description": "Denied, or not an enrollment credential"},
    },
)
def enroll(
    body: EnrollRequest,
    principal: PrincipalDep,
    enrollment: EnrollmentDep,
    accepts: Annotated[
        str | None,
        Header(
            alias=ENROLL_ACCEPTS_HEADER,
            max_length=256,
            description=f"'{ACCEPTS_TUNNEL}': the identity may carry the tunnel gateway and its host key.",
        ),
    ] = None,
) -> JSONResponse:
    """A device asks for its identity: 200 with it, 202 while an operator has not decided, 403 when denied."""
    with_tunnel = ACCEPTS_TUNNEL in {part.strip() for part in (accepts or "").split(",")}
    answer = enrollment.enroll(principal, body, with_tunnel)
    return JSONResponse(answer.model_dump(mode="json"), status_code=_STATUS_CODES[answer.status])


@router.get("/v1/enrollments")
def list_enrollments(
    enrollment: EnrollmentDep,
    status: Annotated[EnrollmentStatus | None, Query(description="Only these (e.g. pending).")] = None,
) -> list[EnrollmentOut]:
    names = enrollment.token_names()
    return [EnrollmentOut.of(e, names) for e in enrollment.list_enrollments(status)]


@router.post("/v1/devices/{device_id}/approve")
def approve(device_id: str, principal: PrincipalDep, enrollment: EnrollmentDep) -> EnrollmentOut:
    """Approve a pending request: its key becomes the device's identity (the device picks it up when it asks)."""
    return EnrollmentOut.of(enrollment.approve(device_id, principal), enrollment.token_names())


@router.post("/v1/devices/{device_id}/deny")
def deny(device_id: str, body: DenyIn, principal: PrincipalDep, enrollment: EnrollmentDep) -> EnrollmentOut:
    """Deny a pending request: the device is told and stops asking."""
    return EnrollmentOut.of(enrollment.deny(device_id, principal, body.reason), enrollment.token_names())


@router.put("/v1/devices/{device_id}/labels")
def set_labels(device_id: str, body: LabelsIn, principal: PrincipalDep, fleet: FleetDep) -> DeviceOut:
    """Set all of a device's labels: they decide which selectors match it (a device's reports never do)."""
    return DeviceOut.model_validate(fleet.set_labels(device_id, body.labels, principal.name))
