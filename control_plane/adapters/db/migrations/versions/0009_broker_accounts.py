"""Broker accounts: which devices hold broker access (the broker's dynamic-security clients follow this table).

No foreign key to devices: forgetting a device revokes its account and keeps the record of when.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "broker_accounts",
        sa.Column("device_id", sa.String(128), primary_key=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("issued_by", sa.String(256), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_broker_accounts_active", "broker_accounts", ["active"])


def downgrade() -> None:
    op.drop_index("ix_broker_accounts_active", "broker_accounts")
    op.drop_table("broker_accounts")
