"""numbers and views: series_number and instance_number as integers; views for other readers

Revision ID: 0005_numbers_and_views
Revises: 0004_hierarchy
Create Date: 2026-12-03 15:00:00

`series.series_number` and `instances.instance_number` become INTEGER columns (they sorted
1, 10, 11, 2 as text). A stored value keeps its number when it is one plain integer that
fits 32 bits, surrounding spaces and a sign allowed (" 7 ", "+7", "007" give 7), as the
writer does (rows.NUMBER_ATTRIBUTES); anything else ("1.0", "abc", "1\\2") becomes NULL.
The files' own text stays in their element rows.

Three views, the same on SQLite and PostgreSQL, for datasette, DuckDB and notebooks:
element_details (element rows with their file, sequence path, tag, keyword and VR),
instance_details (one row per instance with its patient, study and series) and
tag_usage_details (tag usage with the key's keywords, tag and usage group). Tags are
written `(0029,1010)`. DuckDB's SQLite scanner reads these views, while it cannot count the
WITHOUT ROWID tables behind them (it asks for a ROWID).

A later migration that rebuilds `elements`, `paths`, `files`, `instances`, `series`,
`studies`, `patients`, `tag_usage`, `tag_keys` or `usage_groups` on SQLite (batch mode)
drops these views first and creates them again after: SQLite refuses to rename a table
that a view names.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005_numbers_and_views"
down_revision = "0004_hierarchy"
branch_labels = None
depends_on = None

_NUMBER_COLUMNS = (("series", "series_number"), ("instances", "instance_number"))


def _tag_text(column: str, dialect: str) -> str:
    """SQL for the tag in `column` (an integer 0xGGGGEEEE) written `(GGGG,EEEE)`."""
    if dialect == "sqlite":
        return f"printf('(%04X,%04X)', {column} >> 16, {column} & 65535)"
    return (
        f"'(' || lpad(upper(to_hex({column} >> 16)), 4, '0') || ',' "
        f"|| lpad(upper(to_hex({column} & 65535)), 4, '0') || ')'"
    )


def _views(dialect: str) -> dict[str, str]:
    return {
        "element_details": f"""
SELECT e.file_id, e.ordinal, f.path AS file_path, p.path, p.location,
       {_tag_text("p.tag", dialect)} AS tag, p.keyword, p.name, p.private_creator, p.depth,
       e.vr, e.vm, e.length, e.value, e.number, e.flags
FROM elements e
JOIN files f ON f.id = e.file_id
LEFT JOIN paths p ON p.id = e.path_id""",
        "instance_details": """
SELECT i.file_id, f.path, f.status AS file_status,
       st.patient_ref, pa.patient_id, pa.issuer, pa.patient_name, pa.birth_date, pa.sex,
       se.study_ref, st.study_uid, st.study_id, st.accession_number, st.study_date,
       st.study_time, st.description AS study_description,
       i.series_ref, se.series_uid, se.series_number, se.description AS series_description,
       se.body_part, se.series_date,
       i.sop_instance_uid, i.sop_class_uid, i.modality, i.instance_number, i.content_date,
       i.rows, i.columns, i.frames, i.manufacturer, i.model, i.element_count,
       i.hierarchy_problem
FROM instances i
JOIN files f ON f.id = i.file_id
LEFT JOIN series se ON se.id = i.series_ref
LEFT JOIN studies st ON st.id = se.study_ref
LEFT JOIN patients pa ON pa.id = st.patient_ref""",
        "tag_usage_details": f"""
SELECT u.key_id, u.group_id, k.key, k.keywords, {_tag_text("k.tag", dialect)} AS tag,
       k.depth, k.name, k.private_creator, g.modality, g.sop_class_uid,
       u.instances, u.occurrences, u.untracked
FROM tag_usage u
JOIN tag_keys k ON k.id = u.key_id
JOIN usage_groups g ON g.id = u.group_id""",
    }


def _plain_integer(column: str, dialect: str) -> str:
    """SQL: the integer in text `column` when it is one plain integer of 32 bits, else NULL."""
    if dialect == "sqlite":
        # trim() takes the spaces DICOM pads with; GLOB finds anything but digits after a sign.
        text = f"trim({column})"
        digits = (
            f"(CASE WHEN substr({text}, 1, 1) IN ('+', '-') THEN substr({text}, 2) ELSE {text} END)"
        )
        return (
            f"CASE WHEN {digits} <> '' AND {digits} NOT GLOB '*[^0-9]*' "
            f"AND length(ltrim({digits}, '0')) <= 10 "
            f"AND CAST({text} AS INTEGER) BETWEEN -2147483648 AND 2147483647 "
            f"THEN CAST({text} AS INTEGER) END"
        )
    text = f"btrim({column})"
    # Nested CASE: the cast to numeric only runs on digits.
    return (
        f"CASE WHEN {text} ~ '^[+-]?[0-9]+$' THEN CASE WHEN {text}::numeric "
        f"BETWEEN -2147483648 AND 2147483647 THEN {text}::numeric::integer END END"
    )


def _retype(
    dialect: str,
    table: str,
    column: str,
    new: sa.types.TypeEngine[Any],
    old: sa.types.TypeEngine[Any],
    using: str,
) -> None:
    """Change `column`'s type from `old` to `new`; `using` converts each value on PostgreSQL
    (SQLite's batch mode copies the table, casting the values)."""
    if dialect == "sqlite":
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, type_=new, existing_type=old)
    else:
        op.alter_column(table, column, type_=new, existing_type=old, postgresql_using=using)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table, column in _NUMBER_COLUMNS:
        if dialect == "sqlite":
            # The copy batch mode makes casts the text; make it the plain integer's text first.
            op.execute(
                f"UPDATE {table} SET {column} = {_plain_integer(column, dialect)} "
                f"WHERE {column} IS NOT NULL"
            )
        _retype(dialect, table, column, sa.Integer(), sa.Text(), _plain_integer(column, dialect))
    for name, select in _views(dialect).items():
        op.execute(f"CREATE VIEW {name} AS {select}")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for name in _views(dialect):
        op.execute(f"DROP VIEW {name}")
    for table, column in _NUMBER_COLUMNS:
        _retype(dialect, table, column, sa.Text(), sa.Integer(), f"{column}::text")
