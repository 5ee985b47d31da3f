"""Device enrollment: enrollment tokens, each device's key and latest request, the builds issued to each device
(what its reports may name), and the source of device events (the control plane's own are never trimmed).

Devices that exist already keep working: their issued builds are filled from their current desired state and
from every rollout that moved them (the build sent and the one it replaced).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("issued_builds", sa.JSON(), nullable=True))
    with op.batch_alter_table("device_events") as batch:
        batch.add_column(sa.Column("source", sa.String(length=16), nullable=False, server_default="device"))
    op.create_index("ix_device_events_source", "device_events", ["device_id", "source", "id"])
    op.create_table(
        "enrollment_tokens",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("max_uses", sa.Integer(), nullable=True),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("auto_approve", sa.Boolean(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("gpu_class", sa.String(length=128), nullable=True),
    )
    op.create_table(
        "device_enrollments",
        sa.Column("device_id", sa.String(length=128), primary_key=True),
        sa.Column("public_key", sa.String(length=64), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("artifact_token_id", sa.String(length=32), nullable=True),
        sa.Column("request_key", sa.String(length=64), nullable=True),
        sa.Column("request_token_id", sa.String(length=32), nullable=True),
        sa.Column("request_hardware", sa.JSON(), nullable=True),
        sa.Column("request_status", sa.String(length=16), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=256), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
    )
    op.create_index("ix_device_enrollments_status", "device_enrollments", ["request_status"])
    _fill_issued_builds()


def _fill_issued_builds() -> None:
    bind = op.get_bind()
    builds = {
        row.id: [row.model_name, row.version]
        for row in bind.execute(sa.text("SELECT id, model_name, version FROM builds"))
    }
    issued: dict[str, dict[str, Any]] = {}
    for row in bind.execute(sa.text("SELECT device_id, build_id, previous_build_id FROM rollout_devices")):
        mine = issued.setdefault(row.device_id, {})
        for build_id in (row.previous_build_id, row.build_id):
            if build_id in builds:
                mine[build_id] = builds[build_id]
    for row in bind.execute(sa.text("SELECT id, desired FROM devices WHERE desired IS NOT NULL")):
        desired = json.loads(row.desired) if isinstance(row.desired, str) else row.desired
        document = json.loads(desired["document"])
        mine = issued.setdefault(row.id, {})
        for model in document.get("models", []):
            mine[model["build_id"]] = [model["name"], model["version"]]
            fallback = model.get("fallback")
            if fallback:
                mine[fallback["build_id"]] = [model["name"], model["version"]]
    devices = {row.id for row in bind.execute(sa.text("SELECT id FROM devices"))}
    for device_id, mine in issued.items():
        if device_id in devices and mine:
            bind.execute(
                sa.text("UPDATE devices SET issued_builds = :issued WHERE id = :id"),
                {"issued": json.dumps(mine), "id": device_id},
            )


def downgrade() -> None:
    op.drop_index("ix_device_enrollments_status", table_name="device_enrollments")
    op.drop_table("device_enrollments")
    op.drop_table("enrollment_tokens")
    op.drop_index("ix_device_events_source", table_name="device_events")
    with op.batch_alter_table("device_events") as batch:
        batch.drop_column("source")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("issued_builds")
