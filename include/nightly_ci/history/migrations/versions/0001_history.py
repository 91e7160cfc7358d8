"""The history store: nights, suites, interned test names, cases and the quarantine.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nci_nights",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("night", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("commit", sa.String(64)),
        sa.Column("run_url", sa.Text, nullable=False),
        sa.Column("success", sa.Boolean),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("dag_id", "run_id", name="uq_nci_nights_run"),
    )
    op.create_index("ix_nci_nights_dag_night", "nci_nights", ["dag_id", "kind", "night"])
    op.create_table(
        "nci_suites",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("night_id", sa.Integer, sa.ForeignKey("nci_nights.id", ondelete="CASCADE"), nullable=False),
        sa.Column("cell", sa.String(64), nullable=False),
        sa.Column("suite", sa.String(64), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(32)),
        sa.Column("failure_class", sa.String(16)),
        sa.Column("image", sa.Text),
        sa.Column("host", sa.String(250)),
        sa.Column("try_number", sa.Integer),
        sa.Column("tests", sa.Integer),
        sa.Column("duration_sec", sa.Float),
        sa.UniqueConstraint("night_id", "cell", "suite", name="uq_nci_suites_night_cell_suite"),
    )
    op.create_table(
        "nci_tests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.UniqueConstraint("name", name="uq_nci_tests_name"),
    )
    op.create_table(
        "nci_cases",
        sa.Column("suite_id", sa.Integer, sa.ForeignKey("nci_suites.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("test_id", sa.Integer, sa.ForeignKey("nci_tests.id"), primary_key=True),
        sa.Column("outcome", sa.String(8), nullable=False),
        sa.Column("duration_sec", sa.Float),
        sa.Column("verdict", sa.String(16)),
        sa.Column("reruns", sa.String(32)),
        sa.Column("quarantined", sa.Boolean, nullable=False),
    )
    op.create_index("ix_nci_cases_test", "nci_cases", ["test_id", "suite_id"])
    op.create_table(
        "nci_quarantine",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("pattern", sa.Text, nullable=False),
        sa.Column("origin", sa.String(8), nullable=False),
        sa.Column("owner", sa.String(250), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("issue", sa.Text, nullable=False),
        sa.Column("expires", sa.Date),
        sa.Column("added", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released", sa.DateTime(timezone=True)),
        sa.Column("released_why", sa.Text),
    )
    op.create_index("ix_nci_quarantine_dag", "nci_quarantine", ["dag_id", "released"])


def downgrade() -> None:
    for table in ("nci_quarantine", "nci_cases", "nci_tests", "nci_suites", "nci_nights"):
        op.drop_table(table)
