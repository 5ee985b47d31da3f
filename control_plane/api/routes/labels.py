"""The label keys of the fleet, so that a selector naming a key no device carries can say so (and suggest one).

Read-only and bounded: one page of keys (`limit`, at most MAX_LIMIT), counted by the database from its label
index; it never reads devices, and never shows a label's values (a selector's value is the operator's business).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from control_plane.api.deps import FleetDep
from control_plane.api.schemas.labels import LabelKeyOut
from control_plane.domain.paging import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix="/v1/label-keys", tags=["devices"])


@router.get("")
def list_label_keys(
    fleet: FleetDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Keys per answer, by key.")] = DEFAULT_LIMIT,
) -> list[LabelKeyOut]:
    """The label keys devices carry, by key, each with its number of devices (the first `limit` keys)."""
    return [LabelKeyOut(key=key, devices=count) for key, count in fleet.label_keys(limit)]
