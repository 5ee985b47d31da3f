"""Selectors evaluated in SQL: each device's labels as rows of `device_labels` (primary key (device_id, key), an
index (key, value, device_id)) and an index on `devices.gpu_class`, so that a page of `GET /v1/devices?selector=...`
and the devices a rollout selects are found by index, not by decoding every device's labels (decision 0013).

`devices.labels` stays the record the API shows; `device_labels` is kept in step with it in the same transaction
(control_plane/adapters/db/fleet_repository.py). Devices that exist already get their rows here.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

FILL_CHUNK = 1000  # devices read and label rows written per statement while filling

_devices = sa.table("devices", sa.column("id", sa.String()), sa.column("labels", sa.JSON()))
_labels = sa.table(
    "device_labels", sa.column("device_id", sa.String()), sa.column("key", sa.String()), sa.column("value", sa.String())
)


def upgrade() -> None:
    op.create_table(
        "device_labels",
        sa.Column("device_id", sa.String(length=128), sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "key"),
    )
    op.create_index("ix_device_labels_key_value", "device_labels", ["key", "value", "device_id"])
    op.create_index("ix_devices_gpu_class", "devices", ["gpu_class", "id"])
    _fill_labels()


def _fill_labels() -> None:
    """One row per label of every existing device, read by id in chunks (a fleet never sits in memory whole)."""
    bind = op.get_bind()
    after = ""
    while True:
        stmt = sa.select(_devices.c.id, _devices.c.labels).where(_devices.c.id > after)
        rows = bind.execute(stmt.order_by(_devices.c.id).limit(FILL_CHUNK)).all()
        if not rows:
            return
        values = [
            {"device_id": row.id, "key": str(key), "value": str(value)}
            for row in rows
            for key, value in _decoded(row.labels).items()
        ]
        if values:
            bind.execute(_labels.insert(), values)
        after = rows[-1].id


def _decoded(labels: Any) -> dict[str, Any]:
    decoded = json.loads(labels) if isinstance(labels, str) else labels
    return decoded if isinstance(decoded, dict) else {}


def downgrade() -> None:
    op.drop_index("ix_devices_gpu_class", "devices")
    op.drop_index("ix_device_labels_key_value", "device_labels")
    op.drop_table("device_labels")
