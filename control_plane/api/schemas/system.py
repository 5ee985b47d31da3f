"""Public schemas of the service itself: health and status, its signing key, the build-target catalog."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from control_plane.api.schemas.base import Out
from model_builds.catalog import TargetSpec


class HealthOut(Out):
    """`ok`, or `degraded` (answered with 503) while the broker link is down: which broker, since when, and why."""

    status: str
    mqtt_connected: bool
    broker: str | None = None
    since: datetime | None = None
    reason: str | None = None


class IngestOut(Out):
    """The queue between the broker link and the database (docs/operations.md, "Broker limits at fleet size")."""

    received: int
    queued: int
    queued_bytes: int
    high_water: int
    capacity: int
    dropped: int
    batches: int
    applied: int
    mean_batch: float
    last_drop_at: datetime | None
    resyncs: int
    resync_pending: int


class StatusOut(Out):
    status: str
    mqtt_connected: bool
    mqtt_protocol: str
    ingest: IngestOut


class SigningKeyOut(Out):
    algorithm: str
    key_id: str
    public_key: str


def target_out(spec: TargetSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json")
