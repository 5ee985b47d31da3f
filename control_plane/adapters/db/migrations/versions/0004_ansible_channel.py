"""The Ansible channel: how Ansible reaches an enrolled device, the latest push that did not reach its agent,
playbook runs with their per-host results and events. Forgetting a device keeps the rollout history that names
it, so rollout_devices.device_id no longer references devices.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# PostgreSQL's INTEGER is 32-bit: byte counts and the ids of append-heavy tables are BIGINT there. SQLite's INTEGER
# is 64-bit already and a ROWID key must be spelled exactly INTEGER, so SQLite's schema is unchanged.
INT64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# SQLite keeps 0001's foreign keys unnamed; batch mode finds them by this convention.
_NAMING = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}
_DEVICE_FK = "fk_rollout_devices_device_id_devices"


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("ansible", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("delivery", sa.JSON(), nullable=True))
    _drop_device_foreign_key()

    op.create_table(
        "playbook_runs",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column("playbook", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("purpose", sa.String(length=128), nullable=True),
        sa.Column("selector", sa.Text(), nullable=True),
        sa.Column("hosts", sa.JSON(), nullable=False),
        sa.Column("extra_vars", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rc", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index("ix_playbook_runs_status", "playbook_runs", ["status"])
    op.create_index("ix_playbook_runs_created", "playbook_runs", ["created_at"])
    op.create_table(
        "playbook_run_events",
        sa.Column("id", INT64, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(length=32), sa.ForeignKey("playbook_runs.id"), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=128), nullable=True),
        sa.Column("task", sa.Text(), nullable=True),
        sa.Column("changed", sa.Boolean(), nullable=False),
        sa.Column("failed", sa.Boolean(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
    )
    op.create_index("ix_playbook_run_events_run", "playbook_run_events", ["run_id", "id"])


def _drop_device_foreign_key() -> None:
    inspector = sa.inspect(op.get_bind())
    names = [
        fk.get("name")
        for fk in inspector.get_foreign_keys("rollout_devices")
        if fk["referred_table"] == "devices" and fk["constrained_columns"] == ["device_id"]
    ]
    if not names:
        return
    name = names[0] or _DEVICE_FK
    with op.batch_alter_table("rollout_devices", naming_convention=_NAMING) as batch:
        batch.drop_constraint(name, type_="foreignkey")


def downgrade() -> None:
    op.drop_index("ix_playbook_run_events_run", table_name="playbook_run_events")
    op.drop_table("playbook_run_events")
    op.drop_index("ix_playbook_runs_created", table_name="playbook_runs")
    op.drop_index("ix_playbook_runs_status", table_name="playbook_runs")
    op.drop_table("playbook_runs")
    with op.batch_alter_table("rollout_devices") as batch:
        batch.create_foreign_key(_DEVICE_FK, "devices", ["device_id"], ["id"])
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("delivery")
        batch.drop_column("ansible")
