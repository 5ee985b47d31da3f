"""Tunnel sessions as audited objects (docs/tunnels.md, "Sessions"): who reached which service of which device, when,
how many bytes each way and how it ended. A row is written when a session opens and updated once when it closes;
byte counts are kept in memory in between (never a write per chunk).

No foreign key to devices: a session's record outlives a forgotten device, as the audit log does. Byte counts are
BIGINT on PostgreSQL (a long session passes 2 GiB); SQLite's INTEGER is 64-bit already.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

INT64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "tunnel_sessions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("who", sa.String(128), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("service", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("request", sa.String(512), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("bytes_to_device", INT64, nullable=False),
        sa.Column("bytes_from_device", INT64, nullable=False),
        sa.Column("ended", sa.String(32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index("ix_tunnel_sessions_opened", "tunnel_sessions", ["opened_at", "id"])
    op.create_index("ix_tunnel_sessions_open", "tunnel_sessions", ["closed_at", "opened_at"])


def downgrade() -> None:
    op.drop_index("ix_tunnel_sessions_open", "tunnel_sessions")
    op.drop_index("ix_tunnel_sessions_opened", "tunnel_sessions")
    op.drop_table("tunnel_sessions")
