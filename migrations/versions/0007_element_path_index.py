"""element path index: the element rows of one path (any tag, any depth) by index, not a scan

Revision ID: 0007_element_path_index
Revises: 0006_writer_deltas
Create Date: 2026-12-04 01:10:00

A search on a tag outside the hierarchy tables (QIDO-RS on any attribute, `indexer find`,
`tags --tag`) read every element row; with this index it reads the rows of the tag's paths
alone. A first run into an empty index drops it and builds it once at the end
(indexer/writer/path_index.py), which is faster than keeping it up to date row by row.
"""

from __future__ import annotations

from alembic import op

revision = "0007_element_path_index"
down_revision = "0006_writer_deltas"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_elements_path_id", "elements", ["path_id"])


def downgrade() -> None:
    op.drop_index("ix_elements_path_id", table_name="elements")
