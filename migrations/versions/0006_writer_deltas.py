"""writer deltas: counter changes of concurrent PostgreSQL writers, merged by one merger

Revision ID: 0006_writer_deltas
Revises: 0005_numbers_and_views
Create Date: 2026-12-03 15:10:00
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006_writer_deltas"
down_revision = "0005_numbers_and_views"
branch_labels = None
depends_on = None


def _create_deltas(name: str, *columns: sa.Column[Any]) -> None:
    """A deltas table: a delta id of its own (the primary key), then `columns`."""
    op.create_table(
        name,
        sa.Column("delta_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        *columns,
        sa.PrimaryKeyConstraint("delta_id", name=f"pk_{name}"),
    )


def upgrade() -> None:
    _create_deltas(
        "tag_usage_deltas",
        sa.Column("key_id", sa.BigInteger(), nullable=False),
        sa.Column("group_id", sa.BigInteger(), nullable=False),
        sa.Column("instances", sa.BigInteger(), nullable=False),
        sa.Column("occurrences", sa.BigInteger(), nullable=False),
        sa.Column("untracked", sa.BigInteger(), nullable=False),
    )
    _create_deltas(
        "tag_values_deltas",
        sa.Column("key_id", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("group_id", sa.BigInteger(), nullable=False),
        sa.Column("instances", sa.BigInteger(), nullable=False),
        sa.Column("occurrences", sa.BigInteger(), nullable=False),
    )
    _create_deltas(
        "instance_groups_deltas",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("modality", sa.Text()),
        sa.Column("sop_class_uid", sa.Text()),
        sa.Column("manufacturer", sa.Text()),
        sa.Column("model", sa.Text()),
        sa.Column("study_year", sa.String(4)),
        sa.Column("in_hierarchy", sa.Boolean(), nullable=False),
        sa.Column("instances", sa.BigInteger(), nullable=False),
        sa.Column("elements", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    for table in ("instance_groups_deltas", "tag_values_deltas", "tag_usage_deltas"):
        op.drop_table(table)
