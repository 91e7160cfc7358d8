"""The history's tables (SQLAlchemy Core). The schema itself is made by the Alembic
migrations beside this module; a test checks that they make exactly these tables.

Test names are interned (`nci_tests`): a night of 8 cells x 5,000 cases writes 40,000
rows of a few integers, and one test's history is an index range, not a text scan.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# Its own version table: the store may share a database (or a server) with Airflow's own.
VERSION_TABLE = "nci_alembic_version"

metadata = MetaData()

nights = Table(
    "nci_nights",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("dag_id", String(250), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("night", DateTime(timezone=True), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("commit", String(64)),
    Column("run_url", Text, nullable=False, default=""),
    Column("success", Boolean),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("dag_id", "run_id", name="uq_nci_nights_run"),
    Index("ix_nci_nights_dag_night", "dag_id", "kind", "night"),
)

suites = Table(
    "nci_suites",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("night_id", Integer, ForeignKey("nci_nights.id", ondelete="CASCADE"), nullable=False),
    Column("cell", String(64), nullable=False),
    Column("suite", String(64), nullable=False),
    Column("task_id", String(250), nullable=False),
    Column("status", String(32), nullable=False),
    Column("outcome", String(32)),
    Column("failure_class", String(16)),
    Column("image", Text),
    Column("host", String(250)),
    Column("try_number", Integer),
    Column("tests", Integer),
    Column("duration_sec", Float),
    UniqueConstraint("night_id", "cell", "suite", name="uq_nci_suites_night_cell_suite"),
)

tests = Table(
    "nci_tests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    UniqueConstraint("name", name="uq_nci_tests_name"),
)

cases = Table(
    "nci_cases",
    metadata,
    Column("suite_id", Integer, ForeignKey("nci_suites.id", ondelete="CASCADE"), primary_key=True),
    Column("test_id", Integer, ForeignKey("nci_tests.id"), primary_key=True),
    Column("outcome", String(8), nullable=False),
    Column("duration_sec", Float),
    Column("verdict", String(16)),
    Column("reruns", String(32)),  # the reruns' outcomes, comma-separated
    Column("quarantined", Boolean, nullable=False, default=False),
    Index("ix_nci_cases_test", "test_id", "suite_id"),
    # A suite's failing cases without reading its passing ones (the triage page's squares
    # and lists): covers what they ask (migration 0002).
    Index("ix_nci_cases_suite_outcome", "suite_id", "outcome", "verdict", "quarantined"),
)

quarantine = Table(
    "nci_quarantine",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("dag_id", String(250), nullable=False),
    Column("pattern", Text, nullable=False),
    Column("origin", String(8), nullable=False),
    Column("owner", String(250), nullable=False),
    Column("reason", Text, nullable=False),
    Column("issue", Text, nullable=False, default=""),
    Column("expires", Date),
    Column("added", DateTime(timezone=True), nullable=False),
    Column("released", DateTime(timezone=True)),
    Column("released_why", Text),
    Index("ix_nci_quarantine_dag", "dag_id", "released"),
)

findings = Table(
    "nci_findings",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("dag_id", String(250), nullable=False),
    Column("nightly_run_id", String(250), nullable=False),
    Column("night", DateTime(timezone=True), nullable=False),
    Column("cell", String(64), nullable=False),
    Column("suite", String(64), nullable=False),
    Column("tests", Text, nullable=False),  # JSON: the test ids
    Column("good_commit", String(64), nullable=False),
    Column("bad_commit", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("culprit", String(64)),
    Column("parent", String(64)),
    Column("author", Text),
    Column("subject", Text),
    Column("rounds", Integer, nullable=False),
    Column("builds", Integer, nullable=False),
    Column("gpu_seconds", Float, nullable=False),
    Column("evidence", Text, nullable=False),  # JSON: the runs that decided, with links
    Column("updated", DateTime(timezone=True), nullable=False),
    UniqueConstraint("dag_id", "nightly_run_id", "cell", "suite", name="uq_nci_findings_regression"),
)
