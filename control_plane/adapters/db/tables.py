"""ORM tables (SQLAlchemy 2 typed mappings). The schema itself is created by the Alembic migrations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite's INTEGER is 64-bit already (and must stay exactly INTEGER for a ROWID key); PostgreSQL's is 32-bit, too
# small for a file's size (max_upload_bytes is 2 GiB) or for the ids of tables that grow with every device message.
INT64 = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {
        dict[str, Any]: JSON,
        list[dict[str, Any]]: JSON,
        list[str]: JSON,
        datetime: DateTime(timezone=True),
    }


class ModelRow(Base):
    __tablename__ = "models"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime]


class VersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_name", "version", name="uq_model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(128), ForeignKey("models.name"))
    version: Mapped[int]
    created_at: Mapped[datetime]
    source_sha256: Mapped[str] = mapped_column(String(64))
    source_size: Mapped[int] = mapped_column(INT64)
    inputs: Mapped[list[dict[str, Any]]]
    outputs: Mapped[list[dict[str, Any]]]
    samples_sha256: Mapped[str] = mapped_column(String(64))
    sample_count: Mapped[int]
    samples_synthesised: Mapped[bool]
    reference_outputs_computed: Mapped[bool]
    lineage: Mapped[dict[str, Any]]
    metrics: Mapped[dict[str, Any]]
    tolerances: Mapped[dict[str, Any]]


class BuildRow(Base):
    __tablename__ = "builds"
    __table_args__ = (
        UniqueConstraint("version_id", "key", name="uq_builds_version_key"),
        Index("ix_builds_status", "status"),
        Index("ix_builds_version", "model_name", "version"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    model_name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int]
    target: Mapped[str] = mapped_column(String(128))
    precision: Mapped[str] = mapped_column(String(16))
    artifact_kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(24))
    artifact_sha256: Mapped[str | None] = mapped_column(String(64))
    artifact_size: Mapped[int | None] = mapped_column(INT64)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    manifest: Mapped[dict[str, Any]]
    manifest_signature: Mapped[str | None] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(80))
    compute_capability: Mapped[str | None] = mapped_column(String(16))
    tensorrt_version: Mapped[str | None] = mapped_column(String(32))
    options: Mapped[dict[str, Any]]
    calibration_sha256: Mapped[str | None] = mapped_column(String(64))
    builder_id: Mapped[str | None] = mapped_column(String(128))
    builder_subject: Mapped[str | None] = mapped_column(String(256))
    lease_expires_at: Mapped[datetime | None]
    progress: Mapped[float | None]
    message: Mapped[str | None] = mapped_column(Text)
    parity: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    reported_parity: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    latency: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    hardware_key: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class BuildLogRow(Base):
    __tablename__ = "build_logs"
    __table_args__ = (Index("ix_build_logs_build", "build_id", "id"),)

    id: Mapped[int] = mapped_column(INT64, primary_key=True, autoincrement=True)
    build_id: Mapped[str] = mapped_column(String(32), ForeignKey("builds.id"))
    at: Mapped[datetime]
    message: Mapped[str] = mapped_column(Text)


class BuilderRow(Base):
    """A builder as last seen, keyed by (identity, label): one identity's label never overwrites another's."""

    __tablename__ = "builders"

    id: Mapped[str] = mapped_column(String(400), primary_key=True)
    label: Mapped[str | None] = mapped_column(String(128))
    subject: Mapped[str | None] = mapped_column(String(256))
    hostname: Mapped[str] = mapped_column(String(255))
    info: Mapped[dict[str, Any]]
    last_seen: Mapped[datetime]


class BuilderRegistrationRow(Base):
    """An administrator's registration of a builder identity for the hardware whose TensorRT plans it may deliver."""

    __tablename__ = "builder_registrations"

    subject: Mapped[str] = mapped_column(String(256), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    compute_capability: Mapped[str] = mapped_column(String(16))
    tensorrt: Mapped[str] = mapped_column(String(32))
    gpu_class: Mapped[str | None] = mapped_column(String(128))
    created_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime]


class DeviceRow(Base):
    __tablename__ = "devices"
    __table_args__ = (Index("ix_devices_gpu_class", "gpu_class", "id"),)  # 0011: selectors by GPU class, paged by id

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime]
    gpu_class: Mapped[str | None] = mapped_column(String(128))
    labels: Mapped[dict[str, Any]]
    hardware: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    reported: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str | None] = mapped_column(String(16))
    last_seen: Mapped[datetime | None]
    desired_generation: Mapped[int]
    desired: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    telemetry: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # 0004: how Ansible reaches the device (enrollment), and the latest push that did not reach its agent.
    ansible: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    delivery: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # 0008: builds sent to the device ({build id: [model, version]}, oldest first): what its reports may name.
    issued_builds: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class DeviceLabelRow(Base):
    """0011: one label of a device, so that a selector's `k=v` is found by index (decision 0013). Kept in step with
    `DeviceRow.labels` (what the API shows) in the same transaction by the fleet repository."""

    __tablename__ = "device_labels"
    __table_args__ = (Index("ix_device_labels_key_value", "key", "value", "device_id"),)

    device_id: Mapped[str] = mapped_column(String(128), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class EventRow(Base):
    __tablename__ = "device_events"
    __table_args__ = (
        Index("ix_device_events_device", "device_id", "id"),
        Index("ix_device_events_source", "device_id", "source", "id"),
    )

    id: Mapped[int] = mapped_column(INT64, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(128), ForeignKey("devices.id"))
    generation: Mapped[int]
    step: Mapped[str] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(128))
    version: Mapped[int | None]
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime]
    # 0008: "device" (trimmed to the newest device_events_kept) or "control-plane" (never trimmed).
    source: Mapped[str] = mapped_column(String(16), default="device")


class RolloutRow(Base):
    __tablename__ = "rollouts"
    __table_args__ = (Index("ix_rollouts_phase", "phase"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int]
    selector: Mapped[dict[str, Any]]
    strategy: Mapped[str] = mapped_column(String(32))
    phase: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # 0003: the staged rollout's state, enough for a restarted control plane to continue it.
    spec: Mapped[dict[str, Any]]
    step_index: Mapped[int]
    steps: Mapped[list[str]] = mapped_column(JSON)
    step_started_at: Mapped[datetime | None]
    baked_since: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(Text)
    verdicts: Mapped[list[dict[str, Any]]]
    # 0010: {step: {status: devices}}, kept by every save (None: written before 0010, counted from the tracks).
    counts: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class RolloutDeviceRow(Base):
    __tablename__ = "rollout_devices"
    __table_args__ = (Index("ix_rollout_devices_device", "device_id"),)

    rollout_id: Mapped[str] = mapped_column(String(32), ForeignKey("rollouts.id"), primary_key=True)
    # No foreign key to devices since 0004: a forgotten device's rollout history stays.
    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    target: Mapped[str] = mapped_column(String(128))
    build_id: Mapped[str] = mapped_column(String(32), ForeignKey("builds.id"))
    generation: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime]
    step: Mapped[str] = mapped_column(String(32))
    published_at: Mapped[datetime | None]
    previous_version: Mapped[int | None]
    previous_build_id: Mapped[str | None] = mapped_column(String(32))
    # 0010: chosen with build_id when the rollout was created.
    fallback_build_id: Mapped[str | None] = mapped_column(String(32))


class RolloutEventRow(Base):
    __tablename__ = "rollout_events"
    __table_args__ = (Index("ix_rollout_events_rollout", "rollout_id", "id"),)

    id: Mapped[int] = mapped_column(INT64, primary_key=True, autoincrement=True)
    rollout_id: Mapped[str] = mapped_column(String(32), ForeignKey("rollouts.id"))
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(24))
    device_id: Mapped[str | None] = mapped_column(String(128))
    step: Mapped[str | None] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]]


class TelemetryRow(Base):
    """One telemetry window of one model version on one device (a short history is kept)."""

    __tablename__ = "device_telemetry"
    __table_args__ = (Index("ix_device_telemetry_model", "device_id", "model", "version", "id"),)

    id: Mapped[int] = mapped_column(INT64, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(128), ForeignKey("devices.id"))
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[int]
    at: Mapped[datetime]
    window_s: Mapped[float]
    requests: Mapped[int]
    errors: Mapped[int]
    p50_ms: Mapped[float | None]
    p99_ms: Mapped[float | None]


class TrainingJobRow(Base):
    __tablename__ = "training_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    spec: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    log_path: Mapped[str] = mapped_column(Text)
    model_name: Mapped[str | None] = mapped_column(String(128))
    version: Mapped[int | None]


class PlaybookRunRow(Base):
    __tablename__ = "playbook_runs"
    __table_args__ = (Index("ix_playbook_runs_status", "status"), Index("ix_playbook_runs_created", "created_at"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    playbook: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    purpose: Mapped[str | None] = mapped_column(String(128))
    selector: Mapped[str | None] = mapped_column(Text)
    hosts: Mapped[list[dict[str, Any]]]
    extra_vars: Mapped[dict[str, Any]]  # redacted
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    rc: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)


class PlaybookRunEventRow(Base):
    __tablename__ = "playbook_run_events"
    __table_args__ = (Index("ix_playbook_run_events_run", "run_id", "id"),)

    id: Mapped[int] = mapped_column(INT64, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(32), ForeignKey("playbook_runs.id"))
    seq: Mapped[int]
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(128))
    task: Mapped[str | None] = mapped_column(Text)
    changed: Mapped[bool]
    failed: Mapped[bool]
    message: Mapped[str] = mapped_column(Text)


class ApiTokenRow(Base):
    """A bearer token: only the sha256 of the secret is kept (docs/security.md)."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    device_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(256))
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(nullable=True)


class AuditRow(Base):
    """One audit record (control_plane/domain/audit.py). Append-only: triggers made by migration 0007 refuse
    UPDATE and DELETE. `seq` is assigned by the writer (last + 1), never by the database, so two writers that
    read the same last record collide on the primary key instead of forking the chain."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    request_id: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(256))
    name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    method: Mapped[str] = mapped_column(String(16))
    route: Mapped[str | None] = mapped_column(String(512), nullable=True)
    path: Mapped[str] = mapped_column(String(512))
    status: Mapped[int]
    outcome: Mapped[str] = mapped_column(String(8))
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class EnrollmentTokenRow(Base):
    """An enrollment token (migration 0008): only the sha256 of the secret is kept."""

    __tablename__ = "enrollment_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(256))
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    max_uses: Mapped[int | None] = mapped_column(nullable=True)
    uses: Mapped[int]
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    auto_approve: Mapped[bool]
    labels: Mapped[dict[str, Any]]
    channel: Mapped[str | None] = mapped_column(String(16), nullable=True)
    gpu_class: Mapped[str | None] = mapped_column(String(128), nullable=True)


class DeviceEnrollmentRow(Base):
    """A device's enrolled key and its latest request (migration 0008). No foreign key to devices: a pending
    device has no device row yet."""

    __tablename__ = "device_enrollments"
    __table_args__ = (Index("ix_device_enrollments_status", "request_status"),)

    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    public_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    approved_at: Mapped[datetime | None] = mapped_column(nullable=True)
    artifact_token_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    request_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_token_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    request_hardware: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    request_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    requested_at: Mapped[datetime | None] = mapped_column(nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(256), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class BrokerAccountRow(Base):
    """A device's broker access (migration 0009): the broker's dynamic-security clients follow the active rows."""

    __tablename__ = "broker_accounts"
    __table_args__ = (Index("ix_broker_accounts_active", "active"),)

    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    active: Mapped[bool]
    issued_at: Mapped[datetime | None] = mapped_column(nullable=True)
    issued_by: Mapped[str | None] = mapped_column(String(256), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class TunnelSessionRow(Base):
    """A tunnel session (migration 0012, control_plane/domain/tunnel_sessions.py): written when it opens and when it
    closes, never per byte. No foreign key to devices: the record outlives a forgotten device, as the audit log does."""

    __tablename__ = "tunnel_sessions"
    __table_args__ = (
        Index("ix_tunnel_sessions_opened", "opened_at", "id"),
        Index("ix_tunnel_sessions_open", "closed_at", "opened_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    subject: Mapped[str] = mapped_column(String(256))
    who: Mapped[str] = mapped_column(String(128))
    device_id: Mapped[str] = mapped_column(String(128))
    service: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(8))
    request: Mapped[str | None] = mapped_column(String(512), nullable=True)
    opened_at: Mapped[datetime]
    closed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    bytes_to_device: Mapped[int] = mapped_column(INT64)
    bytes_from_device: Mapped[int] = mapped_column(INT64)
    ended: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
