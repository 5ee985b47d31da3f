"""Staged rollouts: the rollout's spec and step state, per-device steps and previous builds, rollout events,
and a short per-model telemetry history per device.

Rollouts made before this migration become one-step (`all`) all-at-once rollouts; their phase `failed` becomes
`aborted` (nothing was rolled back then).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# PostgreSQL's INTEGER is 32-bit: byte counts and the ids of append-heavy tables are BIGINT there. SQLite's INTEGER
# is 64-bit already and a ROWID key must be spelled exactly INTEGER, so SQLite's schema is unchanged.
INT64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("rollouts") as batch:
        batch.add_column(sa.Column("spec", sa.JSON(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("step_index", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("steps", sa.JSON(), nullable=False, server_default='["all"]'))
        batch.add_column(sa.Column("step_started_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("baked_since", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("verdicts", sa.JSON(), nullable=False, server_default="[]"))
    with op.batch_alter_table("rollout_devices") as batch:
        batch.add_column(sa.Column("step", sa.String(length=32), nullable=False, server_default="all"))
        batch.add_column(sa.Column("published_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("previous_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("previous_build_id", sa.String(length=32), nullable=True))
    _convert_old_rollouts()

    op.create_table(
        "rollout_events",
        sa.Column("id", INT64, primary_key=True, autoincrement=True),
        sa.Column("rollout_id", sa.String(length=32), sa.ForeignKey("rollouts.id"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=True),
        sa.Column("step", sa.String(length=32), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
    )
    op.create_index("ix_rollout_events_rollout", "rollout_events", ["rollout_id", "id"])
    op.create_table(
        "device_telemetry",
        sa.Column("id", INT64, primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.String(length=128), sa.ForeignKey("devices.id"), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_s", sa.Float(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("p50_ms", sa.Float(), nullable=True),
        sa.Column("p99_ms", sa.Float(), nullable=True),
    )
    op.create_index("ix_device_telemetry_model", "device_telemetry", ["device_id", "model", "version", "id"])


def _convert_old_rollouts() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, model_name, version, selector, phase, updated_at FROM rollouts")).all()
    for rollout_id, model, version, selector, phase, updated_at in rows:
        spec = {
            "model": model,
            "version": version,
            "selector": json.loads(selector) if isinstance(selector, str) else selector,
            "strategy": {"type": "all-at-once"},
        }
        new_phase = "aborted" if phase == "failed" else phase
        bind.execute(
            sa.text(
                "UPDATE rollouts SET spec = :spec, phase = :phase, step_index = :index, step_started_at = :at"
                " WHERE id = :id"
            ),
            {
                "spec": json.dumps(spec),
                "phase": new_phase,
                "index": 0 if new_phase == "in_progress" else 1,
                "at": updated_at,
                "id": rollout_id,
            },
        )
        bind.execute(
            sa.text("UPDATE rollout_devices SET published_at = updated_at WHERE rollout_id = :id AND status != 'pending'"),
            {"id": rollout_id},
        )


def downgrade() -> None:
    op.drop_index("ix_device_telemetry_model", table_name="device_telemetry")
    op.drop_table("device_telemetry")
    op.drop_index("ix_rollout_events_rollout", table_name="rollout_events")
    op.drop_table("rollout_events")
    with op.batch_alter_table("rollout_devices") as batch:
        for name in ("previous_build_id", "previous_version", "published_at", "step"):
            batch.drop_column(name)
    with op.batch_alter_table("rollouts") as batch:
        for name in ("verdicts", "reason", "baked_since", "step_started_at", "steps", "step_index", "spec"):
            batch.drop_column(name)
