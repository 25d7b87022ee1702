"""search indexes: element rows by path (any tag, any depth), instances by study date and by
hierarchy problem

Revision ID: 0007_search_indexes
Revises: 0006_writer_deltas
Create Date: 2026-12-04 01:10:00

A search on a tag outside the hierarchy tables (QIDO-RS on any attribute, `indexer find`,
`tags --tag`) read every element row; with ix_elements_path_id it reads the rows of the
tag's paths alone. A first run into an empty index drops that index and builds it once at
the end (indexer/writer/path_index.py), which is faster than keeping it up to date row by
row. StudyDate searches read the instance rows' own study date by index, and a narrowed
search (PatientID, AccessionNumber) finds the few flagged instances by a partial index.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_search_indexes"
down_revision = "0006_writer_deltas"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_elements_path_id", "elements", ["path_id"])
    op.create_index("ix_instances_study_date", "instances", ["study_date"])
    flagged = sa.text("hierarchy_problem IS NOT NULL")
    op.create_index(
        "ix_instances_hierarchy_problem",
        "instances",
        ["hierarchy_problem"],
        sqlite_where=flagged,
        postgresql_where=flagged,
    )


def downgrade() -> None:
    op.drop_index("ix_instances_hierarchy_problem", table_name="instances")
    op.drop_index("ix_instances_study_date", table_name="instances")
    op.drop_index("ix_elements_path_id", table_name="elements")
