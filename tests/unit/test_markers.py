"""Our marker-expression check accepts and refuses exactly what pytest does."""

from __future__ import annotations

import pytest
from _pytest.mark.expression import Expression

from include.nightly_ci.config.markers import MarkerError, check_marker_expression

EXPRESSIONS = [
    "unit and (nightly or post_merge or pre_merge)",
    "integration and (nightly or post_merge or pre_merge)",
    "vllm and e2e and gpu_1",
    "(nightly or post_merge or pre_merge) and e2e and gpu_2",
    "not slow",
    "not not a",
    "a or b and c",
    "x[1] or a/b or k8s:ft",
    "unit and (nightly or",
    "unit and and e2e",
    "unit)",
    "(unit",
    "unit nightly",
    "unit & nightly",
    "or",
    "not",
    "()",
    "unit and 'quoted'",
    "  spaced   and  out  ",
    "unit\nand e2e",
]


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_agrees_with_pytest(expr):
    try:
        Expression.compile(expr)
        pytest_ok = True
    except SyntaxError:
        pytest_ok = False
    try:
        check_marker_expression(expr)
        ours_ok = True
    except MarkerError:
        ours_ok = False
    assert ours_ok == pytest_ok


def test_empty_is_refused_for_a_suite():
    with pytest.raises(MarkerError, match="empty"):
        check_marker_expression("   ")
