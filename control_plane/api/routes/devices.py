"""The fleet as last reported: devices (filtered by selector, paged) and their events; enrollment and forgetting."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from control_plane.api.deps import DeviceAccessDep, EnrollmentDep, FleetDep, RolloutsDep
from control_plane.api.paging import link_next
from control_plane.api.schemas.devices import DeviceEventOut, DeviceOut, EnrollmentIn
from control_plane.domain.paging import DEFAULT_LIMIT, MAX_CURSOR, MAX_LIMIT

router = APIRouter(prefix="/v1/devices", tags=["devices"])


@router.get("")
def list_devices(
    request: Request,
    response: Response,
    fleet: FleetDep,
    selector: Annotated[str | None, Query(max_length=1000, description="k=v,k2=v2,gpu_class=C")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Devices per page.")] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None, Query(max_length=MAX_CURSOR, description="Where the page starts: from the previous page's Link.")
    ] = None,
) -> list[DeviceOut]:
    """One page of the devices the selector matches, by id (filtered by the database, decision 0013); the next
    page's URL comes in the `Link: <...>; rel="next"` header, absent on the last page."""
    page = fleet.page_devices(selector, cursor, limit)
    link_next(request, response, page.next_cursor)
    return [DeviceOut.model_validate(d) for d in page.items]


@router.get("/{device_id}")
def get_device(device_id: str, fleet: FleetDep) -> DeviceOut:
    return DeviceOut.model_validate(fleet.get_device(device_id))


@router.get("/{device_id}/events")
def list_events(
    device_id: str, fleet: FleetDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> list[DeviceEventOut]:
    return [DeviceEventOut.model_validate(e) for e in fleet.list_events(device_id, limit)]


@router.put("/{device_id}/enrollment")
def enroll(device_id: str, body: EnrollmentIn, fleet: FleetDep) -> DeviceOut:
    """Enroll a device (or update its enrollment): channel, labels, GPU class, hardware, Ansible connection."""
    view = fleet.enroll(
        device_id,
        channel=body.channel,
        labels=body.labels,
        gpu_class=body.gpu_class,
        hardware=body.hardware,
        ansible=body.ansible.to_domain() if body.ansible is not None else None,
    )
    return DeviceOut.model_validate(view)


@router.delete("/{device_id}", status_code=204)
def forget(
    device_id: str,
    access: DeviceAccessDep,
    enrollment: EnrollmentDep,
    fleet: FleetDep,
    rollouts: RolloutsDep,
    force: Annotated[
        bool, Query(description="Also while an unfinished rollout holds it: the rollout stops waiting for it.")
    ] = False,
) -> Response:
    """Forget a device with its events and telemetry, and revoke its broker client and device tokens; 409 while an
    unfinished rollout holds it, unless `force` (that rollout then counts it as failed, or not restored)."""
    if force:
        fleet.get_device(device_id)  # 404 before any rollout changes
        rollouts.forget_device(device_id)
    access.forget(device_id, released=force)
    enrollment.forget(device_id)  # its enrolled key: enrolling again takes a new enrollment
    return Response(status_code=204)
