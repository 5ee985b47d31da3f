"""Row <-> domain value conversion. SQLite hands back naive datetimes; everything stored is UTC."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from control_plane.adapters.db.tables import (
    BuildRow,
    DeviceRow,
    TrainingJobRow,
    VersionRow,
)
from control_plane.domain.fleet import DeliveryFailure, Device
from control_plane.domain.playbooks import AnsibleConnection
from control_plane.domain.registry import Build, BuildStatus, ModelVersion, TensorInfo
from control_plane.domain.training import TrainingJob, TrainingJobSpec, TrainingStatus
from edge_agent.protocol import HardwareFacts, PresenceStatus, ReportedState, SignedDesiredState, Telemetry


def utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)


def tensors_to_json(tensors: tuple[TensorInfo, ...]) -> list[dict[str, Any]]:
    return [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in tensors]


def tensors_from_json(data: list[dict[str, Any]]) -> tuple[TensorInfo, ...]:
    return tuple(TensorInfo(name=d["name"], shape=tuple(d["shape"]), dtype=d["dtype"]) for d in data)


def version_from_row(row: VersionRow) -> ModelVersion:
    return ModelVersion(
        model=row.model_name,
        version=row.version,
        created_at=utc(row.created_at),
        source_sha256=row.source_sha256,
        source_size=row.source_size,
        inputs=tensors_from_json(row.inputs),
        outputs=tensors_from_json(row.outputs),
        samples_sha256=row.samples_sha256,
        sample_count=row.sample_count,
        samples_synthesised=row.samples_synthesised,
        reference_outputs_computed=row.reference_outputs_computed,
        lineage=dict(row.lineage),
        metrics=dict(row.metrics),
        tolerances={str(k): dict(v) for k, v in (row.tolerances or {}).items()},
    )


def build_from_row(row: BuildRow) -> Build:
    return Build(
        id=row.id,
        model=row.model_name,
        version=row.version,
        target=row.target,
        precision=row.precision,
        artifact_kind=row.artifact_kind,
        status=BuildStatus(row.status),
        artifact_sha256=row.artifact_sha256,
        artifact_size=row.artifact_size,
        error=row.error,
        created_at=utc(row.created_at),
        manifest=dict(row.manifest),
        manifest_signature=row.manifest_signature,
        key=row.key,
        compute_capability=row.compute_capability,
        tensorrt_version=row.tensorrt_version,
        options=dict(row.options or {}),
        calibration_sha256=row.calibration_sha256,
        builder_id=row.builder_id,
        builder_subject=row.builder_subject,
        lease_expires_at=utc_or_none(row.lease_expires_at),
        progress=row.progress,
        message=row.message,
        parity=row.parity,
        reported_parity=row.reported_parity,
        latency=row.latency,
        hardware_key=row.hardware_key,
        started_at=utc_or_none(row.started_at),
        finished_at=utc_or_none(row.finished_at),
    )


def device_from_row(row: DeviceRow) -> Device:
    return Device(
        id=row.id,
        created_at=utc(row.created_at),
        gpu_class=row.gpu_class,
        labels={str(k): str(v) for k, v in row.labels.items()},
        hardware=HardwareFacts.model_validate(row.hardware) if row.hardware else None,
        reported=ReportedState.model_validate(row.reported) if row.reported else None,
        channel=row.channel,
        status=PresenceStatus(row.status) if row.status else None,
        last_seen=utc_or_none(row.last_seen),
        desired_generation=row.desired_generation,
        desired=SignedDesiredState.model_validate(row.desired) if row.desired else None,
        telemetry=Telemetry.model_validate(row.telemetry) if row.telemetry else None,
        ansible=ansible_from_json(row.ansible),
        delivery_failure=delivery_from_json(row.delivery),
        issued_builds=issued_from_json(row.issued_builds),
    )


def issued_from_json(data: dict[str, Any] | None) -> dict[str, tuple[str, int]]:
    return {str(build): (str(sent[0]), int(sent[1])) for build, sent in (data or {}).items()}


def issued_to_json(issued: Mapping[str, tuple[str, int]]) -> dict[str, Any]:
    return {build: [model, version] for build, (model, version) in issued.items()}


def ansible_to_json(connection: AnsibleConnection | None) -> dict[str, Any] | None:
    if connection is None:
        return None
    return {
        "host": connection.host,
        "port": connection.port,
        "user": connection.user,
        "connection": connection.connection,
        "python": connection.python,
    }


def ansible_from_json(data: dict[str, Any] | None) -> AnsibleConnection | None:
    if not data:
        return None
    return AnsibleConnection(
        host=data.get("host"),
        port=data.get("port"),
        user=data.get("user"),
        connection=str(data.get("connection") or "ssh"),
        python=data.get("python"),
    )


def delivery_to_json(failure: DeliveryFailure) -> dict[str, Any]:
    return {"generation": failure.generation, "reason": failure.reason, "at": utc(failure.at).isoformat()}


def delivery_from_json(data: dict[str, Any] | None) -> DeliveryFailure | None:
    if not data:
        return None
    return DeliveryFailure(
        generation=int(data["generation"]), reason=str(data["reason"]), at=utc(datetime.fromisoformat(data["at"]))
    )


def job_from_row(row: TrainingJobRow) -> TrainingJob:
    return TrainingJob(
        id=row.id,
        spec=TrainingJobSpec.model_validate(row.spec),
        status=TrainingStatus(row.status),
        created_at=utc(row.created_at),
        started_at=utc_or_none(row.started_at),
        finished_at=utc_or_none(row.finished_at),
        error=row.error,
        log_path=row.log_path,
        model=row.model_name,
        version=row.version,
    )
