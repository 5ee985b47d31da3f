"""Builder identity: a build's lease belongs to the authenticated builder that claimed it (`builder_subject`); the
builder's own report of parity is kept apart from the control plane's measurement (`reported_parity`); admins
register builders for the hardware whose TensorRT plans they may deliver (`builder_registrations`).

Builds running at the upgrade were claimed by builders nobody authenticated: they go back to the queue. The
`builders` table only remembers who was seen in the last minute, so it is recreated empty, keyed by identity and
label.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.add_column(sa.Column("builder_subject", sa.String(length=256), nullable=True))
        batch.add_column(sa.Column("reported_parity", sa.JSON(), nullable=True))
    builds = sa.table(
        "builds",
        sa.column("status", sa.String),
        sa.column("builder_id", sa.String),
        sa.column("lease_expires_at", sa.DateTime),
        sa.column("started_at", sa.DateTime),
        sa.column("progress", sa.Float),
        sa.column("message", sa.Text),
    )
    op.get_bind().execute(
        builds.update()
        .where(builds.c.status == "running")
        .values(
            status="queued",
            builder_id=None,
            lease_expires_at=None,
            started_at=None,
            progress=None,
            message="back in the queue: builders now authenticate (claimed before the upgrade)",
        )
    )

    op.drop_table("builders")
    op.create_table(
        "builders",
        sa.Column("id", sa.String(length=400), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=True),
        sa.Column("subject", sa.String(length=256), nullable=True),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "builder_registrations",
        sa.Column("subject", sa.String(length=256), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("compute_capability", sa.String(length=16), nullable=False),
        sa.Column("tensorrt", sa.String(length=32), nullable=False),
        sa.Column("gpu_class", sa.String(length=128), nullable=True),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subject"),
    )


def downgrade() -> None:
    builds = sa.table("builds", sa.column("status", sa.String), sa.column("error", sa.Text))
    # Older code knows no `cancelled`: such builds read as failed (a new request queues them again).
    op.get_bind().execute(
        builds.update().where(builds.c.status == "cancelled").values(status="failed", error="cancelled")
    )
    op.drop_table("builder_registrations")
    op.drop_table("builders")
    op.create_table(
        "builders",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("reported_parity")
        batch.drop_column("builder_subject")
