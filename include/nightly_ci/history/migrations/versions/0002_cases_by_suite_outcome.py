"""A suite's failing cases by index: the triage page's matrix and lists read a night's
failures without reading its passing cases.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_nci_cases_suite_outcome", "nci_cases", ["suite_id", "outcome", "verdict", "quarantined"])


def downgrade() -> None:
    op.drop_index("ix_nci_cases_suite_outcome", table_name="nci_cases")
