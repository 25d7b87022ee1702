"""report summaries (indexer/summaries/) and the indexes of `indexer stats` and `find`

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 15:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Tables and indexes are created only when absent: a development copy of 0001 was once
# generated while some of them were already in schema.py, and databases made with it must
# reach the same head as databases made with the clean 0001.

_INDEXES = [
    ("studies", "ix_studies_accession_number", ["accession_number"]),
    ("files", "ix_files_status_transfer_syntax_size", ["status", "transfer_syntax", "size"]),
    ("instances", "ix_instances_element_count", ["element_count"]),
    ("series", "ix_series_modality_study_ref", ["modality", "study_ref"]),
    ("series", "ix_series_manufacturer_model", ["manufacturer", "model"]),
]


def _has_table(name: str) -> bool:
    return sa.inspect(op.get_bind()).has_table(name)


def _has_index(table: str, name: str) -> bool:
    return any(ix["name"] == name for ix in sa.inspect(op.get_bind()).get_indexes(table))


def upgrade() -> None:
    if not _has_table("usage_groups"):
        op.create_table(
            "usage_groups",
            sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
            sa.Column("modality", sa.Text(), nullable=False),
            sa.Column("sop_class_uid", sa.Text(), nullable=False),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_groups")),
        )
    if not _has_table("tag_keys"):
        op.create_table(
            "tag_keys",
            sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
            sa.Column("key", sa.Text(), nullable=False),
            sa.Column("keywords", sa.Text(), nullable=False),
            sa.Column("tag", sa.BigInteger(), nullable=False),
            sa.Column("depth", sa.Integer(), nullable=False),
            sa.Column("name", sa.Text(), nullable=False),
            sa.Column("private_creator", sa.Text(), nullable=True),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_tag_keys")),
            sa.UniqueConstraint("key", name=op.f("uq_tag_keys_key")),
        )
    if not _has_table("path_keys"):
        op.create_table(
            "path_keys",
            sa.Column("key_id", sa.BigInteger(), autoincrement=False, nullable=False),
            sa.Column("path_id", sa.BigInteger(), autoincrement=False, nullable=False),
            sa.PrimaryKeyConstraint("key_id", "path_id", name=op.f("pk_path_keys")),
            sqlite_with_rowid=False,
        )
        with op.batch_alter_table("path_keys", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_path_keys_path_id"), ["path_id"], unique=False)
    if not _has_table("tag_usage"):
        op.create_table(
            "tag_usage",
            sa.Column("key_id", sa.BigInteger(), autoincrement=False, nullable=False),
            sa.Column("group_id", sa.BigInteger(), autoincrement=False, nullable=False),
            sa.Column("instances", sa.BigInteger(), nullable=False),
            sa.Column("occurrences", sa.BigInteger(), nullable=False),
            sa.Column("untracked", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("key_id", "group_id", name=op.f("pk_tag_usage")),
            sqlite_with_rowid=False,
        )
    if not _has_table("tag_values"):
        op.create_table(
            "tag_values",
            sa.Column("key_id", sa.BigInteger(), autoincrement=False, nullable=False),
            sa.Column("value", sa.Text(), nullable=False),
            sa.Column("group_id", sa.BigInteger(), autoincrement=False, nullable=False),
            sa.Column("instances", sa.BigInteger(), nullable=False),
            sa.Column("occurrences", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("key_id", "value", "group_id", name=op.f("pk_tag_values")),
            sqlite_with_rowid=False,
        )
    if not _has_table("instance_groups"):
        op.create_table(
            "instance_groups",
            sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
            sa.Column("modality", sa.Text(), nullable=True),
            sa.Column("sop_class_uid", sa.Text(), nullable=True),
            sa.Column("manufacturer", sa.Text(), nullable=True),
            sa.Column("model", sa.Text(), nullable=True),
            sa.Column("study_year", sa.String(length=4), nullable=True),
            sa.Column("in_hierarchy", sa.Boolean(), nullable=False),
            sa.Column("instances", sa.BigInteger(), nullable=False),
            sa.Column("elements", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_instance_groups")),
        )
    for table, name, columns in _INDEXES:
        if not _has_index(table, name):
            with op.batch_alter_table(table, schema=None) as batch_op:
                batch_op.create_index(name, columns, unique=False)
    # An index written before this revision: count what it holds (see indexer.summaries).
    bind = op.get_bind()
    if (
        bind.execute(sa.text("SELECT count(*) FROM tag_usage")).scalar_one() == 0
        and bind.execute(sa.text("SELECT count(*) FROM instances")).scalar_one() > 0
    ):
        from indexer import summaries

        summaries.rebuild(bind)


def downgrade() -> None:
    for table, name, _columns in reversed(_INDEXES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(name)
    op.drop_table("instance_groups")
    op.drop_table("tag_values")
    op.drop_table("tag_usage")
    with op.batch_alter_table("path_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_path_keys_path_id"))
    op.drop_table("path_keys")
    op.drop_table("tag_keys")
    op.drop_table("usage_groups")
