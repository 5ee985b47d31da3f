"""Builds become a persisted queue: kinds, keys, leases, progress, reports, logs, builders; per-model tolerances.

Existing builds keep their status and artifact; each gets the key `legacy-<id>` (they were built by the old
synchronous pipeline, whose key was not recorded), so a new request for the same version/target builds afresh
under the real key rather than guessing that the old bytes match it.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# PostgreSQL's INTEGER is 32-bit: byte counts and the ids of append-heavy tables are BIGINT there. SQLite's INTEGER
# is 64-bit already and a ROWID key must be spelled exactly INTEGER, so SQLite's schema is unchanged.
INT64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("tolerances", sa.JSON(), nullable=False, server_default="{}"))

    with op.batch_alter_table("builds") as batch:
        batch.add_column(sa.Column("key", sa.String(length=80), nullable=True))
        batch.add_column(sa.Column("compute_capability", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("tensorrt_version", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("options", sa.JSON(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("calibration_sha256", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("builder_id", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("progress", sa.Float(), nullable=True))
        batch.add_column(sa.Column("message", sa.Text(), nullable=True))
        batch.add_column(sa.Column("parity", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("latency", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("hardware_key", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True))

    builds = sa.table(
        "builds",
        sa.column("id", sa.String),
        sa.column("key", sa.String),
        sa.column("created_at", sa.DateTime),
        sa.column("finished_at", sa.DateTime),
        sa.column("manifest", sa.JSON),
        sa.column("parity", sa.JSON),
    )
    connection = op.get_bind()
    for row in connection.execute(sa.select(builds.c.id, builds.c.created_at, builds.c.manifest)).all():
        parity = (row.manifest or {}).get("parity") if isinstance(row.manifest, dict) else None
        connection.execute(
            builds.update()
            .where(builds.c.id == row.id)
            .values(key=f"legacy-{row.id}", finished_at=row.created_at, parity=parity)
        )

    with op.batch_alter_table("builds") as batch:
        batch.alter_column("key", existing_type=sa.String(length=80), nullable=False)
        batch.alter_column("status", existing_type=sa.String(length=16), type_=sa.String(length=24))
        batch.drop_constraint("uq_build_key", type_="unique")
        batch.create_unique_constraint("uq_builds_version_key", ["version_id", "key"])
        batch.create_index("ix_builds_status", ["status"])
        batch.create_index("ix_builds_version", ["model_name", "version"])

    op.create_table(
        "build_logs",
        sa.Column("id", INT64, autoincrement=True, nullable=False),
        sa.Column("build_id", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["build_id"], ["builds.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_build_logs_build", "build_logs", ["build_id", "id"])
    op.create_table(
        "builders",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("builders")
    op.drop_index("ix_build_logs_build", table_name="build_logs")
    op.drop_table("build_logs")
    with op.batch_alter_table("builds") as batch:
        batch.drop_index("ix_builds_version")
        batch.drop_index("ix_builds_status")
        batch.drop_constraint("uq_builds_version_key", type_="unique")
        for column in (
            "finished_at",
            "started_at",
            "hardware_key",
            "latency",
            "parity",
            "message",
            "progress",
            "lease_expires_at",
            "builder_id",
            "calibration_sha256",
            "options",
            "tensorrt_version",
            "compute_capability",
            "key",
        ):
            batch.drop_column(column)
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("tolerances")
