"""Just enough PromQL reading for tests: which metric names an expression selects."""

from __future__ import annotations

import re

_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_WORD = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without"}


def metric_names(expr: str) -> set[str]:
    """Metric names in ``expr``: words that are neither functions, keywords nor labels."""
    text = _STRINGS.sub('""', expr)
    for pattern in (_MATCHERS, _RANGES, _GROUPING):
        text = pattern.sub(" ", text)
    names = set()
    for word in _WORD.finditer(text):
        follows = text[word.end():].lstrip()
        if word.group() not in _KEYWORDS and not follows.startswith("("):
            names.add(word.group())
    return names


def as_promql(expr: str, rate_window: str = "1m") -> str:
    """Grafana's interval variables replaced, so Prometheus itself can parse the query."""
    return expr.replace("$__rate_interval", rate_window).replace("$__interval", "15s")
