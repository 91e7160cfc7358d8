"""The culprit finder's findings: one per regression of a night (cell and suite), from
the search to its verified culprit, or why there is none.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nci_findings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("nightly_run_id", sa.String(250), nullable=False),
        sa.Column("night", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cell", sa.String(64), nullable=False),
        sa.Column("suite", sa.String(64), nullable=False),
        sa.Column("tests", sa.Text, nullable=False),
        sa.Column("good_commit", sa.String(64), nullable=False),
        sa.Column("bad_commit", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("culprit", sa.String(64)),
        sa.Column("parent", sa.String(64)),
        sa.Column("author", sa.Text),
        sa.Column("subject", sa.Text),
        sa.Column("rounds", sa.Integer, nullable=False),
        sa.Column("builds", sa.Integer, nullable=False),
        sa.Column("gpu_seconds", sa.Float, nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("dag_id", "nightly_run_id", "cell", "suite", name="uq_nci_findings_regression"),
    )


def downgrade() -> None:
    op.drop_table("nci_findings")
