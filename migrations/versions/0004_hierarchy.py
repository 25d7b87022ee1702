"""hierarchy: a synthetic patient per study for files without a Patient ID; conflict bits

Revision ID: 0004_hierarchy
Revises: 0003_paths
Create Date: 2026-12-02 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_hierarchy"
down_revision = "0003_paths"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("patients") as batch:
        batch.add_column(
            sa.Column("synthetic_study_uid", sa.Text(), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("conflicts", sa.Integer(), nullable=False, server_default="0"))
        batch.drop_constraint("uq_patients_patient_id_issuer", type_="unique")
        batch.create_unique_constraint(
            "uq_patients_patient_id_issuer_synthetic_study_uid",
            ["patient_id", "issuer", "synthetic_study_uid"],
        )
    for table in ("studies", "series"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("conflicts", sa.Integer(), nullable=False, server_default="0")
            )
    # The one patient of all files without a Patient ID becomes one patient per study. Its
    # name, birth date and sex mixed unrelated people: the new rows start without them (a
    # re-index of the files fills them in).
    op.execute(
        "INSERT INTO patients (patient_id, issuer, synthetic_study_uid, conflicts) "
        "SELECT '', p.issuer, s.study_uid, 0 FROM studies s "
        "JOIN patients p ON p.id = s.patient_ref WHERE p.patient_id = ''"
    )
    op.execute(
        "UPDATE studies SET patient_ref = (SELECT n.id FROM patients n "
        "WHERE n.patient_id = '' AND n.synthetic_study_uid = studies.study_uid) "
        "WHERE patient_ref IN (SELECT id FROM patients "
        "WHERE patient_id = '' AND synthetic_study_uid = '')"
    )
    op.execute("DELETE FROM patients WHERE patient_id = '' AND synthetic_study_uid = ''")


def downgrade() -> None:
    # Synthetic patients merge back into one per issuer.
    op.execute(
        "INSERT INTO patients (patient_id, issuer, synthetic_study_uid, conflicts) "
        "SELECT DISTINCT '', issuer, '', 0 FROM patients WHERE synthetic_study_uid <> ''"
    )
    op.execute(
        "UPDATE studies SET patient_ref = (SELECT n.id FROM patients n JOIN patients o "
        "ON o.issuer = n.issuer WHERE o.id = studies.patient_ref AND n.patient_id = '' "
        "AND n.synthetic_study_uid = '') "
        "WHERE patient_ref IN (SELECT id FROM patients WHERE synthetic_study_uid <> '')"
    )
    op.execute("DELETE FROM patients WHERE synthetic_study_uid <> ''")
    for table in ("series", "studies"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("conflicts")
    with op.batch_alter_table("patients") as batch:
        batch.drop_constraint("uq_patients_patient_id_issuer_synthetic_study_uid", type_="unique")
        batch.create_unique_constraint("uq_patients_patient_id_issuer", ["patient_id", "issuer"])
        batch.drop_column("conflicts")
        batch.drop_column("synthetic_study_uid")
