"""Incremental rollouts: each device's fallback build chosen once at create time, each rollout's device counts
per step and status (what `GET /v1/rollouts/{id}` shows without reading every device), and the index that finds
a device's rollouts.

Rollouts made before this migration get their counts on their next save; until then the API counts their tracks.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rollouts") as batch:
        batch.add_column(sa.Column("counts", sa.JSON(), nullable=True))
    with op.batch_alter_table("rollout_devices") as batch:
        batch.add_column(sa.Column("fallback_build_id", sa.String(length=32), nullable=True))
    op.create_index("ix_rollout_devices_device", "rollout_devices", ["device_id"])
    op.create_index("ix_rollouts_phase", "rollouts", ["phase"])


def downgrade() -> None:
    op.drop_index("ix_rollouts_phase", "rollouts")
    op.drop_index("ix_rollout_devices_device", "rollout_devices")
    with op.batch_alter_table("rollout_devices") as batch:
        batch.drop_column("fallback_build_id")
    with op.batch_alter_table("rollouts") as batch:
        batch.drop_column("counts")
