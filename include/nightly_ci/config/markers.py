"""pytest's `-m` marker-expression grammar, checked without importing pytest.

    expr:     and_expr ('or' and_expr)*
    and_expr: not_expr ('and' not_expr)*
    not_expr: 'not' not_expr | '(' expr ')' | ident
    ident:    (\\w|:|\\+|-|\\.|\\[|\\]|\\\\|/)+

A config's marker expression must parse here exactly as pytest would parse it
(tests/unit/test_markers.py compares the two on the same inputs). pytest's newer
keyword-argument form (`marker(key=value)`) is not accepted in the config.
"""

from __future__ import annotations

import re

from include.nightly_ci.errors import MarkerError

_TOKEN = re.compile(r"[ \t]*(?:(?P<paren>[()])|(?P<ident>(?:\w|:|\+|-|\.|\[|\]|\\|/)+)|(?P<bad>[^ \t]))", re.DOTALL)
_KEYWORDS = {"and", "or", "not"}


def _tokens(expr: str) -> list[str]:
    out, pos = [], 0
    while expr[pos:].strip(" \t"):
        m = _TOKEN.match(expr, pos)
        assert m is not None  # every character is a token, a blank or "bad"
        if m.group("bad"):
            raise MarkerError(f"unexpected character {m.group('bad')!r} at column {m.start('bad') + 1}")
        out.append(m.group("paren") or m.group("ident"))
        pos = m.end()
    return out


def check_marker_expression(expr: str) -> None:
    """Raise MarkerError saying where EXPR stops being a pytest marker expression."""
    tokens = _tokens(expr)
    if not tokens:
        raise MarkerError("empty marker expression")
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take(what: str) -> str:
        nonlocal pos
        tok = peek()
        if tok is None:
            raise MarkerError(f"expected {what}, got end of input")
        pos += 1
        return tok

    def expression() -> None:
        and_expr()
        while peek() == "or":
            take("or")
            and_expr()

    def and_expr() -> None:
        not_expr()
        while peek() == "and":
            take("and")
            not_expr()

    def not_expr() -> None:
        tok = take("a marker name, 'not' or '('")
        if tok == "not":
            not_expr()
        elif tok == "(":
            expression()
            if take("')'") != ")":
                raise MarkerError(f"expected ')' after token {pos}")
        elif tok == ")" or tok in _KEYWORDS:
            raise MarkerError(f"unexpected {tok!r} at token {pos}")

    expression()
    if pos != len(tokens):
        raise MarkerError(f"unexpected {tokens[pos]!r} at token {pos + 1}")
