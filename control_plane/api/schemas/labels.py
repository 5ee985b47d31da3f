"""The label keys the fleet carries (`GET /v1/label-keys`): what a selector can name."""

from __future__ import annotations

from pydantic import Field

from control_plane.api.schemas.base import Out


class LabelKeyOut(Out):
    key: str
    devices: int = Field(description="How many devices carry a label with this key.")
