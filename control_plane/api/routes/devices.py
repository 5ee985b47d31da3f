"""The fleet as last reported: devices (filtered by selector) and their events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from control_plane.api.deps import FleetDep
from control_plane.api.schemas import DeviceEventOut, DeviceOut

router = APIRouter(prefix="/v1/devices", tags=["devices"])


@router.get("")
def list_devices(
    fleet: FleetDep,
    selector: Annotated[str | None, Query(max_length=1000, description="k=v,k2=v2,gpu_class=C")] = None,
) -> list[DeviceOut]:
    return [DeviceOut.of(d) for d in fleet.list_devices(selector)]


@router.get("/{device_id}")
def get_device(device_id: str, fleet: FleetDep) -> DeviceOut:
    return DeviceOut.of(fleet.get_device(device_id))


@router.get("/{device_id}/events")
def list_events(
    device_id: str, fleet: FleetDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> list[DeviceEventOut]:
    return [DeviceEventOut.of(e) for e in fleet.list_events(device_id, limit)]
