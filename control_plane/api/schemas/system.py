"""Public schemas of the service itself: health, its signing key, the build-target catalog."""

from __future__ import annotations

from typing import Any

from control_plane.api.schemas.base import Out
from model_builds.catalog import TargetSpec


class HealthOut(Out):
    status: str
    mqtt_connected: bool


class SigningKeyOut(Out):
    algorithm: str
    key_id: str
    public_key: str


def target_out(spec: TargetSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json")
