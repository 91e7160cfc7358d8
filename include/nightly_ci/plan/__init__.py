"""The plan: config -> cells -> tasks, every name made once. Pure Python, no Airflow."""

from include.nightly_ci.plan.expand import build_plan, load_plan, pytest_command
from include.nightly_ci.plan.model import (
    JUNIT_FILE,
    TESTS_GROUP,
    Backoff,
    Build,
    Cell,
    Plan,
    Push,
    Registry,
    RunnerSpec,
    Source,
    TagPatterns,
    TaskSpec,
    TestJob,
    cell_group_id,
    is_selected,
    publishes,
)

__all__ = [
    "JUNIT_FILE",
    "TESTS_GROUP",
    "Backoff",
    "Build",
    "Cell",
    "Plan",
    "Push",
    "Registry",
    "RunnerSpec",
    "Source",
    "TagPatterns",
    "TaskSpec",
    "TestJob",
    "build_plan",
    "cell_group_id",
    "is_selected",
    "load_plan",
    "publishes",
    "pytest_command",
]
