"""Which SLA class a request runs in.

The body's ``service_tier`` (OpenAI's field) wins over the ``X-SLA-Class``
header; neither means the configured default. OpenAI's own tier words
``auto`` and ``default`` mean the default class, so stock clients work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from gateway.errors import InvalidRequest


class _Named(Protocol):
    @property
    def name(self) -> str: ...


_DEFAULT_WORDS = frozenset({"auto", "default"})

C = TypeVar("C", bound=_Named)


def resolve_class(
    classes: Sequence[C], default: str, service_tier: str | None, header: str | None
) -> C:
    """The class object the request asked for, or the default."""
    by_name = {c.name: c for c in classes}
    asked = service_tier if service_tier is not None else header
    if asked is None or asked.strip().lower() in _DEFAULT_WORDS:
        return by_name[default]
    chosen = by_name.get(asked.strip().lower())
    if chosen is None:
        param = "service_tier" if service_tier is not None else "X-SLA-Class"
        known = ", ".join(sorted(by_name))
        shown = asked[:64].encode("unicode_escape").decode("ascii")
        raise InvalidRequest(f"Unknown SLA class {shown!r}; known classes: {known}.",
                             param=param)
    return chosen
