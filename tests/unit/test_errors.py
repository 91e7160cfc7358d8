"""One error root: every exception the package defines is a NightlyCiError, and the DAG's
fail-fast policy is one rule on PermanentError that every permanent cause matches."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import include.nightly_ci as package
from include.nightly_ci import errors
from include.nightly_ci.dag import FAIL_FAST


def package_modules():
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
        if not info.name.endswith("__main__"):
            yield importlib.import_module(info.name)


def test_every_exception_the_package_defines_is_under_the_root():
    defined = {
        obj
        for module in package_modules()
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, BaseException) and obj.__module__.startswith(package.__name__)
    }
    assert errors.PermanentError in defined and len(defined) > 8
    assert [c.__qualname__ for c in defined if not issubclass(c, errors.NightlyCiError)] == []


def test_every_exception_a_retry_rule_names_imports():
    """A rule names its exception by path (it is serialized with the DAG): each must import."""
    from airflow.sdk.module_loading import import_string

    assert FAIL_FAST.rules
    for rule in FAIL_FAST.rules:
        for path in rule.exception_path.split(","):
            cls = import_string(path)
            assert issubclass(cls, errors.NightlyCiError), path


@pytest.mark.parametrize(
    "exc",
    [
        errors.BuildError("build failed: step 3"),
        errors.SourceError("git_ref 'nope' is not a branch, tag or commit"),
        errors.RegistryAuthError("registry 'ecr' refused the credentials of connection 'aws_default'"),
        errors.ConfigError("c.yaml", [errors.Finding("arches.arm64", "unknown key")]),
    ],
)
def test_permanent_errors_fail_at_once(exc):
    from airflow.sdk import RetryAction

    assert FAIL_FAST.evaluate(exc, try_number=1, max_tries=3).action == RetryAction.FAIL


@pytest.mark.parametrize(
    "exc",
    [
        errors.RegistryUnavailable("connection refused"),
        errors.RegistryError("GET manifest answered 418"),
        ConnectionError("reset"),
    ],
)
def test_everything_else_is_retried_as_the_task_says(exc):
    from airflow.sdk import RetryAction

    assert FAIL_FAST.evaluate(exc, try_number=1, max_tries=3).action == RetryAction.DEFAULT


def test_the_policy_survives_serialization():
    from airflow.sdk import ExceptionRetryPolicy

    again = ExceptionRetryPolicy.deserialize(FAIL_FAST.serialize())
    assert [r.exception_path for r in again.rules] == ["include.nightly_ci.errors.PermanentError"]
    assert again.evaluate(errors.BuildError("x"), try_number=1, max_tries=2).action.value == "fail"
